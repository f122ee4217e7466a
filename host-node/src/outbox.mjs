// Mail as files: each message one owner-only .eml file in a folder, for a
// local relay or an operator to pick up (host-example's `--outbox` does
// the same). Header injection is refused: no CR or LF in an address or the
// subject (checkMessage, which host-workers' outbox shares).

import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

/** Refuses a message that could inject a header (a line break in an address or the subject) or has no recipient. */
export function checkMessage({ to, subject }) {
  for (const field of [...to, subject]) {
    if (/[\r\n]/.test(field)) throw new Error('a header field holds a line break');
  }
  if (to.length === 0) throw new Error('no recipient');
}

export function outbox(dir, from = 'rcpat@localhost') {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return {
    dir,
    send({ to, subject, text }) {
      checkMessage({ to, subject });
      const name = `${Date.now()}-${randomBytes(6).toString('hex')}.eml`;
      const message = `From: ${from}\r\nTo: ${to.join(', ')}\r\nSubject: ${subject}\r\n` +
        `Content-Type: text/plain; charset=utf-8\r\n\r\n${text.replace(/\r?\n/g, '\r\n')}\r\n`;
      writeFileSync(join(dir, name), message, { mode: 0o600, flag: 'wx' });
    },
    /** The messages so far, oldest first (for tests and the demo). */
    messages() {
      return readdirSync(dir)
        .filter((f) => f.endsWith('.eml'))
        .sort()
        .map((f) => readFileSync(join(dir, f), 'utf8'));
    },
  };
}
