// A real server on a loopback port for each test, over memory or SQLite.

import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Admin, passwordDigest } from '../src/admin.mjs';
import { Component, systemClock } from '../src/component.mjs';
import { loadKeys, randomKeys } from '../src/keys.mjs';
import { outbox } from '../src/outbox.mjs';
import { createServer } from '../src/server.mjs';
import { openMemory } from '../src/storage/memory.mjs';
import { openSqlite } from '../src/storage/sqlite.mjs';

export const PASSWORD = 'correct horse battery staple';
export const STORES = ['memory', 'sqlite'];

/** Starts a server; `kind` is 'memory' or 'sqlite'. Call `close()` at the end. */
export async function startHost(kind = 'memory', { dir } = {}) {
  const folder = dir ?? mkdtempSync(join(tmpdir(), 'rcpat-node-'));
  const keys = kind === 'sqlite' ? loadKeys(join(folder, 'db.keys')) : randomKeys();
  const audit = { hostId: 'node-test' };
  const store = kind === 'sqlite' ? openSqlite(join(folder, 'db.sqlite'), keys, audit) : openMemory(audit);
  const mail = outbox(join(folder, 'outbox'));
  const clock = systemClock();
  const logs = [];
  const component = new Component({ store, mail, keys, clock, log: (l) => logs.push(l) });
  const server = createServer(component, { log: (l) => logs.push(l) });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    store,
    keys,
    mail,
    clock,
    logs,
    component,
    folder,
    admin: new Admin(store, keys, clock),
    async close({ keepDir = false } = {}) {
      await new Promise((r) => server.close(r));
      server.closeAllConnections?.();
      store.close();
      if (!keepDir && !dir) rmSync(folder, { recursive: true, force: true });
    },
  };
}

/** A user with a session token: {id, login}; `password` optional. */
export function user(host, username, { password, email, roles } = {}) {
  const id = host.admin.createUser({ username, password, email: email ?? `${username}@example.com`, roles });
  return { id, login: host.admin.issueToken(id) };
}

/** One request; answers {status, body (text), headers}. */
export async function call(host, method, path, { user: u, token, code, twoFactorMethod, body, headers = {} } = {}) {
  const h = { ...headers };
  if (u) {
    h['x-user-id'] = u.id;
    h['x-auth-token'] = token ?? u.login;
  }
  if (code !== undefined) h['x-2fa-code'] = code;
  if (twoFactorMethod !== undefined) h['x-2fa-method'] = twoFactorMethod;
  if (body !== undefined && h['content-type'] === undefined) h['content-type'] = 'application/json';
  const res = await fetch(host.url + path, { method, headers: h, body });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

export const regenerate = (host, u, name, opts = {}) =>
  call(host, 'POST', '/api/v1/users.regeneratePersonalAccessToken', {
    user: u,
    body: JSON.stringify({ tokenName: name }),
    ...opts,
  });

export const generate = (host, u, name, opts = {}) =>
  call(host, 'POST', '/api/v1/users.generatePersonalAccessToken', {
    user: u,
    body: JSON.stringify({ tokenName: name, bypassTwoFactor: opts.bypassTwoFactor ?? false }),
    ...opts,
  });

export const listTokens = (host, u, opts = {}) =>
  call(host, 'GET', '/api/v1/users.getPersonalAccessTokens', { user: u, ...opts });

/** The password second factor, as clients send it. */
export const passwordCode = (password = PASSWORD) => passwordDigest(password);

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 6238 TOTP (SHA-1, 6 digits, 30 s) of a base32 secret at `ms`. */
export function totp(secret, ms = Date.now(), { digits = 6, period = 30, algorithm = 'sha1' } = {}) {
  let bits = '';
  for (const c of secret.replace(/=+$/, '').toUpperCase()) bits += BASE32.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(ms / 1000 / period)));
  const mac = createHmac(algorithm, key).update(counter).digest();
  const at = mac[mac.length - 1] & 0xf;
  const n = (mac.readUInt32BE(at) & 0x7fffffff) % 10 ** digits;
  return String(n).padStart(digits, '0');
}

/** `{"token":"...","success":true}`'s token. */
export const tokenOf = (reply) => JSON.parse(reply.body).token;
