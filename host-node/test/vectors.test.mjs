// wit/vectors.json (made by wit/vectors.py from the WIT's prose alone): the
// Node host's own hashing reproduces it, a user seeded from it alone logs in
// with its backup code, and a code key shorter than 32 bytes fails closed,
// shown over HTTP (a host that passes a short key, as a careless third party
// would) and at start (this host refuses one).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import bcrypt from 'bcryptjs';
import { backupCodeHash, hashToken, passwordDigest } from '../src/admin.mjs';
import { Component } from '../src/component.mjs';
import { randomKeys } from '../src/keys.mjs';
import { openMemory } from '../src/storage/memory.mjs';
import { call, PASSWORD, regenerate, startHost, user } from './helpers.mjs';

const vectors = JSON.parse(readFileSync(new URL('../../wit/vectors.json', import.meta.url), 'utf8'));
const hex = (s) => Buffer.from(s, 'hex');

test('the host reproduces every vector it computes', () => {
  assert.ok(vectors['backup-code-hash'].length > 0);
  for (const v of vectors['backup-code-hash']) {
    assert.equal(backupCodeHash(hex(v['code-key']), v['user-id'], v.code), v.hash);
  }
  for (const v of vectors['token-hash']) assert.equal(hashToken(v.token), v.hashed);
  for (const v of vectors.password) {
    assert.equal(passwordDigest(v.password), v.digest);
    assert.ok(bcrypt.compareSync(v.digest, v.bcrypt));
  }
});

test('a user seeded from the vectors alone logs in with its backup code', async () => {
  const backup = vectors['backup-code-hash'][0];
  const password = vectors.password[0];
  const store = openMemory();
  const sent = [];
  const component = new Component({
    store,
    mail: { send: (m) => sent.push(m) },
    keys: { ...randomKeys(), codeKey: hex(backup['code-key']) },
  });
  store.insertUser({
    id: backup['user-id'],
    username: 'vector',
    name: 'vector',
    roles: ['user'],
    createdAt: Date.now(),
    emails: [{ address: 'vector@example.org', verified: true }],
    passwordBcrypt: password.bcrypt,
    totp: {
      secret: 'JBSWY3DPEHPK3PXP',
      algorithm: 'sha1',
      digits: 6,
      period: 30,
      lastUsedStep: 0,
      hashedBackupCodes: [backup.hash],
      spentBackupCodes: [],
    },
    emailTwoFactor: false,
    emailCode: null,
    failures: { count: 0, lastFailedAt: 0 },
    tokens: [],
    overrides: {},
  });
  const body = new TextEncoder().encode(JSON.stringify({ user: 'vector', password: password.password, code: backup.code }));
  const request = { headers: [], clientAddress: '127.0.0.1', body, query: '' };
  const first = component.call('login', request);
  assert.equal(first.status, 200, first.body);
  const again = component.call('login', request);
  assert.equal(JSON.parse(again.body).error, 'totp-invalid');
});

test('a short code key fails closed over HTTP, and this host refuses one at start', async () => {
  assert.throws(
    () => new Component({ store: openMemory(), mail: { send() {} }, keys: { ...randomKeys(), codeKey: Buffer.alloc(16) } }),
    /settings\.code-key/,
  );
  const host = await startHost();
  try {
    // What a host that forgot its key passes to the component.
    host.component.settings = { ...host.component.settings, codeKey: new Uint8Array(0) };
    const u = user(host, 'alice', { password: PASSWORD });
    host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci' });
    const setup = host.admin.enableTotp(u.id);
    const refused = await regenerate(host, u, 'ci', { twoFactorMethod: 'totp', code: setup.backupCodes[0] });
    assert.equal(refused.status, 500, refused.body);
    assert.equal(JSON.parse(refused.body).errorType, 'error-code-key-missing');
    assert.ok(host.logs.some((l) => l.event === 'configuration_error' && l.setting === 'code-key'));
    // Nothing was counted or spent: the backup code still works under the right key.
    const doc = host.store.user(u.id);
    assert.equal(doc.failures.count, 0);
    assert.equal(doc.totp.spentBackupCodes.length, 0);
    // What needs no second factor still works.
    const me = await call(host, 'GET', '/api/v1/me', { user: u });
    assert.equal(me.status, 200, me.body);
  } finally {
    await host.close();
  }
});
