// What the Worker keeps and how: retries, restarts and kills, racing
// regenerations, the outbox through a mail API outage, the refusal to start
// without secrets, objects made only by writes, the schema's version, and
// secrets kept out of storage in the clear and out of the log.

import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SCHEMA_VERSION } from '../src/schema.mjs';
import { PASSWORD, call, mailRecorder, passwordCode, regenerate, secrets, startHost, startWorkerd, tokenOf } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const Database = createRequire(join(here, '..', '..', 'host-node', 'package.json'))('better-sqlite3');
const json = (r) => JSON.parse(r.body);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const files = (dir) => readdirSync(dir).filter((f) => f.endsWith('.sqlite') && f !== 'metadata.sqlite');

/** The tables an object's database holds (workerd's own `_cf_` ones left out). */
function tables(file) {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => r.name).filter((n) => !n.startsWith('_cf_') && !n.startsWith('sqlite_'));
  } finally {
    db.close();
  }
}

describe('durability on workerd', () => {
  let host;
  before(async () => {
    host = await startHost({ env: { RCPAT_MAIL_RETRY_BASE_MS: '100' } });
  });
  after(() => host.close());

  test('a retried regeneration (Idempotency-Key) returns its kept reply; another body is refused', async () => {
    const u = await host.user('rotor');
    const pat = await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci', bypassTwoFactor: true });
    const headers = { 'idempotency-key': 'rotate-1-0f8fad5b-d9cb-469f-a165' };
    const first = await regenerate(host, u, 'ci', { token: pat, headers });
    assert.equal(first.status, 200, first.body);
    const retry = await regenerate(host, u, 'ci', { token: pat, headers });
    assert.deepEqual([retry.status, retry.body], [200, first.body]);
    const other = await regenerate(host, u, 'other', { token: pat, headers });
    assert.equal(json(other).errorType, 'error-idempotency-key-reused');
    assert.equal((await regenerate(host, u, 'ci', { token: pat })).status, 401);
  });

  test('64 racing self-regenerations of one token: exactly one winner', async () => {
    const u = await host.user('racer');
    const pat = await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci', bypassTwoFactor: true });
    const replies = await Promise.all(Array.from({ length: 64 }, () => regenerate(host, u, 'ci', { token: pat })));
    const winners = replies.filter((r) => r.status === 200);
    assert.equal(winners.length, 1, replies.map((r) => r.status).join(','));
    for (const r of replies.filter((r) => r.status !== 200)) assert.equal(r.status, 401, r.body);
    const me = await call(host, 'GET', '/api/v1/me', { user: u, token: tokenOf(winners[0]) });
    assert.equal(me.status, 200);
  });

  test('tokens, sessions and 2FA state survive a restart and a SIGKILL', async () => {
    const u = await host.user('keeper', { password: PASSWORD });
    await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const r = await regenerate(host, u, 'ci', { code: passwordCode(), twoFactorMethod: 'password' });
    assert.equal(r.status, 200, r.body);
    for (const signal of ['SIGTERM', 'SIGKILL']) {
      await host.workerd.stop(signal);
      await host.restart();
      assert.equal((await call(host, 'GET', '/api/v1/me', { user: u })).status, 200, signal);
      assert.equal((await call(host, 'GET', '/api/v1/me', { user: u, token: tokenOf(r) })).status, 200, signal);
      const login = await call(host, 'POST', '/api/v1/login', { body: JSON.stringify({ user: 'keeper', password: PASSWORD }) });
      assert.equal(login.status, 200, `${signal}: ${login.body}`);
    }
  });

  test('the outbox delivers after the mail API was down, across a restart, once', async () => {
    const u = await host.user('otto', { email: 'otto@example.com' });
    await host.enableEmailTwoFactor(u.id);
    await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    host.mail.down = true;
    const sent = host.mail.messages.length;
    const challenge = await regenerate(host, u, 'ci', { twoFactorMethod: 'email' });
    assert.equal(json(challenge).details.codeGenerated, true);
    const until = Date.now() + 10_000;
    while (host.mail.refused < 3 && Date.now() < until) await sleep(20); // 100, 200, 400 ms apart
    assert.ok(host.mail.refused >= 3, `the outbox retried ${host.mail.refused} times`);
    assert.equal((await host.outbox(u.id)).count, 1, 'kept while the API refuses');
    await host.workerd.stop('SIGKILL');
    await host.restart();
    host.mail.down = false;
    const [mail] = (await host.mail.waitFor(sent + 1, 15_000)).slice(sent);
    assert.deepEqual(mail.to, ['otto@example.com']);
    const [, a, b] = mail.text.match(/^(\d{3})-(\d{3})$/m);
    const ok = await regenerate(host, u, 'ci', { code: a + b, twoFactorMethod: 'email' });
    assert.equal(ok.status, 200, ok.body);
    await sleep(300);
    assert.equal(host.mail.messages.length, sent + 1, 'delivered once');
  });

  test('a made-up X-User-Id leaves no state behind', async () => {
    // workerd opens an object's database when it is first read; what matters
    // (and what Cloudflare stores and bills) is that nothing is written.
    const dir = join(host.state, 'rcpat-users');
    const before = new Set(files(dir));
    for (let i = 0; i < 5; i++) {
      const r = await call(host, 'GET', '/api/v1/me', { user: { id: `nobody${i}xxxxxxxxxxx`, login: 'RScctEHSmLGZGywfIhWyRpyofhKOiMoUIpimhvheU3f' } });
      assert.equal(r.status, 401);
    }
    await sleep(100);
    const made = files(dir).filter((f) => !before.has(f));
    assert.ok(made.length <= 5);
    for (const f of made) assert.deepEqual(tables(join(dir, f)), [], f);
  });

  test('storage: schema version in a meta table, in step with the other hosts; TOTP secrets sealed; no secret in the log', async () => {
    const rust = readFileSync(join(here, '..', '..', 'host-example', 'rcpat-store', 'src', 'lib.rs'), 'utf8');
    assert.equal(SCHEMA_VERSION, Number(rust.match(/pub const SCHEMA_VERSION: usize = (\d+);/)[1]));
    const u = await host.user('sealy', { password: PASSWORD });
    const { secret, backupCodes } = await host.enableTotp(u.id);
    const session = await call(host, 'POST', '/api/v1/login', { body: JSON.stringify({ user: 'sealy', password: PASSWORD, code: backupCodes[1] }) });
    assert.equal(session.status, 200, session.body);
    const dir = join(host.state, 'rcpat-users');
    let found = 0;
    for (const f of files(dir).filter((f) => tables(join(dir, f)).length > 0)) {
      const db = new Database(join(dir, f), { readonly: true, fileMustExist: true });
      try {
        const meta = db.prepare("SELECT value FROM rcpat_meta WHERE key = 'schema_version'").get();
        assert.equal(meta?.value, String(SCHEMA_VERSION), f);
        const row = db.prepare('SELECT doc FROM users WHERE id = ?').get(u.id);
        if (row) {
          found += 1;
          assert.ok(!row.doc.includes(secret), 'the TOTP secret is sealed');
          assert.match(JSON.parse(row.doc).totp.secret, /^v1:/);
        }
      } finally {
        db.close();
      }
    }
    assert.equal(found, 1);
    const log = host.workerd.output();
    for (const secretText of [PASSWORD, passwordCode(), json(session).data.authToken, u.login, secret, backupCodes[1], host.env.RCPAT_CODE_KEY, host.env.RCPAT_SECRET_KEY]) {
      assert.ok(!log.includes(secretText), 'a secret reached the log');
    }
  });
});

