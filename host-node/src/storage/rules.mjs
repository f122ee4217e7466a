// The storage contract of `wit/world.wit` (interface `storage`) over a
// document store: each user is one JSON document (profile, 2FA state,
// tokens, permission overrides), and failed-login counts are small records
// by key. memory.mjs and sqlite.mjs supply the documents; every rule lives
// here once, in the order the contract states, and mirrors the Rust
// backends (`rcpat::storage::rules` for the counting arithmetic).
//
// A store provides:
//   transaction(fn)            run fn atomically (SQLite: BEGIN IMMEDIATE)
//   user(id)                   the user's document, or undefined
//   save(doc)                  write a changed document back (memory: no-op)
//   userForLogin(tag, value)   the oldest user by exact username, or by any
//                              stored address compared ASCII-case-insensitively
//   count(kind, key) / setCount(kind, key, c) / deleteCount(kind, key)
//                              failed logins, kind 'account' or 'address',
//                              and known login addresses, kind 'known'
//   addressGate (optional)     where 'address' counts live, if not in count
//                              records (see localAddressGate)
//   audit                      the audit trail beside the documents
//                              (audit.mjs), appended in the same transaction
// and, for the admin side (admin.mjs), insertUser(doc) and users().
//
// Functions return the `ok` value; an `err` is thrown as {payload} (jco's
// convention) by storageImport below, never as a bare Error, which would
// unwind through the guest and poison the instance.

import * as wit from '../wit.mjs';

/** Which roles hold a permission unless a user has an override (Rocket.Chat's defaults). */
export const PERMISSION_ROLES = {
  'create-personal-access-tokens': ['admin', 'user'],
  'view-personal-access-token-audit': ['admin'],
};

const isPatNamed = (t, name) => t.kind === 'personal-access-token' && t.name === name;

/**
 * The PAT of document `u` that keeps `hashed` as a superseded value at or
 * after `notBefore` (reuse detection: a token keeps its values on its own
 * entry, newest first, so they go with it): {token, supersededAt}.
 */
function supersededIn(u, hashed, notBefore) {
  for (const t of u?.tokens ?? []) {
    if (t.kind !== 'personal-access-token') continue;
    const kept = (t.superseded ?? []).find((s) => s.hashedToken === hashed && s.supersededAt >= Number(notBefore));
    if (kept) return { token: t, supersededAt: kept.supersededAt };
  }
  return undefined;
}

function noSuchUser(id) {
  return new StorageError(`no such user ${JSON.stringify(id)}`);
}

/** An `err` of the storage contract (the text is for the host's log only). */
export class StorageError extends Error {}

/** Where hashed backup code `hashed` stands in TOTP enrolment `t` (a WIT backup-code-state). */
function backupCodeState(t, hashed) {
  if (t?.hashedBackupCodes.includes(hashed)) return 'unused';
  if (t?.spentBackupCodes.includes(hashed)) return 'spent';
  return 'unknown';
}

/** Whether `used` (a WIT factor-use) can still be spent on user document `u`. */
function factorAvailable(u, used) {
  switch (used.tag) {
    case 'none':
    case 'password':
      return true;
    case 'totp-step':
      return !!u.totp && Number(used.val) > u.totp.lastUsedStep;
    case 'backup-code':
      return backupCodeState(u.totp, used.val) === 'unused';
    case 'email-code':
      return !!u.emailCode && u.emailCode.codeHash === used.val;
    default:
      throw new StorageError(`unknown factor-use ${used.tag}`);
  }
}

/** Why `proof` cannot be spent on `u` now, if it cannot (checked before any change). */
function refusal(u, proof) {
  if (proof.reply && keptReply(u, proof.reply.presentedHashedToken, proof.reply.key, proof.reply.forgetBefore)) {
    return 'reply-kept';
  }
  if (proof.session !== undefined && proof.session !== null) {
    if (!u.tokens.some((t) => t.hashedToken === proof.session)) return 'credentials-revoked';
  }
  return factorAvailable(u, proof.used) ? null : 'factor-already-used';
}

