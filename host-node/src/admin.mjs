// What an operator does to a store: users, permissions, TOTP and email
// enrolment, tokens issued outside the API. The Node counterpart of
// host-example's admin commands; tests and the demo use it too.

import bcrypt from 'bcryptjs';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { StoreError } from './storage/store.mjs';

/** Meteor's `Random.id` alphabet (user ids, backup codes). */
const ID_ALPHABET = '23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz';
/** Meteor's `Random.secret()` alphabet: 64 symbols, 6 bits of a byte each. */
const TOKEN_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

export function randomId(len) {
  // Rejection sampling: 55 symbols do not divide 256.
  let out = '';
  while (out.length < len) {
    for (const b of randomBytes(len * 2)) {
      if (b < 220 && out.length < len) out += ID_ALPHABET[b % 55];
    }
  }
  return out;
}

/** A 43-character token (Rocket.Chat's format) and its stored hash. */
export function newToken() {
  const token = [...randomBytes(43)].map((b) => TOKEN_ALPHABET[b & 63]).join('');
  return { token, hashed: hashToken(token) };
}

/** Meteor's `Accounts._hashLoginToken`: base64(SHA-256(token)). */
export function hashToken(token) {
  return createHash('sha256').update(token).digest('base64');
}

/** What clients send as a password (and as the password second factor). */
export function passwordDigest(password) {
  return createHash('sha256').update(password).digest('hex');
}

/** The component's keyed hash of second-factor codes (`rcpat::codes`). */
function keyedHash(key, domain, parts) {
  const mac = createHmac('sha256', key);
  for (const p of [domain, ...parts]) {
    const bytes = Buffer.from(p, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    mac.update(len).update(bytes);
  }
  return mac.digest('hex');
}

export function backupCodeHash(codeKey, userId, code) {
  return keyedHash(codeKey, 'backup-code', [userId, code]);
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function base32(bytes) {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

export class Admin {
  constructor(store, keys, clock = { nowMs: () => Date.now() }) {
    this.store = store;
    this.keys = keys;
    this.clock = clock;
  }

  /** Creates a user (email verified); answers the id (`id`: one chosen already, as a sharded host does). */
  createUser({ username, email, password, roles = ['user'], name = username, id = randomId(17) }) {
    if (!username || /[\u0000-\u001f\u007f]/.test(username)) throw new StoreError('a username must be non-empty, without control characters');
    if (typeof username !== 'string' || (email != null && typeof email !== 'string') || (password != null && typeof password !== 'string')) {
      throw new StoreError('a username, email and password must be strings');
    }
    if (email != null && /[\u0000-\u001f\u007f\s]/.test(email)) throw new StoreError('an email must not contain spaces or control characters');
    if (this.store.userForLogin('username', username)) throw new StoreError(`user ${username} already exists`);
    this.store.insertUser({
      id,
      username,
      name,
      roles: [...new Set(roles)].sort(),
      createdAt: this.clock.nowMs(),
      emails: email != null && email !== '' ? [{ address: email, verified: true }] : [],
      // Rocket.Chat's cost 10 over the SHA-256 digest clients send.
      passwordBcrypt: password == null ? null : bcrypt.hashSync(passwordDigest(password), 10),
      totp: null,
      emailTwoFactor: false,
      emailCode: null,
      failures: { count: 0, lastFailedAt: 0 },
      tokens: [],
      overrides: {},
    });
    return id;
  }

  #update(userId, fn) {
    return this.store.transaction(() => {
      const u = this.store.user(userId);
      if (!u) throw new StoreError(`no such user ${userId}`);
      const result = fn(u);
      this.store.save(u);
      return result;
    });
  }

  /** Grants (true) or revokes (false) a permission for one user. */
  setPermission(userId, permission, granted) {
    this.#update(userId, (u) => {
      u.overrides[permission] = granted;
    });
  }

  /** Enrols TOTP (20-byte secret, 30 s steps) with 12 backup codes; answers both. */
  enableTotp(userId, { algorithm = 'sha1', digits = 6 } = {}) {
    const secret = base32(randomBytes(20));
    const backupCodes = Array.from({ length: 12 }, () => randomId(8));
    this.#update(userId, (u) => {
      u.totp = {
        secret,
        algorithm,
        digits,
        period: 30,
        lastUsedStep: 0,
        hashedBackupCodes: backupCodes.map((c) => backupCodeHash(this.keys.codeKey, userId, c)),
        spentBackupCodes: [],
      };
    });
    return { secret, backupCodes };
  }

  enableEmailTwoFactor(userId) {
    this.#update(userId, (u) => {
      u.emailTwoFactor = true;
    });
  }

  /** Issues a token outside the API (a session, or a PAT); answers its plaintext. */
  issueToken(userId, { kind = 'login', name = null, bypassTwoFactor = false } = {}) {
    // As rcpat_store's TokenRecord::check: every host refuses the same records.
    if (kind !== 'login' && kind !== 'personal-access-token') throw new StoreError(`unknown token kind ${kind}`);
    if (kind === 'login' && name !== null) throw new StoreError('a login token has no name');
    if (kind === 'personal-access-token' && (typeof name !== 'string' || name === '')) {
      throw new StoreError('a personal access token needs a name');
    }
    const { token, hashed } = newToken();
    this.#update(userId, (u) => {
      if (kind === 'personal-access-token' && u.tokens.some((t) => t.kind === kind && t.name === name)) {
        throw new StoreError(`a token named ${name} exists`);
      }
      u.tokens.push({
        hashedToken: hashed,
        kind,
        name,
        lastTokenPart: token.slice(-6),
        createdAt: this.clock.nowMs(),
        bypassTwoFactor,
        authorizedHash: null,
        authorizedUntil: null,
        lastUsedAt: null,
        expiresAt: null,
      });
    });
    return token;
  }

  users() {
    return this.store.users().map((u) => ({ id: u.id, username: u.username, roles: u.roles }));
  }
}