test('workerd refuses to start without its secrets or mail API', async () => {
  const mail = await mailRecorder();
  try {
    const full = { ...secrets(), RCPAT_MAIL_URL: mail.url };
    for (const [missing, message] of [
      ['RCPAT_CODE_KEY', /CODE_KEY must be 64 hex digits/],
      ['RCPAT_SECRET_KEY', /SECRET_KEY must be 64 hex digits/],
      ['RCPAT_MAIL_URL', /MAIL_URL/],
    ]) {
      const env = { ...full };
      delete env[missing];
      await assert.rejects(startWorkerd({ state: mkdtempSync(join(tmpdir(), 'rcpat-workers-')), env }), (e) => {
        assert.match(e.output, message, missing);
        assert.match(e.output, /refusing to start/);
        return true;
      });
    }
    for (const [change, message] of [
      [{ RCPAT_CODE_KEY: 'ab'.repeat(16) }, /CODE_KEY must be 64 hex digits/],
      [{ RCPAT_SETTINGS: '{"twoFactorEnabeld":false}' }, /SETTINGS names twoFactorEnabeld, which the component does not know/],
      [{ RCPAT_SETTINGS: '[1]' }, /SETTINGS must be a JSON object/],
      [{ RCPAT_ADMIN_TOKEN: 'short' }, /ADMIN_TOKEN must be 32 characters or more/],
    ]) {
      await assert.rejects(startWorkerd({ state: mkdtempSync(join(tmpdir(), 'rcpat-workers-')), env: { ...full, ...change } }), (e) => {
        assert.match(e.output, message);
        assert.match(e.output, /refusing to start/);
        return true;
      });
    }
  } finally {
    await mail.close();
  }
});

