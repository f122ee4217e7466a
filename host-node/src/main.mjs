#!/usr/bin/env node
// The Node host's command line:
//   node src/main.mjs serve [--db FILE | --memory] [--listen HOST:PORT] [--outbox DIR]
//                           [--host-id ID] [--audit-retention-days N]
//   node src/main.mjs users add --db FILE --username NAME [--email ADDR] [--password-stdin] [--roles a,b]
//   node src/main.mjs users enable-totp|enable-email-2fa|grant|revoke --db FILE --username NAME
// Run `npm run build` once first (it transpiles the component into gen/).

import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { Admin } from './admin.mjs';
import { Component } from './component.mjs';
import { loadKeys, randomKeys } from './keys.mjs';
import { outbox } from './outbox.mjs';
import { createServer } from './server.mjs';
import { openMemory } from './storage/memory.mjs';
import { openSqlite } from './storage/sqlite.mjs';

const PAT_PERMISSION = 'create-personal-access-tokens';

const options = {
  db: { type: 'string' },
  memory: { type: 'boolean' },
  listen: { type: 'string', default: '127.0.0.1:3000' },
  outbox: { type: 'string' },
  username: { type: 'string' },
  email: { type: 'string' },
  'password-stdin': { type: 'boolean' },
  roles: { type: 'string', default: 'user' },
  'host-id': { type: 'string' },
  'audit-retention-days': { type: 'string', default: '365' },
};

/** The audit trail's options: the id stamped on events, and their retention. */
function auditOptions(values) {
  const hostId = values['host-id'] ?? hostname();
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(hostId)) throw new Error('--host-id must be 1 to 64 of A-Z, a-z, 0-9, ".", "_" and "-"');
  const days = values['audit-retention-days'];
  if (!/^[0-9]{1,5}$/.test(days)) throw new Error('--audit-retention-days must be a number of days (0: forever)');
  return { hostId, retentionMs: Number(days) * 86_400_000 };
}

/** Opens the store and its keys: SQLite (keys in FILE.keys) or memory. */
function open(values) {
  if (values.memory || !values.db) {
    if (!values.memory) throw new Error('give --db FILE (SQLite) or --memory');
    return { store: openMemory(auditOptions(values)), keys: randomKeys() };
  }
  const keys = loadKeys(`${values.db}.keys`);
  return { store: openSqlite(values.db, keys, auditOptions(values)), keys };
}

const log = (fields) => console.log(JSON.stringify({ time: new Date().toISOString(), ...fields }));

function main(argv) {
  const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true });
  process.umask(0o077); // everything this process creates is owner-only
  const [command, sub] = positionals;
  if (command === 'serve') {
    const { store, keys } = open(values);
    const mail = outbox(values.outbox ?? (values.db ? `${values.db}.outbox` : 'outbox'));
    const component = new Component({ store, mail, keys, log });
    const server = createServer(component, { log });
    const at = values.listen.lastIndexOf(':');
    const host = values.listen.slice(0, at);
    const port = Number(values.listen.slice(at + 1));
    server.listen(port, host, () => {
      const a = server.address();
      log({ event: 'listening', address: `${a.address}:${a.port}`, storage: store.kind, outbox: mail.dir });
    });
    const stop = () => server.close(() => {
      store.close();
      process.exit(0);
    });
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    return;
  }
  if (command === 'users') {
    if (!values.db) throw new Error('users commands need --db FILE');
    const { store, keys } = open(values);
    const admin = new Admin(store, keys);
    const id = () => {
      const u = store.userForLogin('username', values.username ?? '');
      if (!u) throw new Error(`no user ${values.username}`);
      return u.id;
    };
    switch (sub) {
      case 'add': {
        const password = values['password-stdin'] ? readFileSync(0, 'utf8').split(/\r?\n/)[0] : undefined;
        const userId = admin.createUser({
          username: values.username,
          email: values.email,
          password,
          roles: values.roles.split(',').filter(Boolean),
        });
        console.log(`created ${values.username} (${userId})`);
        break;
      }
      case 'enable-totp': {
        const { secret, backupCodes } = admin.enableTotp(id());
        console.log(`TOTP secret (base32): ${secret}\nbackup codes: ${backupCodes.join(' ')}`);
        break;
      }
      case 'enable-email-2fa':
        admin.enableEmailTwoFactor(id());
        break;
      case 'grant':
      case 'revoke':
        admin.setPermission(id(), PAT_PERMISSION, sub === 'grant');
        break;
      default:
        throw new Error(`unknown users command ${sub}`);
    }
    store.close();
    return;
  }
  throw new Error('usage: main.mjs serve|users ... (see the comment at the top of src/main.mjs)');
}

try {
  main(process.argv.slice(2));
} catch (e) {
  console.error(`error: ${e.message}`);
  process.exit(1);
}
