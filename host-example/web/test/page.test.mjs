// The token page in a real browser (Debian's headless Chromium, driven by
// puppeteer-core) against a real `host-example serve`: log in with TOTP, add
// a token, regenerate it answering the prompt (a wrong code first: the error
// is shown and nothing changes), copy the new token and check over REST that
// it works and the old one gets 401, remove it; then the emailed-code flow,
// reading codes from the outbox. A failed step leaves a screenshot in
// $RCPAT_WEB_FAILURES (default target/web-test-failures); with
// RCPAT_README_SCREENSHOTS=DIR the two README screenshots are written too.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const ROOT = path.resolve(import.meta.dirname, '../../..');
const HOST = process.env.RCPAT_HOST_EXAMPLE || path.join(ROOT, 'target/debug/host-example');
const CHROMIUM = process.env.RCPAT_CHROMIUM || '/usr/bin/chromium';
const FAILURES = process.env.RCPAT_WEB_FAILURES || path.join(ROOT, 'target/web-test-failures');
const SHOTS = process.env.RCPAT_README_SCREENSHOTS;
const PASSWORD = 'a long test password';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcpat-web-'));
const db = path.join(dir, 'rcpat.db');
const outbox = path.join(dir, 'outbox');
let server;
let base;
let browser;

function cli(...args) {
  return execFileSync(HOST, args, { input: `${PASSWORD}\n`, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// RFC 6238 with SHA-1, 6 digits, 30 s: the code for `at` (ms).
function totp(secret, at = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 30000)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[19] & 0xf;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1e6).padStart(6, '0');
}

// The code in the newest message of the outbox once there are more than `seen`.
async function mailedCode(seen) {
  for (let i = 0; i < 100; i++) {
    const files = fs.existsSync(outbox) ? fs.readdirSync(outbox).filter((f) => f.endsWith('.eml')) : [];
    if (files.length > seen) {
      const newest = files.map((f) => path.join(outbox, f))
        .sort((a, b) => fs.statSync(a).mtimeMs - fs.statSync(b).mtimeMs).pop();
      const m = fs.readFileSync(newest, 'utf8').match(/\b(\d{3})-(\d{3})\b/);
      assert.ok(m, 'the mail carries a code');
      return m[1] + m[2];
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no code was mailed');
}
const mails = () => (fs.existsSync(outbox) ? fs.readdirSync(outbox).filter((f) => f.endsWith('.eml')).length : 0);

async function rest(method, route, headers = {}, body) {
  const res = await fetch(`${base}/api/v1/${route}`, {
    method, headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

async function step(page, name, fn) {
  try {
    return await fn();
  } catch (e) {
    fs.mkdirSync(FAILURES, { recursive: true });
    const file = path.join(FAILURES, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    e.message += ` (screenshot: ${file})`;
    throw e;
  }
}

const visible = (page, selector) => page.waitForSelector(selector, { visible: true, timeout: 10000 });
const text = (page, selector) => page.$eval(selector, (e) => e.textContent);

async function answer(page, code) {
  await visible(page, '#twofa[open] #twofa-code');
  await page.$eval('#twofa-code', (e) => { e.value = ''; });
  await page.type('#twofa-code', code);
  await page.keyboard.press('Enter');
}

async function newTokenShown(page) {
  await visible(page, '#newtoken[open]');
  return page.$eval('#newtoken-value', (e) => e.value);
}

before(async () => {
  cli('users', 'add', '--db', db, '--username', 'alice', '--email', 'alice@example.org', '--password-stdin');
  const enrolled = cli('users', 'enable-totp', '--db', db, 'alice');
  process.env.ALICE_SECRET = enrolled.match(/secret=([A-Z2-7]+)/)[1];
  process.env.ALICE_BACKUP = enrolled.split('backup codes')[1].match(/[A-Za-z0-9]{8}/g).join(' ');
  cli('users', 'add', '--db', db, '--username', 'bob', '--email', 'bob@example.org', '--password-stdin');
  cli('users', 'enable-email2fa', '--db', db, 'bob');
  cli('users', 'add', '--db', db, '--username', 'carol', '--email', 'carol@example.org', '--password-stdin');
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(HOST, ['serve', '--db', db, '--outbox', outbox, '--listen', `127.0.0.1:${port}`,
    '--cache-dir', path.join(dir, 'cache')], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; ; i++) {
    try { await fetch(base + '/'); break; } catch (e) { if (i > 600) throw e; }
    await new Promise((r) => setTimeout(r, 100));
  }
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root (CI) cannot use Chromium's sandbox; the page is our own.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  await browser.defaultBrowserContext().overridePermissions(base, ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write']);
});

after(async () => {
  await browser?.close();
  server?.kill();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the page is served with a strict policy, and not framed', async () => {
  const res = await fetch(base + '/');
  assert.equal(res.status, 200);
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  assert.doesNotMatch(await res.text(), /<script>|\son[a-z]+=/i, 'no inline script or handler');
});

test('TOTP: log in, add, regenerate (a wrong code first), copy, remove, log out', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Console errors other than the challenges' 4xx replies the browser logs.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) errors.push(m.text());
  });
  const secret = process.env.ALICE_SECRET;
  const backup = process.env.ALICE_BACKUP.split(' ');
  await page.setViewport({ width: 900, height: 700 });
  await page.goto(base + '/');

  await step(page, '1-login', async () => {
    await visible(page, '#login-user');
    // Keyboard only: the user field has focus; type, tab, type, Enter.
    assert.equal(await page.evaluate(() => document.activeElement.id), 'login-user');
    await page.keyboard.type('alice');
    await page.keyboard.press('Tab');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await visible(page, '#twofa[open]');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'twofa-code');
    if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'login-2fa.png') });
    await answer(page, totp(secret));
    await visible(page, '#account');
    // The account is shown only once loaded.
    assert.equal(await text(page, '#who'), 'alice');
    assert.equal(await text(page, '#twofactor'), 'authenticator app');
    assert.match(await text(page, '#no-tokens'), /no personal access tokens/);
  });

  const session = await page.evaluate(() => null); // the session is in page memory, never storage
  assert.equal(session, null);
  assert.deepEqual(await page.evaluate(() => [document.cookie, sessionStorage.length, localStorage.length]), ['', 0, 0]);

  const first = await step(page, '2-add', async () => {
    await page.type('#add-name', 'ci');
    await page.keyboard.press('Enter');
    await answer(page, backup[0]);
    const token = await newTokenShown(page);
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    await page.click('#newtoken-done');
    return token;
  });
  const aliceId = (await rest('POST', 'login', {}, { user: 'alice', password: PASSWORD, code: backup[1] })).json.data.userId;
  const asPat = (token) => rest('GET', 'me', { 'X-User-Id': aliceId, 'X-Auth-Token': token });
  assert.equal((await asPat(first)).status, 200);

  const second = await step(page, '3-regenerate', async () => {
    await page.click('button[aria-label="Regenerate token ci"]');
    await answer(page, '000000');
    await page.waitForFunction(() => document.getElementById('twofa-error').textContent.includes('not valid'));
    assert.equal((await asPat(first)).status, 200, 'a wrong code changes nothing');
    // The next step's code: this login spent the current one.
    await answer(page, totp(secret, Date.now() + 30000));
    const token = await newTokenShown(page);
    assert.notEqual(token, first);
    await page.click('#copy');
    await page.waitForFunction(() => document.getElementById('copied').textContent.includes('Copied'));
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token);
    await page.click('#newtoken-done');
    assert.equal(await page.$eval('#newtoken-value', (e) => e.value), '', 'the value is cleared when dismissed');
    await page.waitForFunction(() => document.getElementById('status').textContent.includes('regenerated'));
    if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'tokens-after-regeneration.png') });
    return token;
  });
  assert.equal((await asPat(second)).status, 200, 'the copied token works');
  assert.equal((await asPat(first)).status, 401, 'the old one does not');

  await step(page, '4-remove', async () => {
    await page.click('button[aria-label="Remove token ci"]');
    await answer(page, backup[2]);
    await page.waitForFunction(() => !document.getElementById('no-tokens').hidden);
  });
  assert.equal((await asPat(second)).status, 401);

  await step(page, '5-logout', async () => {
    await page.click('#logout');
    await visible(page, '#login');
  });
  assert.deepEqual(errors, []);
  await page.close();
});

