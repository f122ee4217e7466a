// The storage contract (wit/world.wit, interface `storage`) on both Node
// stores: each outcome of every conditional write in the contract's order,
// the `err` cases, list order, and, for SQLite, what is on disk.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Admin, newToken } from '../src/admin.mjs';
import { loadKeys, randomKeys } from '../src/keys.mjs';
import { openMemory } from '../src/storage/memory.mjs';
import { storageFunctions } from '../src/storage/rules.mjs';
import { openSqlite } from '../src/storage/sqlite.mjs';

function open(kind) {
  const dir = mkdtempSync(join(tmpdir(), 'rcpat-store-'));
  const keys = kind === 'sqlite' ? loadKeys(join(dir, 'db.keys')) : randomKeys();
  const store = kind === 'sqlite' ? openSqlite(join(dir, 'db.sqlite'), keys) : openMemory();
  let now = 1_700_000_000_000;
  const admin = new Admin(store, keys, { nowMs: () => now++ });
  return {
    dir,
    keys,
    store,
    admin,
    s: storageFunctions(store),
    close() {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const none = { session: undefined, used: { tag: 'none' }, remember: undefined };
const pat = (name, t = newToken(), createdAt = 1n) => ({
  name,
  hashedToken: t.hashed,
  lastTokenPart: t.token.slice(-6),
  createdAt,
  bypassTwoFactor: false,
  lastUsedAt: undefined,
});

for (const kind of ['memory', 'sqlite']) {
  describe(`storage contract (${kind})`, () => {
    test('conditional writes: each outcome, first applicable wins, nothing changed unless done', () => {
      const t = open(kind);
      try {
        const id = t.admin.createUser({ username: 'u' });
        const session = t.admin.issueToken(id);
        assert.equal(t.s.authenticate(id, newToken().hashed), undefined);
        const a = pat('a');
        assert.equal(t.s.insertPersonalAccessToken('nobody', a, none), 'not-found');
        assert.equal(t.s.insertPersonalAccessToken(id, a, none), 'done');
        assert.equal(t.s.insertPersonalAccessToken(id, pat('a'), none), 'name-taken');
        const revoked = { ...none, session: newToken().hashed };
        // name-taken comes before credentials-revoked
        assert.equal(t.s.insertPersonalAccessToken(id, pat('a'), revoked), 'name-taken');
        assert.equal(t.s.insertPersonalAccessToken(id, pat('b'), revoked), 'credentials-revoked');
        // replace: compare-and-swap on the expected hash
        const a2 = pat('a', newToken(), 5n);
        assert.equal(t.s.replacePersonalAccessToken(id, newToken().hashed, a2, none), 'not-found');
        assert.equal(t.s.replacePersonalAccessToken(id, a.hashedToken, a2, revoked), 'credentials-revoked');
        assert.equal(t.s.findPersonalAccessToken(id, 'a').hashedToken, a.hashedToken);
        assert.equal(t.s.replacePersonalAccessToken(id, a.hashedToken, a2, none), 'done');
        assert.equal(t.s.replacePersonalAccessToken(id, a.hashedToken, pat('a'), none), 'not-found');
        assert.equal(t.s.findPersonalAccessToken(id, 'a').hashedToken, a2.hashedToken);
        // remove
        assert.equal(t.s.removePersonalAccessToken(id, 'zzz', none), 'not-found');
        assert.equal(t.s.removePersonalAccessToken(id, 'a', revoked), 'credentials-revoked');
        assert.equal(t.s.removePersonalAccessToken(id, 'a', none), 'done');
        assert.equal(t.s.findPersonalAccessToken(id, 'a'), undefined);
        // A session token authenticates, and remove-login-token takes only session tokens.
        const b = pat('b');
        assert.equal(t.s.insertPersonalAccessToken(id, b, none), 'done');
        assert.equal(t.s.removeLoginToken(id, b.hashedToken), 'not-found');
        assert.equal(t.s.findPersonalAccessToken(id, 'b').hashedToken, b.hashedToken);
        const sessionHash = createHash('sha256').update(session).digest('base64');
        assert.equal(t.s.authenticate(id, sessionHash).token.kind, 'login');
        assert.equal(t.s.removeLoginToken(id, sessionHash), 'done');
        assert.equal(t.s.authenticate(id, sessionHash), undefined);
        assert.equal(t.s.removeLoginToken(id, sessionHash), 'not-found');
      } finally {
        t.close();
      }
    });

    test('factors: a TOTP step and a backup code are spent exactly once', () => {
      const t = open(kind);
      try {
        const id = t.admin.createUser({ username: 'u' });
        const { backupCodes } = t.admin.enableTotp(id);
        const step = { ...none, used: { tag: 'totp-step', val: 100n } };
        assert.equal(t.s.insertPersonalAccessToken(id, pat('a'), step), 'done');
        assert.equal(t.s.insertPersonalAccessToken(id, pat('b'), step), 'factor-already-used');
        assert.equal(t.s.insertPersonalAccessToken(id, pat('b'), { ...none, used: { tag: 'totp-step', val: 99n } }), 'factor-already-used');
        const user = t.store.user(id);
        const hashed = user.totp.hashedBackupCodes[0];
        const backup = { ...none, used: { tag: 'backup-code', val: hashed } };
        assert.equal(t.s.findBackupCode(id, hashed), 'unused');
        assert.equal(t.s.insertPersonalAccessToken(id, pat('c'), backup), 'done');
        assert.equal(t.s.insertPersonalAccessToken(id, pat('d'), backup), 'factor-already-used');
        assert.equal(t.s.findBackupCode(id, hashed), 'spent');
        assert.equal(t.s.findBackupCode(id, 'not-a-code'), 'unknown');
        assert.equal(t.s.findBackupCode('nobody', hashed), 'unknown');
        const after = t.store.user(id).totp;
        assert.equal(after.hashedBackupCodes.length, backupCodes.length - 1);
        assert.deepEqual(after.spentBackupCodes, [hashed]);
        assert.equal(after.lastUsedStep, 100);
      } finally {
        t.close();
      }
    });

    test('attempts: reserved atomically, limited, released; unknown user is err', () => {
      const t = open(kind);
      try {
        const id = t.admin.createUser({ username: 'u' });
        for (let i = 1; i <= 3; i++) {
          const r = t.s.reserveTwoFactorAttempt(id, 1000n + BigInt(i), 0n, 3, undefined);
          assert.deepEqual([r.granted, r.failures.count], [true, i]);
        }
        const refused = t.s.reserveTwoFactorAttempt(id, 2000n, 0n, 3, undefined);
        assert.deepEqual([refused.granted, refused.failures.count], [false, 3]);
        // The window has passed: the count starts again.
        const fresh = t.s.reserveTwoFactorAttempt(id, 9000n, 5000n, 3, undefined);
        assert.deepEqual([fresh.granted, fresh.failures.count], [true, 1]);
        t.s.releaseTwoFactorAttempt(id, false);
        assert.equal(t.store.user(id).failures.count, 0);
        assert.throws(() => t.s.reserveTwoFactorAttempt('nobody', 1n, 0n, 3, undefined));
        assert.throws(() => t.s.releaseTwoFactorAttempt('nobody', false));
        assert.throws(() => t.s.storeEmailCode('nobody', { codeHash: 'x', salt: 'y', expiresAt: 1n, attempts: 0 }));
      } finally {
        t.close();
      }
    });

    test('logins: account and address blocks, reset by a success', () => {
      const t = open(kind);
      try {
        const limits = { maxPerAccount: 2, accountBlockMs: 1000n, maxPerAddress: 3, addressBlockMs: 1000n, knownAddressMs: 10000n };
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip', 1n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip', 2n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip', 3n, limits), 'account-blocked');
        assert.equal(t.s.reserveLoginAttempt('other', 'ip', 4n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('third', 'ip', 5n, limits), 'address-blocked');
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip2', 2000n, limits), 'admitted');
        t.s.loginSucceeded('acc', 'ip2', 2000n);
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip2', 2001n, limits), 'admitted');
        // Strangers block the account; from its known address the owner still gets a check.
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip3', 2002n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip3', 2003n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip3', 2004n, limits), 'account-blocked');
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip2', 2005n, limits), 'admitted');
        // Counts below the limit decay with their window.
        assert.equal(t.s.reserveLoginAttempt('dec', 'ip4', 5000n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('dec', 'ip4', 6001n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('dec', 'ip4', 6002n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('dec', 'ip4', 6003n, limits), 'account-blocked');
        // Known for knownAddressMs only.
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip3', 12002n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip3', 12003n, limits), 'admitted');
        assert.equal(t.s.reserveLoginAttempt('acc', 'ip2', 12004n, limits), 'account-blocked');
      } finally {
        t.close();
      }
    });

    test('list: by the current value\'s creation, a regenerated token moves to the end', () => {
      const t = open(kind);
      try {
        const id = t.admin.createUser({ username: 'u', email: 'U@Example.com' });
        const a = pat('a', newToken(), 10n);
        assert.equal(t.s.insertPersonalAccessToken(id, a, none), 'done');
        assert.equal(t.s.insertPersonalAccessToken(id, pat('b', newToken(), 20n), none), 'done');
        assert.equal(t.s.replacePersonalAccessToken(id, a.hashedToken, pat('a', newToken(), 30n), none), 'done');
        assert.deepEqual(t.s.listPersonalAccessTokens(id).map((p) => p.name), ['b', 'a']);
        assert.equal(t.s.findUserForLogin({ tag: 'email', val: 'u@EXAMPLE.com' }).id, id);
        assert.equal(t.s.findUserForLogin({ tag: 'username', val: 'U' }), undefined);
      } finally {
        t.close();
      }
    });

    test('admin: a login token has no name, a PAT has one (as rcpat_store::TokenRecord::check)', () => {
      const t = open(kind);
      try {
        const id = t.admin.createUser({ username: 'u' });
        assert.throws(() => t.admin.issueToken(id, { kind: 'login', name: 'x' }), /a login token has no name/);
        assert.throws(() => t.admin.issueToken(id, { kind: 'personal-access-token' }), /needs a name/);
        assert.throws(() => t.admin.issueToken(id, { kind: 'other' }), /unknown token kind/);
        assert.equal(t.store.user(id).tokens.length, 0);
        t.admin.issueToken(id, { kind: 'personal-access-token', name: 'ci' });
        assert.deepEqual(t.s.listPersonalAccessTokens(id).map((p) => p.name), ['ci']);
      } finally {
        t.close();
      }
    });
  });
}

describe('SQLite on disk', () => {
  test('owner-only files, sealed TOTP secrets, everything kept across a reopen', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rcpat-disk-'));
    try {
      const path = join(dir, 'db.sqlite');
      let keys = loadKeys(join(dir, 'db.keys'));
      let store = openSqlite(path, keys);
      const admin = new Admin(store, keys);
      const id = admin.createUser({ username: 'u' });
      const { secret } = admin.enableTotp(id);
      const token = admin.issueToken(id, { kind: 'personal-access-token', name: 'ci' });
      store.close();
      for (const f of ['db.sqlite', 'db.keys']) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
      const bytes = readFileSync(path).toString('latin1') + readFileSync(`${path}-wal`, { flag: 'a+' }).toString('latin1');
      assert.ok(!bytes.includes(secret), 'the TOTP secret is on disk in plain text');
      keys = loadKeys(join(dir, 'db.keys'));
      store = openSqlite(path, keys);
      const s = storageFunctions(store);
      assert.equal(store.user(id).totp.secret, secret);
      assert.equal(s.findPersonalAccessToken(id, 'ci').lastTokenPart, token.slice(-6));
      store.close();
      // A key file others can read is refused.
      chmodSync(join(dir, 'db.keys'), 0o644);
      assert.throws(() => loadKeys(join(dir, 'db.keys')), /readable or writable by others/);
      // Another host's keys cannot open the secrets.
      const other = openSqlite(path, randomKeys());
      assert.throws(() => other.user(id));
      other.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
