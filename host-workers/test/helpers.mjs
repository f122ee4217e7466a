// A local workerd running the Worker (../dist, `npm run build`) for each
// test, with its own state folder, secrets in its environment and a
// recording mail API in this process; the admin route seeds users.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export { PASSWORD, call, generate, listTokens, passwordCode, regenerate, tokenOf, totp } from '../../host-node/test/helpers.mjs';

const here = dirname(dirname(fileURLToPath(import.meta.url)));
export const WORKERD = join(here, 'node_modules', '.bin', 'workerd');

/** A free loopback port (the kernel's pick). */
export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * The mail API the outbox posts to: records each message ({from, to,
 * subject, text}); `down = true` answers 503 (and counts the refusals).
 */
export async function mailRecorder() {
  const rec = { messages: [], refused: 0, down: false };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (rec.down) {
        rec.refused += 1;
        res.writeHead(503).end();
        return;
      }
      rec.messages.push({ authorization: req.headers.authorization, ...JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      res.writeHead(202).end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  rec.url = `http://127.0.0.1:${server.address().port}/send`;
  rec.close = () => new Promise((r) => server.close(r));
  /** Waits until `n` messages arrived (or throws after `ms`). */
  rec.waitFor = async (n, ms = 10_000) => {
    const until = Date.now() + ms;
    while (rec.messages.length < n) {
      if (Date.now() > until) throw new Error(`expected ${n} messages, got ${rec.messages.length}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    return rec.messages;
  };
  return rec;
}

/** Fresh secrets for one deployment. */
export function secrets() {
  return {
    RCPAT_CODE_KEY: randomBytes(32).toString('hex'),
    RCPAT_SECRET_KEY: randomBytes(32).toString('hex'),
    RCPAT_ADMIN_TOKEN: randomBytes(24).toString('hex'),
  };
}

/** Starts workerd; resolves once it answers, or rejects with its output when it exits first. */
export async function startWorkerd({ state, env, port }) {
  if (!existsSync(join(here, 'dist', 'worker.js'))) throw new Error('host-workers/dist is missing: run `npm run build` in host-workers');
  port ??= await freePort();
  const child = spawn(WORKERD, ['serve', join(here, 'workerd.capnp'), '-s', `http=127.0.0.1:${port}`, '-d', `state=${state}`], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  const ready = (async () => {
    const until = Date.now() + 20_000;
    while (Date.now() < until && child.exitCode === null && child.signalCode === null) {
      try {
        await fetch(`${url}/api/v1/me`, { signal: AbortSignal.timeout(2000) });
        return 'ready';
      } catch {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    return 'not answering after 20 s';
  })();
  const first = await Promise.race([ready, exited]);
  if (first !== 'ready') {
    child.kill('SIGKILL');
    throw Object.assign(new Error(`workerd did not start (${JSON.stringify(first)}): ${output}`), { output });
  }
  return {
    url,
    port,
    child,
    output: () => output,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/**
 * A deployment: a state folder, secrets, a mail recorder and a running
 * workerd; `restart()` keeps the state. Call `close()` at the end.
 */
export async function startHost({ env: extra = {} } = {}) {
  const state = mkdtempSync(join(tmpdir(), 'rcpat-workers-'));
  const mail = await mailRecorder();
  const env = { ...secrets(), RCPAT_MAIL_URL: mail.url, RCPAT_MAIL_TOKEN: 'mail-api-token', ...extra };
  const host = { state, mail, env };
  host.workerd = await startWorkerd({ state, env });
  host.url = host.workerd.url;
  host.restart = async () => {
    await host.workerd.stop();
    host.workerd = await startWorkerd({ state, env, port: host.workerd.port });
  };
  host.close = async () => {
    await host.workerd.stop();
    await mail.close();
    rmSync(state, { recursive: true, force: true });
  };
  /** One admin operation; answers its `ok` value or throws its error. */
  host.admin = async (op, args = {}) => {
    const res = await fetch(`${host.url}/_rcpat/admin`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env.RCPAT_ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ op, ...args }),
    });
    const answer = await res.json();
    if (answer.error) throw new Error(answer.error);
    return answer.ok;
  };
  /** A user with a session token: {id, login}. */
  host.user = async (username, { password, email, roles } = {}) => {
    const id = await host.admin('createUser', { username, password, email: email ?? `${username}@example.com`, roles });
    return { id, login: await host.issueToken(id) };
  };
  host.issueToken = (userId, opts = {}) => host.admin('issueToken', { userId, rest: [opts] });
  host.enableTotp = (userId) => host.admin('enableTotp', { userId });
  host.enableEmailTwoFactor = (userId) => host.admin('enableEmailTwoFactor', { userId });
  host.setPermission = (userId, permission, granted) => host.admin('setPermission', { userId, rest: [permission, granted] });
  host.outbox = (userId) => host.admin('outbox', { userId });
  return host;
}
