// The host's two secrets, kept outside storage: the code key (the component
// hashes backup and emailed codes under it: `settings.code-key`) and the
// secret key (TOTP secrets are sealed under it in SQLite). A key file is
// created owner-only and refused when anyone else could read or replace it.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { StoreError } from './storage/store.mjs';

/** Fresh keys for a process whose storage dies with it (memory). */
export function randomKeys() {
  return { codeKey: randomBytes(32), secretKey: randomBytes(32) };
}

/** The keys in `path`, created (mode 0600) if it does not exist. */
export function loadKeys(path) {
  let fd;
  try {
    fd = openSync(path, 'wx', 0o600);
    const keys = randomKeys();
    writeFileSync(fd, JSON.stringify({ codeKey: keys.codeKey.toString('hex'), secretKey: keys.secretKey.toString('hex') }));
    closeSync(fd);
    return keys;
  } catch (e) {
    if (e.code !== 'EEXIST') throw e;
  }
  fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    if ((st.mode & 0o077) !== 0) {
      throw new StoreError(`${path} is readable or writable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    }
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
      throw new StoreError(`${path} belongs to another user`);
    }
    const parsed = JSON.parse(readFileSync(fd, 'utf8'));
    const codeKey = Buffer.from(parsed.codeKey ?? '', 'hex');
    const secretKey = Buffer.from(parsed.secretKey ?? '', 'hex');
    if (codeKey.length !== 32 || secretKey.length !== 32) {
      throw new StoreError(`${path} does not hold two 32-byte keys`);
    }
    return { codeKey, secretKey };
  } finally {
    closeSync(fd);
  }
}

/** AES-256-GCM: "v1:" + base64(nonce ‖ ciphertext ‖ tag). */
export function sealSecret(key, plaintext) {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  const body = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
  return `v1:${Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64')}`;
}

export function openSecret(key, sealed) {
  if (!sealed.startsWith('v1:')) throw new StoreError('a TOTP secret is not sealed');
  const raw = Buffer.from(sealed.slice(3), 'base64');
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  d.setAuthTag(raw.subarray(raw.length - 16));
  return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]).toString('utf8');
}

/**
 * A user document as stored, and back: JSON with the TOTP secret sealed
 * under `keys.secretKey` (the one place both document stores, SQLite here
 * and the Worker's Durable Objects, turn a row into a user and back).
 */
export function userDocuments(keys) {
  return {
    decode(row) {
      if (!row) return undefined;
      const doc = JSON.parse(row.doc);
      if (doc.totp) doc.totp.secret = openSecret(keys.secretKey, doc.totp.secret);
      return doc;
    },
    encode(doc) {
      if (!doc.totp) return JSON.stringify(doc);
      return JSON.stringify({ ...doc, totp: { ...doc.totp, secret: sealSecret(keys.secretKey, doc.totp.secret) } });
    },
  };
}
