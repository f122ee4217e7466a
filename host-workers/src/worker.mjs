// The front Worker: Rocket.Chat's routes over the component, each request
// sent to the Durable Object that holds its user's state. A request with a
// token goes to the object named by its X-User-Id; a login, to the object
// of the user its body names (found in the directory), or to an object of
// that unknown name, which only counts its failed logins. The component
// reads every request itself, here and in the objects: this file bounds
// and routes (routes.mjs, as host-node does) and chooses the object.
//
// Differences from the other hosts, by the platform: the client address is
// CF-Connecting-IP (set by Cloudflare's edge; a local workerd trusts
// whatever the client sends, see README); `Headers` joins a doubled header
// into "a, b", so the credential headers are split back at commas (no token,
// user id, code, method or idempotency key contains one) and a doubled one
// answers 400 as elsewhere, while a doubled User-Agent stays joined.

import { MAX_BODY_BYTES, mediaTypeRefusal, routeOf, tooLarge } from '../../host-node/src/routes.mjs';
import { randomId } from '../../host-node/src/admin.mjs';
import { asciiLower } from '../../host-node/src/storage/store.mjs';
import { callOn, log } from './component.mjs';
import { config } from './config.mjs';
import { frontStore } from './front-store.mjs';
import { timingSafeEqual } from 'node:crypto';

export { UserObject } from './user-object.mjs';
export { Directory } from './directory.mjs';
export { AddressObject } from './address-object.mjs';

/** Headers the component reads at most once whose values never hold a comma. */
const SPLIT = new Set(['x-auth-token', 'x-user-id', 'x-2fa-code', 'x-2fa-method', 'idempotency-key']);

const bytes = (latin1) => Uint8Array.from(latin1, (c) => c.charCodeAt(0));

/** The WIT request: headers (doubled credential headers split back), client address, body, query. */
export function witRequest(request, body) {
  const headers = [];
  for (const [name, value] of request.headers) {
    const parts = SPLIT.has(name) && value.includes(',') ? value.split(',') : [value];
    for (const part of parts) headers.push({ name, value: bytes(part.trim()) });
  }
  const query = new URL(request.url).search.slice(1);
  return { headers, clientAddress: request.headers.get('cf-connecting-ip') ?? '', body, query };
}

/** The body, at most MAX_BODY_BYTES: bytes, or the 413 reply. */
async function readBody(request) {
  if (Number(request.headers.get('content-length') ?? 0) > MAX_BODY_BYTES) return tooLarge();
  if (!request.body) return new Uint8Array(0);
  const chunks = [];
  let size = 0;
  for await (const chunk of request.body) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return tooLarge();
    chunks.push(chunk);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

const respond = (reply, extra = {}) =>
  new Response(reply.body, { status: reply.status, headers: { 'content-type': 'application/json', ...extra } });

const userObject = (env, name) => env.USERS.get(env.USERS.idFromName(name));
const directory = (env) => env.DIRECTORY.get(env.DIRECTORY.idFromName('directory'));

/** The object a request goes to, or the component's own reply when it needs none. */
async function destination(env, route, request) {
  const front = frontStore();
  const ids = request.headers.filter((h) => h.name === 'x-user-id');
  if (route !== 'login' && ids.length === 1) return { object: new TextDecoder().decode(ids[0].value) };
  const reply = callOn(config, front, null, route, request, { quiet: true });
  if (route !== 'login' || !front.identifier) return { reply };
  const { tag, value } = front.identifier;
  const id = await directory(env).lookup(tag, value);
  return { object: id ?? `login:${tag}:${tag === 'email' ? asciiLower(value) : value}` };
}

async function api(request, env, path) {
  // Each user's audit events live in that user's object: no one place
  // holds them all to page through, so this host serves no audit route
  // (the admin route's `auditEvents` op reads one user's).
  if (path === '/api/v1/audit.personalAccessTokens') return respond(routeOf('GET', '/').reply);
  const routed = routeOf(request.method, path);
  if (routed.reply) return respond(routed.reply, routed.allow ? { allow: routed.allow } : {});
  let body = new Uint8Array(0);
  if (routed.method === 'POST') {
    const read = await readBody(request);
    if (!(read instanceof Uint8Array)) return respond(read);
    body = read;
  }
  const refused = mediaTypeRefusal(request.headers.get('content-type'), body.length);
  if (refused) return respond(refused);
  const wit = witRequest(request, body);
  const to = await destination(env, routed.route, wit);
  const reply = to.reply ?? (await userObject(env, to.object).handle(routed.route, wit));
  return respond(reply);
}

/** Constant-time check of the admin route's bearer token. */
function adminAllowed(request) {
  if (!config.adminToken) return false;
  const given = Buffer.from(request.headers.get('authorization') ?? '');
  const want = Buffer.from(`Bearer ${config.adminToken}`);
  return given.length === want.length && timingSafeEqual(given, want);
}

/**
 * POST /_rcpat/admin {op, ...}: an operator's changes (off without the
 * ADMIN_TOKEN secret). createUser claims the names in the directory first,
 * then creates the user in its object, and gives the names back if that fails.
 */
async function admin(request, env) {
  if (!adminAllowed(request)) return respond(routeOf(request.method, '/_rcpat/admin').reply);
  let args;
  try {
    args = await request.json();
  } catch {
    return Response.json({ error: 'the body must be JSON' }, { status: 400 });
  }
  try {
    const answer = await adminOp(env, args);
    return Response.json(answer, { status: answer.error ? 400 : 200 });
  } catch (e) {
    log({ event: 'admin_failed', op: String(args?.op), error: e instanceof Error ? e.message : String(e) });
    return Response.json({ error: 'the operation failed (see the log)' }, { status: 500 });
  }
}

/** One admin operation: {ok} or {error}. */
async function adminOp(env, args) {
  let answer;
  if (args === null || typeof args !== 'object') return { error: 'the body must be a JSON object' };
  if (args.op === 'createUser') {
    const id = randomId(17);
    const emails = args.email ? [args.email] : [];
    answer = await directory(env).claim(id, String(args.username ?? ''), emails, Date.now());
    if (answer.ok) {
      answer = await userObject(env, id).admin('createUser', { ...args, op: undefined, id });
      if (answer.error) await directory(env).release(id);
    }
  } else if (args.op === 'auditEvents') {
    answer = { ok: await userObject(env, String(args.userId)).auditEvents() };
  } else if (args.op === 'outbox') {
    answer = { ok: await userObject(env, String(args.userId)).outbox() };
  } else {
    answer = await userObject(env, String(args.userId)).admin(args.op, args);
  }
  return answer;
}

export default {
  async fetch(request, env) {
    const started = performance.now();
    const path = new URL(request.url).pathname;
    const response = path === '/_rcpat/admin' ? await admin(request, env) : await api(request, env, path);
    // Never a header or a body (they carry secrets), nor a path no route knows.
    const known = path === '/_rcpat/admin' || routeOf('GET', path).route || routeOf('POST', path).route;
    log({ event: 'request', method: request.method, route: known ? path : '(unknown)', status: response.status, latency_ms: performance.now() - started });
    return response;
  },
};
