// The three second factors over HTTP from the Node host, on each store:
// TOTP (and backup codes), emailed codes (read from the outbox), and the
// password fallback. Each factor is spent once.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PASSWORD, STORES, passwordCode, regenerate, startHost, tokenOf, totp, user } from './helpers.mjs';

const json = (r) => JSON.parse(r.body);

test('the tests TOTP generator matches RFC 6238 (SHA-1, 59 s)', () => {
  // Secret "12345678901234567890" in base32; the RFC's 8-digit 94287082.
  assert.equal(totp('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 59_000, { digits: 8 }), '94287082');
});

for (const kind of STORES) {
  describe(`two-factor flows (${kind})`, () => {
    test('TOTP: challenged, accepted once, a replay refused; a backup code once', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'tina', { password: PASSWORD });
        const { secret, backupCodes } = host.admin.enableTotp(u.id);
        host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });

        const challenge = await regenerate(host, u, 'ci');
        assert.equal(challenge.status, 400);
        assert.equal(json(challenge).errorType, 'totp-required');
        assert.equal(json(challenge).details.method, 'totp');

        const code = totp(secret, host.clock.nowMs());
        const ok = await regenerate(host, u, 'ci', { code, twoFactorMethod: 'totp' });
        assert.equal(ok.status, 200, ok.body);
        assert.match(tokenOf(ok), /^[A-Za-z0-9_-]{43}$/);

        const replay = await regenerate(host, u, 'ci', { code, twoFactorMethod: 'totp' });
        assert.deepEqual([replay.status, json(replay).errorType], [400, 'totp-invalid']);

        const wrong = await regenerate(host, u, 'ci', { code: '000000', twoFactorMethod: 'totp' });
        assert.equal(json(wrong).errorType, 'totp-invalid');

        const backup = await regenerate(host, u, 'ci', { code: backupCodes[0], twoFactorMethod: 'totp' });
        assert.equal(backup.status, 200, backup.body);
        const again = await regenerate(host, u, 'ci', { code: backupCodes[0], twoFactorMethod: 'totp' });
        assert.equal(json(again).errorType, 'totp-invalid');
      } finally {
        await host.close();
      }
    });

    test('email: a code is mailed, accepted once, refused after', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'emma', { email: 'emma@example.com' });
        host.admin.enableEmailTwoFactor(u.id);
        host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });

        const challenge = await regenerate(host, u, 'ci', { twoFactorMethod: 'email' });
        assert.equal(challenge.status, 400);
        const details = json(challenge).details;
        assert.equal(details.method, 'email');
        assert.equal(details.codeGenerated, true);
        assert.equal(details.emailOrUsername, 'emma');

        const messages = host.mail.messages();
        assert.equal(messages.length, 1);
        assert.match(messages[0], /^To: emma@example\.com\r$/m);
        // Rocket.Chat's mail shows the code as "123-456"; clients send it either way.
        const [, a, b] = messages[0].match(/^(\d{3})-(\d{3})\r$/m);
        const code = a + b;

        const ok = await regenerate(host, u, 'ci', { code, twoFactorMethod: 'email' });
        assert.equal(ok.status, 200, ok.body);
        const again = await regenerate(host, u, 'ci', { code, twoFactorMethod: 'email' });
        assert.equal(again.status, 400);
        assert.equal(json(again).errorType, 'totp-invalid');
      } finally {
        await host.close();
      }
    });

    test('password fallback: a wrong password refused, the right one accepted', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'paul', { password: PASSWORD });
        host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
        const wrong = await regenerate(host, u, 'ci', { code: passwordCode('wrong'), twoFactorMethod: 'password' });
        assert.deepEqual([wrong.status, json(wrong).errorType], [400, 'totp-invalid']);
        const ok = await regenerate(host, u, 'ci', { code: passwordCode(), twoFactorMethod: 'password' });
        assert.equal(ok.status, 200, ok.body);
        // The password itself is no code: clients send its SHA-256 digest.
        const plain = await regenerate(host, u, 'ci', { code: PASSWORD, twoFactorMethod: 'password' });
        assert.equal(json(plain).errorType, 'totp-invalid');
      } finally {
        await host.close();
      }
    });

    test('login with password then TOTP, then the session regenerates', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'lena', { password: PASSWORD });
        const { secret } = host.admin.enableTotp(u.id);
        const body = JSON.stringify({ user: 'lena', password: { digest: passwordCode(), algorithm: 'sha-256' } });
        const { call } = await import('./helpers.mjs');
        const challenged = await call(host, 'POST', '/api/v1/login', { body });
        assert.equal(challenged.status, 401);
        assert.equal(json(challenged).error, 'totp-required');
        const logged = await call(host, 'POST', '/api/v1/login', {
          body: JSON.stringify({ user: 'lena', password: PASSWORD, code: totp(secret, host.clock.nowMs()) }),
        });
        assert.equal(logged.status, 200, logged.body);
        const data = json(logged).data;
        assert.equal(data.userId, u.id);
        const session = { id: u.id, login: data.authToken };
        host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
        const next = totp(secret, host.clock.nowMs() + 30_000);
        const r = await regenerate(host, session, 'ci', { code: next, twoFactorMethod: 'totp' });
        assert.equal(r.status, 200, r.body);
      } finally {
        await host.close();
      }
    });
  });
}
