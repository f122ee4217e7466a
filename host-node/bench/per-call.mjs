// Per-call cost of the component in Node (jco), in-process, no HTTP: the
// figures README.md's "Hosts" section quotes beside host-example's.
//   npm run bench [-- --calls N]
// Cases: a fresh instance (what a host pays to instantiate), a 401, and a
// self-rotating regeneration on the kept instance over memory and over
// durable SQLite (WAL, synchronous=FULL: one fsync per regeneration).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Admin } from '../src/admin.mjs';
import { Component } from '../src/component.mjs';
import { loadKeys, randomKeys } from '../src/keys.mjs';
import { openMemory } from '../src/storage/memory.mjs';
import { openSqlite } from '../src/storage/sqlite.mjs';

const { values } = parseArgs({ options: { calls: { type: 'string', default: '20000' } } });
const CALLS = Number(values.calls);
const enc = (s) => new Uint8Array(Buffer.from(s));
const mail = { send() {} };

function time(n, fn) {
  for (let i = 0; i < Math.min(n, 1000); i++) fn(); // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  return Number(process.hrtime.bigint() - t0) / 1000 / n;
}

function rotation(store, keys) {
  const component = new Component({ store, mail, keys });
  const admin = new Admin(store, keys);
  const id = admin.createUser({ username: `bench${Math.random()}` });
  let token = admin.issueToken(id, { kind: 'personal-access-token', name: 'ci' });
  const body = enc('{"tokenName":"ci"}');
  return {
    component,
    id,
    rotate() {
      const r = component.call('regenerate-personal-access-token', {
        headers: [
          { name: 'x-user-id', value: enc(id) },
          { name: 'x-auth-token', value: enc(token) },
        ],
        clientAddress: '127.0.0.1',
        body,
        query: '',
      });
      if (r.status !== 200) throw new Error(`regeneration failed: ${r.body}`);
      token = JSON.parse(r.body).token;
    },
  };
}

const rows = [];
const memKeys = randomKeys();
const mem = rotation(openMemory(), memKeys);
rows.push(['instantiation (fresh instance, core modules compiled once)', time(Math.min(CALLS, 2000), () => {
  mem.component.instance = null;
  mem.component.endpoints();
})]);
const unknown = {
  headers: [
    { name: 'x-user-id', value: enc(mem.id) },
    { name: 'x-auth-token', value: enc('RScctEHSmLGZGywfIhWyRpyofhKOiMoUIpimhvheU3f') },
  ],
  clientAddress: '127.0.0.1',
  body: enc('{"tokenName":"ci"}'),
  query: '',
};
rows.push(['401 (unknown token), kept instance', time(CALLS, () => mem.component.call('regenerate-personal-access-token', unknown))]);
rows.push(['regeneration, kept instance, memory store', time(CALLS, mem.rotate)]);
const memoryAfter = mem.component.memoryBytes();

const dir = mkdtempSync(join(tmpdir(), 'rcpat-bench-'));
try {
  const keys = loadKeys(join(dir, 'db.keys'));
  const sql = rotation(openSqlite(join(dir, 'db.sqlite'), keys), keys);
  rows.push(['regeneration, kept instance, SQLite (durable)', time(Math.min(CALLS, 2000), sql.rotate)]);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log(`Node ${process.version}, ${CALLS} calls per case (SQLite: ${Math.min(CALLS, 2000)})\n`);
console.log('| case | per call |\n|---|---|');
for (const [name, us] of rows) console.log(`| ${name} | ${us.toFixed(1)} µs |`);
console.log(`\nguest memory after the memory-store run: ${memoryAfter} bytes`);
