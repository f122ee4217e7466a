// Rocket.Chat's routes over node:http, as host-example's `serve` answers
// them: the HTTP layer only routes and bounds (404, 405 with Allow, 413,
// 415, body timeouts) and hands headers, client address and body to the
// component, which decides everything else. One log line per request:
// route, status, latency; never a header or a body (they carry secrets).

import http from 'node:http';
import { ENDPOINTS } from './component.mjs';

/** Longest accepted body (`rcpat::reply::MAX_BODY_BYTES`; the PAT routes bound theirs tighter inside). */
export const MAX_BODY_BYTES = 64 * 1024;

function apiError(status, reason, type) {
  return { status, body: JSON.stringify({ success: false, error: `${reason} [${type}]`, errorType: type }) };
}

const isJson = (ct) => (ct ?? '').split(';')[0].trim().toLowerCase() === 'application/json';

/** The WIT request: raw header bytes as received (duplicates kept), the peer, the body. */
function witRequest(req, body) {
  const headers = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    headers.push({ name: req.rawHeaders[i], value: new Uint8Array(Buffer.from(req.rawHeaders[i + 1], 'latin1')) });
  }
  let address = req.socket.remoteAddress ?? '';
  if (address.startsWith('::ffff:')) address = address.slice(7);
  return { headers, clientAddress: address, body: new Uint8Array(body) };
}

/** Reads a body of at most `limit` bytes: a Buffer, or an error reply. */
function readBody(req, limit) {
  return new Promise((resolve) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      resolve(apiError(413, `The request body exceeds ${limit} bytes`, 'error-request-too-large'));
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        resolve(apiError(413, `The request body exceeds ${limit} bytes`, 'error-request-too-large'));
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', () => resolve(null));
  });
}

export function createServer(component, { log = () => {} } = {}) {
  const server = http.createServer(async (req, res) => {
    const started = process.hrtime.bigint();
    const path = new URL(req.url ?? '/', 'http://host').pathname;
    const route = ENDPOINTS[path];
    let reply;
    if (!route) {
      reply = apiError(404, 'The endpoint was not found', 'error-not-found');
    } else if (req.method !== route[0]) {
      reply = apiError(405, `This endpoint only accepts ${route[0]}`, 'error-method-not-allowed');
      res.setHeader('allow', route[0]);
    } else {
      let body = Buffer.alloc(0);
      if (route[0] === 'POST') {
        const read = await readBody(req, MAX_BODY_BYTES);
        if (read === null) return; // the client went away
        if (Buffer.isBuffer(read)) body = read;
        else reply = read;
      }
      if (!reply && body.length > 0 && !isJson(req.headers['content-type'])) {
        reply = apiError(415, 'The request body must be sent as application/json', 'error-unsupported-media-type');
      }
      reply ??= component.call(route[1], witRequest(req, body));
    }
    res.writeHead(reply.status, { 'content-type': 'application/json' });
    res.end(reply.body);
    log({
      event: 'request',
      method: req.method,
      route: route ? path : '(unknown)',
      status: reply.status,
      latency_us: Number((process.hrtime.bigint() - started) / 1000n),
    });
  });
  // A slow client cannot hold a request open (host-example: 10 s).
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  return server;
}
