// The HTTP layer and the instance's life in the Node host: routing and
// bounds answered as host-example answers them, storage failures answered
// 500 without harming the kept instance, and its memory flat under reuse.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { call, regenerate, startHost, tokenOf, user } from './helpers.mjs';

const json = (r) => JSON.parse(r.body);

test('404, 405 with Allow, 413, 415 in Rocket.Chat-style bodies', async () => {
  const host = await startHost();
  try {
    const u = user(host, 'alice');
    const missing = await call(host, 'GET', '/api/v1/nope');
    assert.deepEqual([missing.status, missing.body], [
      404,
      '{"success":false,"error":"The endpoint was not found [error-not-found]","errorType":"error-not-found"}',
    ]);
    const wrongMethod = await call(host, 'GET', '/api/v1/users.regeneratePersonalAccessToken', { user: u });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST');
    assert.equal(json(wrongMethod).errorType, 'error-method-not-allowed');
    const big = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', {
      user: u,
      body: JSON.stringify({ tokenName: 'x'.repeat(70_000) }),
    });
    assert.deepEqual([big.status, json(big).errorType], [413, 'error-request-too-large']);
    // Within the host's bound but over the PAT routes' own 4 KiB: the component's 413.
    const mid = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', {
      user: u,
      body: JSON.stringify({ tokenName: 'x'.repeat(5_000) }),
    });
    assert.equal(mid.status, 413);
    const form = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', {
      user: u,
      body: 'tokenName=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.deepEqual([form.status, json(form).errorType], [415, 'error-unsupported-media-type']);
    const notJson = await call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', { user: u, body: '{"tokenName":' });
    assert.deepEqual([notJson.status, json(notJson).errorType], [400, 'error-invalid-body']);
  } finally {
    await host.close();
  }
});

test('a duplicated x-auth-token header is refused, not guessed', async () => {
  const host = await startHost();
  try {
    const u = user(host, 'alice');
    const reply = await new Promise((resolve, reject) => {
      const { port } = new URL(host.url);
      const s = net.connect(Number(port), '127.0.0.1');
      const body = '{"tokenName":"x"}';
      s.write(
        'POST /api/v1/users.regeneratePersonalAccessToken HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' +
          `X-User-Id: ${u.id}\r\nX-Auth-Token: ${u.login}\r\nX-Auth-Token: other\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      let data = '';
      s.on('data', (d) => (data += d));
      s.on('end', () => resolve(data));
      s.on('error', reject);
    });
    assert.match(reply, /^HTTP\/1\.1 400 /);
    assert.match(reply, /error-invalid-header/);
  } finally {
    await host.close();
  }
});

test('a failing store: 500 error-storage-failure, nothing changed, the instance keeps serving', async () => {
  const host = await startHost('sqlite');
  try {
    const u = user(host, 'alice');
    host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const save = host.store.save;
    host.store.save = () => {
      throw new Error('disk full (injected)');
    };
    // Many more failures than the ~20 after which a bare Error poisons a jco instance.
    for (let i = 0; i < 40; i++) {
      const r = await regenerate(host, u, 'ci');
      assert.deepEqual([r.status, r.body], [
        500,
        '{"success":false,"error":"Storage failure; nothing was changed [error-storage-failure]","errorType":"error-storage-failure"}',
      ]);
    }
    assert.ok(host.logs.some((l) => l.event === 'storage_failed' && l.error.includes('disk full')));
    host.store.save = save;
    const before = (await call(host, 'GET', '/api/v1/users.getPersonalAccessTokens', { user: u })).body;
    const ok = await regenerate(host, u, 'ci');
    assert.equal(ok.status, 200, ok.body);
    assert.ok(tokenOf(ok));
    assert.equal(JSON.parse(before).tokens.length, 1);
    assert.equal(host.component.instantiations, 1);
  } finally {
    await host.close();
  }
});

test('one kept instance: 20,000 self-rotations, guest memory flat', async () => {
  const host = await startHost();
  try {
    const u = user(host, 'alice');
    let token = host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const enc = (s) => new Uint8Array(Buffer.from(s));
    const rotate = () => {
      const r = host.component.call('regenerate-personal-access-token', {
        headers: [
          { name: 'x-user-id', value: enc(u.id) },
          { name: 'x-auth-token', value: enc(token) },
        ],
        clientAddress: '127.0.0.1',
        query: '',
        body: enc('{"tokenName":"ci"}'),
      });
      assert.equal(r.status, 200, r.body);
      token = JSON.parse(r.body).token;
    };
    for (let i = 0; i < 1_000; i++) rotate();
    const early = host.component.memoryBytes();
    for (let i = 0; i < 19_000; i++) rotate();
    const late = host.component.memoryBytes();
    assert.ok(early > 0);
    assert.ok(late <= early + 65_536, `memory grew from ${early} to ${late} bytes`);
    assert.equal(host.component.instantiations, 1);
  } finally {
    await host.close();
  }
});
