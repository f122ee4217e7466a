// The token page: Rocket.Chat's REST routes called as its own client calls
// them (X-User-Id/X-Auth-Token, the 2FA challenge answered with
// x-2fa-method/x-2fa-code). The session lives in this page's memory only:
// never a cookie (no CSRF surface) and never storage. Text goes in through
// textContent only.
'use strict';

const $ = (id) => document.getElementById(id);
let session = null; // {userId, authToken}

const METHOD_NAME = { totp: 'Authenticator app', email: 'Emailed code', password: 'Password' };
const METHOD_TEXT = {
  totp: 'Enter the code from your authenticator app, or one of your backup codes.',
  email: 'Enter the code we emailed you.',
  password: 'Enter your password to confirm.',
};

function say(text) { $('status').textContent = text; }
function fail(text) { $('error').textContent = text; }

async function api(method, path, body, twoFactor) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (session) {
    headers['X-User-Id'] = session.userId;
    headers['X-Auth-Token'] = session.authToken;
  }
  if (twoFactor) {
    headers['x-2fa-method'] = twoFactor.method;
    if (twoFactor.code) headers['x-2fa-code'] = twoFactor.code;
  }
  let res;
  try {
    res = await fetch('/api/v1/' + path, {
      method, headers, credentials: 'omit', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { status: 0, json: { error: 'The server cannot be reached.' } };
  }
  let json = {};
  try { json = await res.json(); } catch { /* not JSON: described by status */ }
  return { status: res.status, json };
}

// A second-factor challenge in a reply (the token routes say errorType, login says error).
function challengeOf(reply) {
  const kind = reply.json.errorType || reply.json.error;
  if (kind !== 'totp-required' && kind !== 'totp-invalid') return null;
  return { invalid: kind === 'totp-invalid', details: reply.json.details || {} };
}

function errorText(reply) {
  const j = reply.json;
  return j.error || j.message || `The server answered ${reply.status}.`;
}

// Rocket.Chat's password proof: the hex SHA-256 of the password.
async function sha256Hex(text) {
  if (!window.crypto || !crypto.subtle) throw new Error('Confirming with a password needs HTTPS.');
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// Sends `send(null)`; while the server asks for a second factor, asks the
// user and sends again. The final reply, or null if the user cancelled.
async function withSecondFactor(send) {
  const reply = await send(null);
  const challenge = challengeOf(reply);
  return challenge ? askSecondFactor(challenge, send) : reply;
}

function askSecondFactor(challenge, send) {
  const dialog = $('twofa');
  const form = $('twofa-form');
  const select = $('twofa-method');
  const code = $('twofa-code');
  const problem = $('twofa-error');
  const offered = challenge.details.availableMethods || [];
  const methods = offered.length ? offered : [challenge.details.method];
  select.replaceChildren(...methods.map((m) => new Option(METHOD_NAME[m] || m, m)));
  select.value = challenge.details.method;
  const describe = (emailed) => {
    const m = select.value;
    $('twofa-text').textContent = m === 'email' && emailed
      ? 'We emailed you a code. Enter it here.' : METHOD_TEXT[m] || '';
    $('twofa-code-label').textContent = m === 'password' ? 'Password' : 'Code';
    code.type = m === 'password' ? 'password' : 'text';
    code.autocomplete = m === 'password' ? 'current-password' : 'one-time-code';
  };
  describe(challenge.details.codeGenerated);
  problem.textContent = '';
  code.value = '';
  return new Promise((resolve) => {
    const finish = (reply) => {
      form.onsubmit = null; select.onchange = null; dialog.oncancel = null;
      code.value = '';
      dialog.close();
      resolve(reply);
    };
    form.onsubmit = async (event) => {
      event.preventDefault();
      problem.textContent = '';
      const method = select.value;
      let value = code.value.trim();
      try {
        if (method === 'password') value = await sha256Hex(code.value);
      } catch (e) {
        problem.textContent = e.message;
        return;
      }
      const reply = await send({ method, code: value });
      const again = challengeOf(reply);
      if (!again) { finish(reply); return; }
      problem.textContent = again.invalid
        ? 'That code is not valid. Nothing was changed: try again.'
        : errorText(reply);
      code.value = '';
      code.focus();
    };
    // Choosing the emailed code asks the server to send one.
    select.onchange = async () => {
      describe(false);
      problem.textContent = '';
      if (select.value !== 'email') return;
      const reply = await send({ method: 'email' });
      const again = challengeOf(reply);
      describe(again && again.details.codeGenerated);
      code.focus();
    };
    $('twofa-cancel').onclick = () => finish(null);
    dialog.oncancel = (event) => { event.preventDefault(); finish(null); };
    dialog.showModal();
    code.focus();
  });
}

function show(loggedIn) {
  $('login').hidden = loggedIn;
  $('account').hidden = !loggedIn;
}

// A reply that says the session is gone sends the user back to log in.
function sessionLost(reply) {
  if (reply.status !== 401) return false;
  session = null;
  show(false);
  fail('Your session has ended. Please log in again.');
  $('login-user').focus();
  return true;
}

function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function cell(row, label, text) {
  const td = row.insertCell();
  td.dataset.label = label;
  td.textContent = text;
  return td;
}

function button(text, label, className, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.setAttribute('aria-label', label);
  if (className) b.className = className;
  b.onclick = onClick;
  return b;
}

async function loadAccount() {
  const me = await api('GET', 'me');
  if (sessionLost(me)) return;
  $('who').textContent = me.json.username || '';
  const services = me.json.services || {};
  const on = [];
  if (services.totp && services.totp.enabled) on.push('authenticator app');
  if (services.email2fa && services.email2fa.enabled) on.push('emailed codes');
  $('twofactor').textContent = on.length ? on.join(' and ') : 'off (your password confirms changes)';
  await loadTokens();
}

async function loadTokens() {
  const reply = await api('GET', 'users.getPersonalAccessTokens');
  if (sessionLost(reply)) return;
  if (reply.status !== 200) { fail(errorText(reply)); return; }
  const tokens = reply.json.tokens || [];
  const body = $('tokens').tBodies[0];
  body.replaceChildren();
  for (const t of tokens) {
    const row = body.insertRow();
    const name = row.insertCell();
    name.dataset.label = 'Name';
    const strong = document.createElement('strong');
    strong.textContent = t.name;
    name.append(strong);
    cell(row, 'Created', when(t.createdAt));
    cell(row, 'Last used', t.lastUsedAt ? when(t.lastUsedAt) : '—');
    cell(row, 'Expires', t.expiresAt ? when(t.expiresAt) : 'never');
    cell(row, 'Ends in', '…' + (t.lastTokenPart || '')).className = 'ends';
    cell(row, 'Two-factor', t.bypassTwoFactor ? 'ignored' : 'required');
    const actions = row.insertCell();
    actions.className = 'actions';
    actions.append(
      button('Regenerate', `Regenerate token ${t.name}`, '', () => regenerate(t.name)),
      button('Remove', `Remove token ${t.name}`, 'danger', () => remove(t.name)),
    );
  }
  $('tokens').hidden = tokens.length === 0;
  $('no-tokens').hidden = tokens.length !== 0;
}

function showToken(name, token) {
  const dialog = $('newtoken');
  $('newtoken-name').textContent = `“${name}”`;
  $('newtoken-value').value = token;
  $('copied').textContent = '';
  dialog.showModal();
  $('newtoken-value').select();
}

function forgetToken() {
  $('newtoken-value').value = '';
  $('copied').textContent = '';
  if ($('newtoken').open) $('newtoken').close();
}

async function tokenWrite(path, body, done) {
  fail(''); say('');
  const reply = await withSecondFactor((tf) => api('POST', path, body, tf));
  if (!reply) { say('Cancelled: nothing was changed.'); return; }
  if (sessionLost(reply)) return;
  if (reply.status !== 200 || reply.json.success !== true) { fail(errorText(reply)); return; }
  await loadTokens();
  done(reply.json);
}

function regenerate(name) {
  return tokenWrite('users.regeneratePersonalAccessToken', { tokenName: name }, (json) => {
    say(`Token “${name}” regenerated: the old value no longer works.`);
    showToken(name, json.token);
  });
}

function remove(name) {
  return tokenWrite('users.removePersonalAccessToken', { tokenName: name }, () => {
    say(`Token “${name}” removed.`);
    $('add-name').focus();
  });
}

async function login(event) {
  event.preventDefault();
  fail(''); say('');
  const user = $('login-user').value.trim();
  const plain = $('login-password').value;
  let password = plain;
  try {
    password = { digest: await sha256Hex(plain), algorithm: 'sha-256' };
  } catch { /* no SubtleCrypto (plain HTTP): the server hashes it */ }
  const reply = await withSecondFactor((tf) => api('POST', 'login',
    tf ? { user, password, code: tf.code || '' } : { user, password },
    tf ? { method: tf.method } : null));
  if (!reply) { say('Login cancelled.'); return; }
  if (reply.status !== 200 || !reply.json.data) {
    fail(reply.json.message || errorText(reply));
    return;
  }
  $('login-password').value = '';
  session = { userId: reply.json.data.userId, authToken: reply.json.data.authToken };
  // The account appears once it is loaded (nothing half-filled to read).
  await loadAccount();
  if (!session) return;
  show(true);
  $('add-name').focus();
}

async function logout() {
  await api('POST', 'logout', {});
  session = null;
  $('tokens').tBodies[0].replaceChildren();
  show(false);
  say('You are logged out.');
  $('login-user').focus();
}

async function add(event) {
  event.preventDefault();
  const name = $('add-name').value.trim();
  const bypass = $('add-bypass').checked;
  await tokenWrite('users.generatePersonalAccessToken',
    { tokenName: name, bypassTwoFactor: bypass }, (json) => {
      $('add-name').value = '';
      $('add-bypass').checked = false;
      say(`Token “${name}” added.`);
      showToken(name, json.token);
    });
}

async function copy() {
  const input = $('newtoken-value');
  try {
    await navigator.clipboard.writeText(input.value);
    $('copied').textContent = 'Copied to the clipboard.';
  } catch {
    input.select();
    $('copied').textContent = 'Press Ctrl+C (or ⌘C) to copy the selected token.';
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('add-form').addEventListener('submit', add);
  $('logout').addEventListener('click', logout);
  $('copy').addEventListener('click', copy);
  $('newtoken-done').addEventListener('click', forgetToken);
  $('newtoken').addEventListener('close', forgetToken);
  show(false);
  $('login-user').focus();
});
