// Every example of the endpoint's documentation
// (shared/spec/regenerate-personal-access-token.txt), byte for byte, over
// HTTP from the Node host, on each store.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PASSWORD, STORES, call, passwordCode, regenerate, startHost, tokenOf, user } from './helpers.mjs';

for (const kind of STORES) {
  describe(`documented examples (${kind})`, () => {
    test('200: a new 43-character token; the old one no longer authenticates', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'alice');
        const old = host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'mypersonaltoken' });
        const r = await regenerate(host, u, 'mypersonaltoken');
        assert.equal(r.status, 200);
        const token = tokenOf(r);
        assert.equal(r.body, `{"token":"${token}","success":true}`);
        assert.match(token, /^[A-Za-z0-9_-]{43}$/);
        assert.equal(r.headers.get('content-type'), 'application/json');
        const withOld = await call(host, 'GET', '/api/v1/me', { user: u, token: old });
        assert.equal(withOld.status, 401);
        const withNew = await call(host, 'GET', '/api/v1/me', { user: u, token });
        assert.equal(withNew.status, 200);
      } finally {
        await host.close();
      }
    });

    test('400 example 1: totp-required, password method', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'alice', { password: PASSWORD });
        host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'mypersonaltoken' });
        const r = await regenerate(host, u, 'mypersonaltoken');
        assert.equal(r.status, 400);
        assert.equal(
          r.body,
          '{"success":false,"error":"TOTP Required [totp-required]","errorType":"totp-required","details":{"method":"password","codeGenerated":false,"availableMethods":[]}}',
        );
      } finally {
        await host.close();
      }
    });

    test("400 example 2: the 'tokenName' param is required", async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'alice', { password: PASSWORD });
        for (const body of ['{}', '', '{"tokenName":""}', '{"tokenName":null}']) {
          const r = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', {
            user: u,
            code: passwordCode(),
            twoFactorMethod: 'password',
            body,
          });
          assert.equal(r.status, 400, body);
          assert.equal(r.body, `{"success":false,"error":"The 'tokenName' param is required"}`, body);
        }
      } finally {
        await host.close();
      }
    });

    test('400 example 3: not-authorized without the permission', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'guest', { password: PASSWORD, roles: ['guest'] });
        const r = await regenerate(host, u, 'mypersonaltoken', { code: passwordCode(), twoFactorMethod: 'password' });
        assert.equal(r.status, 400);
        assert.equal(
          r.body,
          '{"success":false,"error":"Not Authorized [not-authorized]","errorType":"not-authorized","details":{"method":"personalAccessTokens:generateToken"}}',
        );
        // A per-user grant lifts it (and a revocation beats a role).
        host.admin.setPermission(u.id, 'create-personal-access-tokens', true);
        const granted = await regenerate(host, u, 'mypersonaltoken', { code: passwordCode(), twoFactorMethod: 'password' });
        assert.equal(JSON.parse(granted.body).errorType, 'error-token-does-not-exists');
      } finally {
        await host.close();
      }
    });

    test('401: wrong token, wrong user id, no headers', async () => {
      const host = await startHost(kind);
      try {
        const u = user(host, 'alice');
        const expected = '{"status":"error","message":"You must be logged in to do this."}';
        for (const opts of [
          { user: u, token: 'RScctEHSmLGZGywfIhWyRpyofhKOiMoUIpimhvheU3f' },
          { user: { id: 'rbAXPnMktTFbNpwtJ', login: u.login } },
          {},
        ]) {
          const r = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', {
            ...opts,
            body: '{"tokenName":"x"}',
          });
          assert.deepEqual([r.status, r.body], [401, expected]);
        }
      } finally {
        await host.close();
      }
    });
  });
}
