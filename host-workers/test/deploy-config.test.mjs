// wrangler.jsonc, the deploy configuration, checked the only way this
// machine can (no Cloudflare account here): workerd reads it as wrangler
// would, bundles src/worker.mjs with esbuild, binds the Durable Object
// classes and applies the migrations. Without secrets it refuses to start;
// with them (given here as local vars, as `wrangler secret put` would on
// Cloudflare) it serves a regeneration.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { WORKERD, freePort, regenerate, secrets, tokenOf } from './helpers.mjs';

const here = dirname(dirname(fileURLToPath(import.meta.url)));
/** The JSON of a .jsonc file (its comments are whole lines starting with //). */
const jsonc = (text) => JSON.parse(text.replace(/^\s*\/\/.*$/gm, ''));

/** Runs workerd on a wrangler config in `dir`; answers {url, child, output(), stop()}, or its output if it exits first. */
async function serve(dir, config) {
  const port = await freePort();
  const child = spawn(WORKERD, ['serve', config, '-s', `http=127.0.0.1:${port}`], {
    cwd: dir,
    env: { PATH: `${join(here, 'node_modules', '.bin')}:${process.env.PATH}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise((r) => child.once('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + 30_000;
  while (Date.now() < until && child.exitCode === null) {
    try {
      await fetch(`${url}/api/v1/me`);
      return { url, output: () => output, stop: () => (child.kill(), exited) };
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  child.kill('SIGKILL');
  return { exitCode: await exited, output };
}

test('wrangler.jsonc without its secrets: workerd refuses to start', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rcpat-wrangler-'));
  try {
    const config = jsonc(readFileSync(join(here, 'wrangler.jsonc'), 'utf8'));
    config.main = join(here, config.main);
    writeFileSync(join(dir, 'wrangler.json'), JSON.stringify(config));
    const r = await serve(dir, 'wrangler.json');
    assert.notEqual(r.exitCode, undefined, 'it served');
    assert.match(r.output, /CODE_KEY must be 64 hex digits \(32 bytes\); refusing to start/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('wrangler.jsonc with its secrets: bindings and migrations serve a regeneration', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rcpat-wrangler-'));
  const s = secrets();
  const config = jsonc(readFileSync(join(here, 'wrangler.jsonc'), 'utf8'));
  config.main = join(here, config.main);
  config.vars = {
    ...config.vars,
    CODE_KEY: s.RCPAT_CODE_KEY,
    SECRET_KEY: s.RCPAT_SECRET_KEY,
    ADMIN_TOKEN: s.RCPAT_ADMIN_TOKEN,
    MAIL_URL: 'http://127.0.0.1:9/unused',
  };
  writeFileSync(join(dir, 'wrangler.json'), JSON.stringify(config), { mode: 0o600 });
  const host = await serve(dir, 'wrangler.json');
  try {
    assert.ok(host.url, host.output);
    const admin = async (op, args) => {
      const res = await fetch(`${host.url}/_rcpat/admin`, {
        method: 'POST',
        headers: { authorization: `Bearer ${s.RCPAT_ADMIN_TOKEN}` },
        body: JSON.stringify({ op, ...args }),
      });
      return (await res.json()).ok;
    };
    const id = await admin('createUser', { username: 'wendy' });
    assert.match(id, /^[0-9A-Za-z]{17}$/);
    const pat = await admin('issueToken', { userId: id, rest: [{ kind: 'personal-access-token', name: 'ci', bypassTwoFactor: true }] });
    const r = await regenerate(host, { id, login: pat }, 'ci');
    assert.equal(r.status, 200, r.body);
    assert.match(tokenOf(r), /^[A-Za-z0-9_-]{43}$/);
  } finally {
    await host.stop?.();
    rmSync(dir, { recursive: true, force: true });
  }
});
