// Every example of the endpoint's documentation
// (shared/spec/regenerate-personal-access-token.txt), byte for byte, from
// the Worker on a local workerd, and the HTTP boundary as the other hosts
// draw it.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PASSWORD, call, passwordCode, regenerate, startHost, tokenOf } from './helpers.mjs';

const json = (r) => JSON.parse(r.body);

describe('documented examples on workerd', () => {
  let host;
  before(async () => {
    host = await startHost();
  });
  after(() => host.close());

  test('200: a new 43-character token; the old one no longer authenticates', async () => {
    const u = await host.user('alice');
    const old = await host.issueToken(u.id, { kind: 'personal-access-token', name: 'mypersonaltoken', bypassTwoFactor: true });
    const r = await regenerate(host, u, 'mypersonaltoken', { token: old });
    assert.equal(r.status, 200, r.body);
    const token = tokenOf(r);
    assert.equal(r.body, `{"token":"${token}","success":true}`);
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(r.headers.get('content-type'), 'application/json');
    assert.equal((await call(host, 'GET', '/api/v1/me', { user: u, token: old })).status, 401);
    assert.equal((await call(host, 'GET', '/api/v1/me', { user: u, token })).status, 200);
  });

  test('400 example 1: totp-required, password method', async () => {
    const u = await host.user('bruno', { password: PASSWORD });
    await host.issueToken(u.id, { kind: 'personal-access-token', name: 'mypersonaltoken' });
    const r = await regenerate(host, u, 'mypersonaltoken');
    assert.deepEqual(
      [r.status, r.body],
      [400, '{"success":false,"error":"TOTP Required [totp-required]","errorType":"totp-required","details":{"method":"password","codeGenerated":false,"availableMethods":[]}}'],
    );
  });

  test("400 example 2: the 'tokenName' param is required", async () => {
    const u = await host.user('carla', { password: PASSWORD });
    for (const body of ['{}', '', '{"tokenName":""}', '{"tokenName":null}']) {
      const r = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', {
        user: u,
        code: passwordCode(),
        twoFactorMethod: 'password',
        body,
      });
      assert.deepEqual([r.status, r.body], [400, `{"success":false,"error":"The 'tokenName' param is required"}`], body);
    }
  });

  test('400 example 3: not-authorized without the permission; a per-user grant lifts it', async () => {
    const u = await host.user('guest', { password: PASSWORD, roles: ['guest'] });
    const r = await regenerate(host, u, 'mypersonaltoken', { code: passwordCode(), twoFactorMethod: 'password' });
    assert.deepEqual(
      [r.status, r.body],
      [400, '{"success":false,"error":"Not Authorized [not-authorized]","errorType":"not-authorized","details":{"method":"personalAccessTokens:generateToken"}}'],
    );
    await host.setPermission(u.id, 'create-personal-access-tokens', true);
    const granted = await regenerate(host, u, 'mypersonaltoken', { code: passwordCode(), twoFactorMethod: 'password' });
    assert.equal(json(granted).errorType, 'error-token-does-not-exists');
  });

  test('401: wrong token, unknown user id, no headers', async () => {
    const u = await host.user('dora');
    const expected = '{"status":"error","message":"You must be logged in to do this."}';
    for (const opts of [
      { user: u, token: 'RScctEHSmLGZGywfIhWyRpyofhKOiMoUIpimhvheU3f' },
      { user: { id: 'rbAXPnMktTFbNpwtJ', login: u.login } },
      {},
    ]) {
      const r = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', { ...opts, body: '{"tokenName":"x"}' });
      assert.deepEqual([r.status, r.body], [401, expected]);
    }
  });

  test('404, 405 with Allow, 413, 415, as host-node and host-example answer them', async () => {
    const u = await host.user('eric');
    const missing = await call(host, 'GET', '/api/v1/nope');
    assert.deepEqual([missing.status, missing.body], [404, '{"success":false,"error":"The endpoint was not found [error-not-found]","errorType":"error-not-found"}']);
    const wrongMethod = await call(host, 'GET', '/api/v1/users.regeneratePersonalAccessToken', { user: u });
    assert.deepEqual([wrongMethod.status, wrongMethod.headers.get('allow'), json(wrongMethod).errorType], [405, 'POST', 'error-method-not-allowed']);
    const big = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', { user: u, body: JSON.stringify({ tokenName: 'x'.repeat(70_000) }) });
    assert.deepEqual([big.status, json(big).errorType], [413, 'error-request-too-large']);
    const form = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', {
      user: u,
      body: 'tokenName=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.deepEqual([form.status, json(form).errorType], [415, 'error-unsupported-media-type']);
  });

  test('a doubled credential header answers 400 error-invalid-header, as on the other hosts', async () => {
    const u = await host.user('fred');
    for (const name of ['X-Auth-Token', 'X-User-Id']) {
      const headers = new Headers({ 'x-user-id': u.id, 'x-auth-token': u.login });
      headers.append(name, name === 'X-Auth-Token' ? u.login : u.id);
      const res = await fetch(`${host.url}/api/v1/me`, { headers });
      const body = await res.text();
      assert.deepEqual(
        [res.status, body],
        [400, `{"success":false,"error":"The '${name.toLowerCase()}' header was sent more than once [error-invalid-header]","errorType":"error-invalid-header"}`],
      );
    }
  });

  test('the admin route is hidden without the admin token', async () => {
    for (const authorization of [undefined, 'Bearer wrong', `Bearer ${host.env.RCPAT_ADMIN_TOKEN}x`]) {
      const res = await fetch(`${host.url}/_rcpat/admin`, {
        method: 'POST',
        headers: authorization ? { authorization } : {},
        body: '{"op":"createUser","username":"mallory"}',
      });
      assert.equal(res.status, 404);
    }
  });
});
