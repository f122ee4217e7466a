// Issue 12's features through the Node host (its own stores): retries with
// Idempotency-Key, and token expiry. The rules live in the component; these
// check that the host's storage keeps what they need.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PASSWORD, STORES, call, listTokens, passwordCode, regenerate, startHost, tokenOf, user } from './helpers.mjs';

for (const kind of STORES) {
  describe(`beyond Rocket.Chat on ${kind}`, () => {
    test('a retried regeneration returns the same token; another body is refused', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'rotor');
        const pat = host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci', bypassTwoFactor: true });
        const headers = { 'idempotency-key': 'rotate-1-0f8fad5b-d9cb-469f-a165' };
        const first = await regenerate(host, u, 'ci', { token: pat, headers });
        assert.equal(first.status, 200, first.body);
        const retry = await regenerate(host, u, 'ci', { token: pat, headers });
        assert.deepEqual([retry.status, retry.body], [200, first.body]);
        const other = await regenerate(host, u, 'other', { token: pat, headers });
        assert.equal(JSON.parse(other.body).errorType, 'error-idempotency-key-reused');
        // The old value is gone, the new one works, without the key the old is a 401.
        assert.equal((await regenerate(host, u, 'ci', { token: pat })).status, 401);
        const next = await regenerate(host, u, 'ci', { token: tokenOf(first), headers: { 'idempotency-key': 'rotate-2-7c9e6679-7425-40de-944b' } });
        assert.equal(next.status, 200, next.body);
      } finally {
        await host.close();
      }
    });

    test('expiresAt is kept, listed, and enforced', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'exp', { password: PASSWORD });
        const factor = { code: passwordCode(), twoFactorMethod: 'password' };
        const generate = (body) =>
          call(host, 'POST', '/api/v1/users.generatePersonalAccessToken', { user: u, body, ...factor });
        const past = await generate('{"tokenName":"old","expiresAt":"2001-01-01"}');
        assert.equal(JSON.parse(past.body).errorType, 'error-invalid-params');
        const soon = new Date(Date.now() + 3 * 86_400_000).toISOString();
        const made = await generate(JSON.stringify({ tokenName: 'deploy', expiresAt: soon }));
        assert.equal(made.status, 200, made.body);
        const listed = JSON.parse((await listTokens(host, u)).body).tokens;
        assert.equal(listed[0].expiresAt, soon);
        const me = (token) => call(host, 'GET', '/api/v1/me', { user: u, token });
        assert.equal((await me(tokenOf(made))).status, 200);
        // Moved into the past in the store: from then on a 401.
        host.store.transaction(() => {
          const doc = host.store.user(u.id);
          doc.tokens.find((t) => t.name === 'deploy').expiresAt = Date.now() - 1;
          host.store.save(doc);
        });
        assert.equal((await me(tokenOf(made))).status, 401);
      } finally {
        await host.close();
      }
    });
  });
}