test('emailed codes: log in and add a token with codes read from the outbox', async () => {
  const page = await browser.newPage();
  await page.setViewport({ width: 390, height: 800 }); // phone width
  await page.goto(base + '/');
  await step(page, '6-email-login', async () => {
    await visible(page, '#login-user');
    await page.type('#login-user', 'bob');
    await page.type('#login-password', PASSWORD);
    const seen = mails();
    await page.keyboard.press('Enter');
    await visible(page, '#twofa[open]');
    assert.match(await text(page, '#twofa-text'), /emailed/);
    await answer(page, await mailedCode(seen));
    await visible(page, '#account');
    assert.equal(await text(page, '#twofactor'), 'emailed codes');
  });
  await step(page, '7-email-add', async () => {
    await page.type('#add-name', 'deploy');
    const seen = mails();
    await page.keyboard.press('Enter');
    await answer(page, await mailedCode(seen));
    assert.match(await newTokenShown(page), /^[A-Za-z0-9_-]{43}$/);
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => !document.getElementById('newtoken').open);
    assert.equal(await page.$eval('#newtoken-value', (e) => e.value), '');
    assert.equal(await page.$$eval('#tokens tbody tr', (rows) => rows.length), 1);
  });
  await page.close();
});

test('no second factor enrolled: the password confirms a change', async () => {
  const page = await browser.newPage();
  await page.goto(base + '/');
  await step(page, '8-password', async () => {
    await visible(page, '#login-user');
    await page.type('#login-user', 'carol');
    await page.type('#login-password', PASSWORD);
    await page.keyboard.press('Enter');
    await visible(page, '#account');
    assert.match(await text(page, '#twofactor'), /^off/);
    await page.type('#add-name', 'laptop');
    await page.keyboard.press('Enter');
    await visible(page, '#twofa[open]');
    assert.equal(await text(page, '#twofa-code-label'), 'Password');
    assert.equal(await page.$eval('#twofa-code', (e) => e.type), 'password');
    await answer(page, 'not the password');
    await page.waitForFunction(() => document.getElementById('twofa-error').textContent.includes('not valid'));
    await answer(page, PASSWORD);
    assert.match(await newTokenShown(page), /^[A-Za-z0-9_-]{43}$/);
    await page.click('#newtoken-done');
    assert.equal(await page.$$eval('#tokens tbody tr', (rows) => rows.length), 1);
  });
  await page.close();
});