test('SETTINGS reach the component: with two-factor off a session regenerates without a code', async () => {
  const host = await startHost({ env: { RCPAT_SETTINGS: '{"twoFactorEnabled":false}' } });
  try {
    const u = await host.user('sam', { password: PASSWORD });
    await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const r = await regenerate(host, u, 'ci');
    assert.equal(r.status, 200, r.body);
  } finally {
    await host.close();
  }
});

test('reuse detection: an old value revokes the token, the outbox mails the owner, the log says so', async () => {
  const host = await startHost({ env: { RCPAT_SETTINGS: '{"supersededTokenGraceSeconds":0}' } });
  try {
    const u = await host.user('rita');
    const old = await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const current = tokenOf(await regenerate(host, u, 'ci', { token: old }));
    const me = (token) => call(host, 'GET', '/api/v1/me', { user: u, token });
    const reused = await me(old);
    assert.deepEqual([reused.status, reused.body], [401, '{"status":"error","message":"You must be logged in to do this."}']);
    assert.equal((await me(current)).status, 401, 'the current value is revoked');
    assert.equal((await me(u.login)).status, 200, 'the session stays');
    const [mail] = await host.mail.waitFor(1);
    assert.deepEqual(mail.to, ['rita@example.com']);
    assert.equal(mail.subject, 'Personal access token "ci" revoked');
    assert.ok(!mail.text.includes(old) && !mail.text.includes(current), 'a token in the mail');
    assert.match(host.workerd.output(), /"event":"token_reuse_detected"[^\n]*"token_name":"ci"/);
    assert.ok(!host.workerd.output().includes(old), 'a token in the log');
    // Again: nothing left to revoke.
    assert.equal((await me(old)).status, 401);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(host.mail.messages.length, 1);
  } finally {
    await host.close();
  }
});

test('the audit trail: each user object keeps its events in the change transaction; no cross-user route here', async () => {
  const host = await startHost();
  try {
    const u = await host.user('aude');
    const old = await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci', bypassTwoFactor: true });
    const token = tokenOf(await regenerate(host, u, 'ci', { token: old }));
    const page = await host.admin('auditEvents', { userId: u.id });
    const regenerated = page.events.filter((e) => e.kind === 'token-regenerated');
    assert.equal(regenerated.length, 1, JSON.stringify(page));
    assert.deepEqual(
      [regenerated[0].account, regenerated[0].tokenName, regenerated[0].tokenLastPart, regenerated[0].method, regenerated[0].hostId],
      [u.id, 'ci', token.slice(-6), 'bypass', 'workerd'],
    );
    assert.ok(!JSON.stringify(page).includes(token), 'a token in the trail');
    // A refused regeneration (the old value) leaves nothing.
    assert.equal((await regenerate(host, u, 'ci', { token: old })).status, 401);
    const after = await host.admin('auditEvents', { userId: u.id });
    assert.equal(after.events.filter((e) => e.kind === 'token-regenerated').length, 1);
    const route = await call(host, 'GET', '/api/v1/audit.personalAccessTokens', { user: u });
    assert.equal(route.status, 404);
  } finally {
    await host.close();
  }
});