/** Spends a proof that `refusal` accepted. */
function spend(u, proof) {
  const used = proof.used;
  switch (used.tag) {
    case 'totp-step':
      u.totp.lastUsedStep = Number(used.val);
      break;
    case 'backup-code':
      u.totp.hashedBackupCodes = u.totp.hashedBackupCodes.filter((c) => c !== used.val);
      u.totp.spentBackupCodes.push(used.val);
      break;
    case 'email-code':
      u.emailCode = null;
      break;
  }
  if (used.tag !== 'none') u.failures = { count: 0, lastFailedAt: 0 };
  const grant = proof.remember;
  if (grant) {
    const t = u.tokens.find((t) => t.hashedToken === grant.hashedLoginToken);
    if (t) {
      t.authorizedHash = grant.fingerprint;
      t.authorizedUntil = Number(grant.until);
    }
  }
  const reply = proof.reply;
  if (reply) {
    // Kept in the user's document (JSON: the sealed bytes as base64).
    u.replies = (u.replies ?? []).filter(
      (r) => r.createdAt >= Number(reply.forgetBefore) &&
        !(r.presentedHashedToken === reply.presentedHashedToken && r.key === reply.key),
    );
    u.replies.push({
      presentedHashedToken: reply.presentedHashedToken,
      key: reply.key,
      bodyHash: reply.bodyHash,
      sealedReply: Buffer.from(reply.sealedReply).toString('base64'),
      createdAt: Number(reply.createdAt),
    });
    releaseLease(u, reply.presentedHashedToken, reply.key);
  }
}

/** The reply kept for (presented token, key) at or after `notBefore`, if any. */
function keptReply(u, presentedHashedToken, key, notBefore) {
  return (u.replies ?? []).find(
    (r) => r.presentedHashedToken === presentedHashedToken && r.key === key && r.createdAt >= Number(notBefore),
  );
}

/** Drops the reservation of (presented token, key), if any. */
function releaseLease(u, presentedHashedToken, key) {
  u.leases = (u.leases ?? []).filter((l) => !(l.presentedHashedToken === presentedHashedToken && l.key === key));
}

function replyOf(r) {
  return { bodyHash: r.bodyHash, sealedReply: new Uint8Array(Buffer.from(r.sealedReply, 'base64')) };
}

/** One failed-login count as it stands at `at`: zero once its block has run out. */
function currentCount(c, at, max, blockMs) {
  // Counts decay with their window, whether or not they reached the limit.
  return max > 0 && at >= c.lastAt + blockMs ? 0 : c.count;
}

/**
 * The per-address half of login admission, over a store's 'address' count
 * records: `admit` counts one attempt unless the address is at its limit
 * (then false, nothing counted); `credit` takes one back after a right
 * password. A store whose address counts live elsewhere supplies its own
 * `addressGate` with the same two calls (host-workers: one Durable Object
 * per address, which runs this one over its own records).
 */
export function localAddressGate(store) {
  return {
    admit(address, at, max, blockMs) {
      const adr = store.count('address', address) ?? { count: 0, lastAt: 0 };
      const now = currentCount(adr, at, max, blockMs);
      if (max > 0 && now >= max) return false;
      store.setCount('address', address, { count: now + 1, lastAt: at });
      return true;
    },
    credit(address) {
      const adr = store.count('address', address);
      if (adr) store.setCount('address', address, { ...adr, count: Math.max(0, adr.count - 1) });
    },
  };
}

/** The record key of `address` as a known login address of `account`. */
const knownKey = (account, address) => `${account}\n${address}`;

/**
 * A conditional write on user `userId`: `find(u)` answers 'not-found' /
 * 'name-taken' or null to go on; then the proof is checked and spent and
 * `change(u)` applied, all in one transaction.
 */
function conditionalWrite(store, userId, proof, find, change) {
  return store.transaction(() => {
    const u = store.user(userId);
    if (!u) return 'not-found';
    const early = find(u);
    if (early) return early;
    const refused = refusal(u, proof);
    if (refused) return refused;
    spend(u, proof);
    change(u);
    store.audit.append(proof.events);
    store.save(u);
    return 'done';
  });
}

/** Whether user `u` holds `permission`: a per-user grant or revocation
 * first, otherwise through one of the user's roles. */
function holds(u, permission) {
  const override = u.overrides[permission];
  if (override !== undefined) return override;
  const roles = PERMISSION_ROLES[permission] ?? [];
  return u.roles.some((r) => roles.includes(r));
}

