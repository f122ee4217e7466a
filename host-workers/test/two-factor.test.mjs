// The second factors through the Worker: TOTP and backup codes, the emailed
// code (read from the recording mail API the outbox delivers to), the
// password fallback, and a login with its own second factor.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PASSWORD, call, passwordCode, regenerate, startHost, tokenOf, totp } from './helpers.mjs';

const json = (r) => JSON.parse(r.body);

describe('two-factor flows on workerd', () => {
  let host;
  before(async () => {
    host = await startHost();
  });
  after(() => host.close());

  test('TOTP: challenged, accepted once, a replay refused; a backup code once', async () => {
    const u = await host.user('tina', { password: PASSWORD });
    const { secret, backupCodes } = await host.enableTotp(u.id);
    await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const challenge = await regenerate(host, u, 'ci');
    assert.deepEqual([challenge.status, json(challenge).errorType, json(challenge).details.method], [400, 'totp-required', 'totp']);
    const code = totp(secret);
    const ok = await regenerate(host, u, 'ci', { code, twoFactorMethod: 'totp' });
    assert.equal(ok.status, 200, ok.body);
    assert.match(tokenOf(ok), /^[A-Za-z0-9_-]{43}$/);
    const replay = await regenerate(host, u, 'ci', { code, twoFactorMethod: 'totp' });
    assert.deepEqual([replay.status, json(replay).errorType], [400, 'totp-invalid']);
    const backup = await regenerate(host, u, 'ci', { code: backupCodes[0], twoFactorMethod: 'totp' });
    assert.equal(backup.status, 200, backup.body);
    const again = await regenerate(host, u, 'ci', { code: backupCodes[0], twoFactorMethod: 'totp' });
    assert.equal(json(again).errorType, 'totp-invalid');
  });

  test('email: the code is delivered by the outbox, accepted once, refused after', async () => {
    const u = await host.user('emma', { email: 'emma@example.com' });
    await host.enableEmailTwoFactor(u.id);
    await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const before = host.mail.messages.length;
    const challenge = await regenerate(host, u, 'ci', { twoFactorMethod: 'email' });
    assert.equal(challenge.status, 400);
    assert.deepEqual(
      [json(challenge).details.method, json(challenge).details.codeGenerated, json(challenge).details.emailOrUsername],
      ['email', true, 'emma'],
    );
    const mail = (await host.mail.waitFor(before + 1))[before];
    assert.deepEqual(mail.to, ['emma@example.com']);
    assert.equal(mail.authorization, 'Bearer mail-api-token');
    const [, a, b] = mail.text.match(/^(\d{3})-(\d{3})$/m);
    const ok = await regenerate(host, u, 'ci', { code: a + b, twoFactorMethod: 'email' });
    assert.equal(ok.status, 200, ok.body);
    const replay = await regenerate(host, u, 'ci', { code: a + b, twoFactorMethod: 'email' });
    assert.deepEqual([replay.status, json(replay).errorType], [400, 'totp-invalid']);
    // The row goes once the API's 2xx is in (just after the recorder saw it).
    const until = Date.now() + 5000;
    while ((await host.outbox(u.id)).count !== 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.equal((await host.outbox(u.id)).count, 0, 'a delivered message leaves the outbox');
  });

  test('password fallback: a wrong password refused, the right one accepted', async () => {
    const u = await host.user('paul', { password: PASSWORD });
    await host.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const wrong = await regenerate(host, u, 'ci', { code: passwordCode('wrong'), twoFactorMethod: 'password' });
    assert.deepEqual([wrong.status, json(wrong).errorType], [400, 'totp-invalid']);
    const ok = await regenerate(host, u, 'ci', { code: passwordCode(), twoFactorMethod: 'password' });
    assert.equal(ok.status, 200, ok.body);
  });

  test('login by username and by email, with TOTP; an unknown user answers as a wrong password', async () => {
    const u = await host.user('lena', { password: PASSWORD, email: 'Lena@Example.com' });
    const { secret } = await host.enableTotp(u.id);
    const challenged = await call(host, 'POST', '/api/v1/login', { body: JSON.stringify({ user: 'lena', password: PASSWORD }) });
    assert.deepEqual([challenged.status, json(challenged).error], [401, 'totp-required']);
    const logged = await call(host, 'POST', '/api/v1/login', {
      body: JSON.stringify({ user: 'lena@example.COM', password: { digest: passwordCode(), algorithm: 'sha-256' }, code: totp(secret) }),
    });
    assert.equal(logged.status, 200, logged.body);
    assert.equal(json(logged).data.userId, u.id);
    const session = { id: u.id, login: json(logged).data.authToken };
    assert.equal((await call(host, 'GET', '/api/v1/me', { user: session })).status, 200);
    const unknown = await call(host, 'POST', '/api/v1/login', { body: JSON.stringify({ user: 'nobody', password: PASSWORD }) });
    const wrong = await call(host, 'POST', '/api/v1/login', { body: JSON.stringify({ user: 'lena', password: 'nope' }) });
    assert.deepEqual([unknown.status, unknown.body], [wrong.status, wrong.body]);
    assert.equal(unknown.status, 401);
    const malformed = await call(host, 'POST', '/api/v1/login', { body: '{"user":5}' });
    assert.deepEqual([malformed.status, json(malformed).error], [400, 'error-invalid-params']);
  });

  test('failed logins from one address are limited across accounts (the address object)', async () => {
    // Rocket.Chat's default: 50 per address. Spread over 10 unknown names so
    // no account limit is reached first.
    const ip = { 'cf-connecting-ip': '198.51.100.7' };
    let status = 0;
    let body = '';
    for (let i = 0; i <= 50; i++) {
      const r = await call(host, 'POST', '/api/v1/login', { headers: ip, body: JSON.stringify({ user: `ghost${i % 10}`, password: 'x' }) });
      ({ status, body } = r);
    }
    assert.equal(status, 401);
    assert.match(body, /error-login-blocked-for-ip/);
    // Another address is not blocked.
    const other = await call(host, 'POST', '/api/v1/login', { headers: { 'cf-connecting-ip': '198.51.100.8' }, body: JSON.stringify({ user: 'ghost1', password: 'x' }) });
    assert.doesNotMatch(other.body, /blocked/);
  });
});
