// Rocket.Chat's routes over node:http, as host-example's `serve` answers
// them: the HTTP layer only routes and bounds (404, 405 with Allow, 413,
// 415, body timeouts) and hands headers, client address and body to the
// component, which decides everything else. One log line per request:
// route, status, latency; never a header or a body (they carry secrets).

import http from 'node:http';
import { MAX_BODY_BYTES, mediaTypeRefusal, routeOf, tooLarge } from './routes.mjs';

export { MAX_BODY_BYTES };

/** The WIT request: raw header bytes as received (duplicates kept), the peer, the body, the query. */
function witRequest(req, body) {
  const headers = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    headers.push({ name: req.rawHeaders[i], value: new Uint8Array(Buffer.from(req.rawHeaders[i + 1], 'latin1')) });
  }
  let address = req.socket.remoteAddress ?? '';
  if (address.startsWith('::ffff:')) address = address.slice(7);
  const url = req.url ?? '';
  const query = url.includes('?') ? url.slice(url.indexOf('?') + 1) : '';
  return { headers, clientAddress: address, body: new Uint8Array(body), query };
}

/** Reads a body of at most `limit` bytes: a Buffer, or an error reply. */
function readBody(req, limit) {
  return new Promise((resolve) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      resolve(tooLarge());
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        resolve(tooLarge());
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
    const routed = routeOf(req.method, path);
    let reply = routed.reply;
    if (routed.allow) res.setHeader('allow', routed.allow);
    if (!reply) {
      let body = Buffer.alloc(0);
      if (routed.method === 'POST') {
        const read = await readBody(req, MAX_BODY_BYTES);
        if (read === null) return; // the client went away
        if (Buffer.isBuffer(read)) body = read;
        else reply = read;
      }
      reply ??= mediaTypeRefusal(req.headers['content-type'], body.length);
      reply ??= component.call(routed.route, witRequest(req, body));
    }
    res.writeHead(reply.status, { 'content-type': 'application/json' });
    res.end(reply.body);
    log({
      event: 'request',
      method: req.method,
      route: routed.route ? path : '(unknown)',
      status: reply.status,
      latency_us: Number((process.hrtime.bigint() - started) / 1000n),
    });
  });
  // A slow client cannot hold a request open (host-example: 10 s).
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  return server;
}