/** The functions of the WIT `storage` interface, over `store`. */
export function storageFunctions(store) {
  return {
    authenticate(userId, hashedToken, permission) {
      const u = store.user(userId);
      const t = u?.tokens.find((t) => t.hashedToken === hashedToken);
      if (!t) return undefined;
      const permitted = permission != null && holds(u, permission);
      return { user: wit.user(u), token: wit.loginToken(t), permitted };
    },

    findUserForLogin(identifier) {
      const u = store.userForLogin(identifier.tag, identifier.val);
      return u ? wit.user(u) : undefined;
    },

    insertLoginToken(userId, hashedToken, createdAt, proof) {
      return conditionalWrite(store, userId, proof, () => null, (u) => {
        u.tokens.push(wit.loginEntry(hashedToken, createdAt));
      });
    },

    reserveLoginAttempt(account, address, at, limits) {
      at = Number(at);
      const maxAcc = limits.maxPerAccount;
      const accMs = Number(limits.accountBlockMs);
      const knownMs = Number(limits.knownAddressMs);
      const gate = store.addressGate ?? localAddressGate(store);
      return store.transaction(() => {
        const acc = store.count('account', account) ?? { count: 0, lastAt: 0 };
        const since = store.count('known', knownKey(account, address));
        const known = since !== undefined && knownMs > 0 && at < since.lastAt + knownMs;
        const accNow = currentCount(acc, at, maxAcc, accMs);
        if (!known && maxAcc > 0 && accNow >= maxAcc) return 'account-blocked';
        if (!gate.admit(address, at, limits.maxPerAddress, Number(limits.addressBlockMs))) return 'address-blocked';
        if (!known) store.setCount('account', account, { count: accNow + 1, lastAt: at });
        return 'admitted';
      });
    },

    loginSucceeded(account, address, at) {
      const gate = store.addressGate ?? localAddressGate(store);
      store.transaction(() => {
        store.deleteCount('account', account);
        gate.credit(address);
        // Known since `at` (one record per account and address; a right
        // password is needed to add one, so they cannot be flooded).
        store.setCount('known', knownKey(account, address), { count: 0, lastAt: Number(at) });
      });
    },

    removeLoginToken(userId, hashedToken, events) {
      return store.transaction(() => {
        const u = store.user(userId);
        const i = u ? u.tokens.findIndex((t) => t.kind === 'login' && t.hashedToken === hashedToken) : -1;
        if (i < 0) return 'not-found';
        u.tokens.splice(i, 1);
        store.audit.append(events);
        store.save(u);
        return 'done';
      });
    },

    findBackupCode(userId, hashedCode) {
      return backupCodeState(store.user(userId)?.totp, hashedCode);
    },

    listPersonalAccessTokens(userId) {
      const u = store.user(userId);
      if (!u) return [];
      // By the current value's creation; Array.prototype.sort is stable, so
      // equal times keep first-creation order (a replaced token keeps its slot).
      return u.tokens
        .filter((t) => t.kind === 'personal-access-token')
        .sort((a, b) => a.createdAt - b.createdAt)
        .map(wit.personalAccessToken);
    },

    findPersonalAccessToken(userId, name) {
      const t = store.user(userId)?.tokens.find((t) => isPatNamed(t, name));
      return t ? wit.personalAccessToken(t) : undefined;
    },

    insertPersonalAccessToken(userId, token, proof) {
      return conditionalWrite(
        store,
        userId,
        proof,
        (u) => (u.tokens.some((t) => isPatNamed(t, token.name)) ? 'name-taken' : null),
        (u) => u.tokens.push(wit.patEntry(token)),
      );
    },

    replacePersonalAccessToken(userId, expectedHashedToken, replacement, proof, keepSuperseded) {
      const matches = (t) => isPatNamed(t, replacement.name) && t.hashedToken === expectedHashedToken;
      return conditionalWrite(
        store,
        userId,
        proof,
        (u) => (u.tokens.some(matches) ? null : 'not-found'),
        (u) => {
          const i = u.tokens.findIndex(matches);
          const kept = [
            { hashedToken: expectedHashedToken, supersededAt: Number(replacement.createdAt) },
            ...(u.tokens[i].superseded ?? []),
          ].slice(0, keepSuperseded);
          u.tokens[i] = wit.patEntry(replacement);
          if (kept.length > 0) u.tokens[i].superseded = kept;
        },
      );
    },

    recordAuditEvents(events) {
      store.transaction(() => store.audit.append(events));
    },

    listAuditEvents(filter, offset, count) {
      return store.audit.list(filter, offset, count);
    },

    findSupersededToken(userId, hashedToken, notBefore) {
      const found = supersededIn(store.user(userId), hashedToken, notBefore);
      return found ? { name: found.token.name, supersededAt: BigInt(found.supersededAt) } : undefined;
    },

    revokeSupersededFamily(userId, hashedToken, notBefore, events) {
      return store.transaction(() => {
        const u = store.user(userId);
        const found = supersededIn(u, hashedToken, notBefore);
        if (!found) return undefined;
        u.tokens = u.tokens.filter((t) => t !== found.token);
        store.audit.append(events);
        store.save(u);
        return { name: found.token.name, verifiedEmails: wit.user(u).verifiedEmails };
      });
    },

    removePersonalAccessToken(userId, name, proof) {
      return conditionalWrite(
        store,
        userId,
        proof,
        (u) => (u.tokens.some((t) => isPatNamed(t, name)) ? null : 'not-found'),
        (u) => {
          u.tokens = u.tokens.filter((t) => !isPatNamed(t, name));
        },
      );
    },

    reserveTwoFactorAttempt(userId, at, windowStart, maxFailed, maxEmailCodeAttempts) {
      at = Number(at);
      windowStart = Number(windowStart);
      return store.transaction(() => {
        const u = store.user(userId);
        if (!u) throw noSuchUser(userId);
        const stored = u.failures;
        const count = stored.lastFailedAt <= windowStart ? 0 : stored.count;
        const asked = maxEmailCodeAttempts !== undefined && maxEmailCodeAttempts !== null;
        const code = asked ? u.emailCode : null;
        const emailAttempts = code ? code.attempts : null;
        const emailFull = emailAttempts !== null && emailAttempts >= maxEmailCodeAttempts;
        if (count >= maxFailed || emailFull) {
          return {
            granted: false,
            failures: wit.failures({ count, lastFailedAt: stored.lastFailedAt }),
            emailCodeAttempts: emailAttempts ?? 0,
          };
        }
        u.failures = { count: count + 1, lastFailedAt: at };
        if (code) code.attempts = emailAttempts + 1;
        store.save(u);
        return {
          granted: true,
          failures: wit.failures(u.failures),
          emailCodeAttempts: code ? code.attempts : 0,
        };
      });
    },

    releaseTwoFactorAttempt(userId, emailCodeAttempt) {
      store.transaction(() => {
        const u = store.user(userId);
        if (!u) throw noSuchUser(userId);
        u.failures.count = Math.max(0, u.failures.count - 1);
        if (emailCodeAttempt && u.emailCode) {
          u.emailCode.attempts = Math.max(0, u.emailCode.attempts - 1);
        }
        store.save(u);
      });
    },

    storeEmailCode(userId, code) {
      store.transaction(() => {
        const u = store.user(userId);
        if (!u) throw noSuchUser(userId);
        u.emailCode = {
          codeHash: code.codeHash,
          salt: code.salt,
          expiresAt: Number(code.expiresAt),
          attempts: code.attempts,
        };
        store.save(u);
      });
    },

    findIdempotentReply(userId, presentedHashedToken, key, notBefore) {
      const u = store.user(userId);
      const r = u && keptReply(u, presentedHashedToken, key, notBefore);
      return r ? replyOf(r) : undefined;
    },

    reserveIdempotencyKey(userId, presentedHashedToken, key, at, leaseUntil, notBefore) {
      return store.transaction(() => {
        const u = store.user(userId);
        if (!u) throw noSuchUser(userId);
        const kept = keptReply(u, presentedHashedToken, key, notBefore);
        if (kept) return { tag: 'kept', val: replyOf(kept) };
        const same = (l) => l.presentedHashedToken === presentedHashedToken && l.key === key;
        const leases = u.leases ?? [];
        if (leases.some((l) => same(l) && l.until > Number(at))) return { tag: 'in-flight' };
        u.leases = leases.filter((l) => !same(l) && l.until > Number(at));
        u.leases.push({ presentedHashedToken, key, until: Number(leaseUntil) });
        store.save(u);
        return { tag: 'reserved' };
      });
    },

    releaseIdempotencyKey(userId, presentedHashedToken, key) {
      store.transaction(() => {
        const u = store.user(userId);
        if (!u) return;
        releaseLease(u, presentedHashedToken, key);
        store.save(u);
      });
    },

    recordTokenUse(userId, hashedToken, at, staleBefore) {
      store.transaction(() => {
        const u = store.user(userId);
        const t = u?.tokens.find((t) => t.kind === 'personal-access-token' && t.hashedToken === hashedToken);
        if (t && (t.lastUsedAt === null || t.lastUsedAt < Number(staleBefore))) {
          t.lastUsedAt = Number(at);
          store.save(u);
        }
      });
    },
  };
}

/**
 * The WIT import object for `storage`: every function of `storageFunctions`,
 * with any failure (a StorageError, a SQLite error, a bug) turned into the
 * contract's `err` as jco expects it: a thrown value with a `payload`. The
 * text goes to `log`, and the component never shows it to a client.
 */
export function storageImport(store, log = () => {}) {
  const fns = storageFunctions(store);
  const wrapped = {};
  for (const [name, fn] of Object.entries(fns)) {
    wrapped[name] = (...args) => {
      try {
        return fn(...args);
      } catch (e) {
        const text = e instanceof Error ? e.message : String(e);
        log({ event: 'storage_failed', call: name, error: text });
        throw { payload: `${name} failed` };
      }
    };
  }
  return wrapped;
}
