// The audit trail (issue 28) through the Node host's stores: events beside
// the documents, written in the change's transaction, read by the admin
// route GET /api/v1/audit.personalAccessTokens (403 for others), kept per
// minute for floods, pruned past their retention.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { STORES, call, regenerate, startHost, tokenOf, user } from './helpers.mjs';
import { memoryAuditLog } from '../src/storage/audit.mjs';

const AUDIT_403 =
  '{"success":false,"error":"User does not have the permissions required for this action [error-unauthorized]"}';

const audit = (host, u, query = '') =>
  call(host, 'GET', `/api/v1/audit.personalAccessTokens${query}`, { user: u });

for (const kind of STORES) {
  describe(`the audit trail on ${kind}`, () => {
    test('a regeneration leaves its events; administrators page through them', async () => {
      const host = await startHost(kind);
      try {
        const root = user(host, 'root', { roles: ['admin'] });
        const u = user(host, 'uli');
        const pat = host.admin.issueToken(u.id, { kind: 'personal-access-token', name: 'ci', bypassTwoFactor: true });
        const token = tokenOf(await regenerate(host, u, 'ci', { token: pat, headers: { 'user-agent': 'bot/2' } }));
        assert.deepEqual([(await audit(host, u)).status, (await audit(host, u)).body], [403, AUDIT_403]);
        assert.equal((await audit(host, { id: u.id, login: 'nope' })).status, 401);
        const all = await audit(host, root, `?userId=${u.id}&type=token-regenerated`);
        assert.equal(all.status, 200, all.body);
        const page = JSON.parse(all.body);
        assert.deepEqual([page.total, page.count, page.offset, page.success], [1, 1, 0, true]);
        const e = page.events[0];
        assert.deepEqual(
          [e.type, e.userId, e.tokenName, e.lastTokenPart, e.method, e.userAgent, e.hostId, e.count],
          ['token-regenerated', u.id, 'ci', token.slice(-6), 'bypass', 'bot/2', 'node-test', 1],
        );
        assert.ok(!all.body.includes(token) && !all.body.includes(pat), 'a secret in the reply');
        const bad = await audit(host, root, '?count=-1');
        assert.equal(bad.status, 400);
        assert.equal(JSON.parse(bad.body).errorType, 'error-invalid-params');
        // Failed logins of a name nobody has: one row per minute, counted.
        for (let i = 0; i < 3; i++) {
          const r = await call(host, 'POST', '/api/v1/login', { body: '{"user":"ghost","password":"x"}' });
          assert.equal(r.status, 401);
        }
        const failed = JSON.parse((await audit(host, root, '?type=login-failed')).body);
        assert.deepEqual([failed.total, failed.events[0].count, failed.events[0].userId], [1, 3, 'unknown-username:ghost']);
      } finally {
        await host.close();
      }
    });
  });
}

test('the log prunes itself past its retention, a bounded batch now and then', () => {
  const log = memoryAuditLog('h', 1_000);
  const event = (at) => ({ at: BigInt(at), account: 'a', kind: 'token-removed', tokenName: 'n', clientAddress: 'x', userAgent: '' });
  for (let i = 0; i < 63; i++) log.append([event(i)]);
  assert.equal(log.list({}, 0, 1000).total, 63);
  log.append([event(10_000)]); // the 64th: everything older than 9,000 goes
  assert.equal(log.list({}, 0, 1000).total, 1);
});
