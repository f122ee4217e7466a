// Reuse detection (issue 28) through the Node host's own stores: a
// regenerated token's old value presented again after the grace period
// revokes the token's current value, mails the owner and logs a security
// line, while the presenter gets the unknown token's 401; the exceptions
// (the Idempotency-Key retry, remove then generate) and the off switch.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { STORES, call, generate, regenerate, startHost, tokenOf, user } from './helpers.mjs';

const UNKNOWN_401 = '{"status":"error","message":"You must be logged in to do this."}';
const AFTER_GRACE_MS = 10_001;

const me = (host, u, token) => call(host, 'GET', '/api/v1/me', { user: u, token });

/** A user with PAT "ci" regenerated once by itself: {u, old, current}. */
async function rotated(host, name) {
  const u = user(host, name);
  const old = host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
  const current = tokenOf(await regenerate(host, u, 'ci', { token: old }));
  return { u, old, current };
}

for (const kind of STORES) {
  describe(`reuse detection on ${kind}`, () => {
    test('an old value after the grace period revokes the family, mails and logs', async () => {
      const host = await startHost(kind);
      try {
        const { u, old, current } = await rotated(host, 'rita');
        // Within the grace period: only an unknown token.
        host.clock.advance(9_000);
        assert.deepEqual([(await me(host, u, old)).status, (await me(host, u, current)).status], [401, 200]);
        host.clock.advance(AFTER_GRACE_MS - 9_000);
        const reused = await me(host, u, old);
        assert.deepEqual([reused.status, reused.body], [401, UNKNOWN_401]);
        assert.equal((await me(host, u, current)).status, 401, 'the current value is revoked');
        assert.equal((await me(host, u, u.login)).status, 200, 'the session stays');
        const mails = host.mail.messages();
        assert.equal(mails.length, 1);
        assert.match(mails[0], /To: rita@example\.com/);
        assert.match(mails[0], /Subject: Personal access token "ci" revoked/);
        assert.match(mails[0], /from 127\.0\.0\.1/);
        for (const secret of [old, current]) assert.ok(!mails[0].includes(secret), 'a token in the mail');
        const line = host.logs.find((l) => l.event === 'token_reuse_detected');
        assert.deepEqual(
          [line?.user_id, line?.client, line?.token_name, line?.endpoint],
          [u.id, '127.0.0.1', 'ci', 'me'],
        );
        assert.ok(!JSON.stringify(host.logs).includes(old) && !JSON.stringify(host.logs).includes(current));
        assert.equal(host.component.securityEvents['superseded-token-reused'], 1);
        // Again: nothing left to revoke, no second mail.
        assert.equal((await me(host, u, old)).status, 401);
        assert.equal(host.mail.messages().length, 1);
        assert.equal(host.component.securityEvents['superseded-token-reused'], 1);
      } finally {
        await host.close();
      }
    });

    test('the Idempotency-Key retry is served; a removed and regenerated name is a new family', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'ida');
        const a = host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
        const headers = { 'idempotency-key': 'rot-7c1e2f3a-9d4b-4e8a-b1c2' };
        const first = await regenerate(host, u, 'ci', { token: a, headers });
        host.clock.advance(AFTER_GRACE_MS);
        const retry = await regenerate(host, u, 'ci', { token: a, headers });
        assert.deepEqual([retry.status, retry.body], [200, first.body]);
        assert.equal((await me(host, u, tokenOf(first))).status, 200, 'the retry revoked nothing');

        const removed = await call(host, 'POST', '/api/v1/users.removePersonalAccessToken', {
          user: u,
          body: '{"tokenName":"ci"}',
        });
        assert.equal(removed.status, 200, removed.body);
        const fresh = tokenOf(await generate(host, u, 'ci'));
        for (const value of [a, tokenOf(first)]) assert.equal((await me(host, u, value)).status, 401);
        assert.equal((await me(host, u, fresh)).status, 200, 'the new family is untouched');
        assert.equal(host.mail.messages().length, 0);
      } finally {
        await host.close();
      }
    });

    test('off, nothing is kept or revoked', async () => {
      const host = await startHost(kind);
      try {
        host.component.settings.reuseDetection = false;
        const { u, old, current } = await rotated(host, 'otto');
        assert.ok(host.store.user(u.id).tokens.every((t) => t.superseded === undefined), 'nothing stored');
        host.clock.advance(AFTER_GRACE_MS);
        const r = await me(host, u, old);
        assert.deepEqual([r.status, r.body], [401, UNKNOWN_401]);
        assert.equal((await me(host, u, current)).status, 200);
      } finally {
        await host.close();
      }
    });
  });
}
