// Mail as a transactional outbox: `mail.send` inserts the message (sealed
// under the host's secret key: it carries a second-factor code) into the
// user's object, inside the same storage transaction as the code it
// carries, so a stored code and its mail commit together or not at all.
// The object's alarm then delivers it through `fetch` to the deployment's
// HTTP mail API and deletes it only after a 2xx; a failure keeps it for a
// retry with exponential back-off. At least once, never lost.

import { checkMessage } from '../../host-node/src/outbox.mjs';
import { openSecret, sealSecret } from '../../host-node/src/keys.mjs';

/** Longest wait between two attempts at one message. */
const MAX_BACKOFF_MS = 60 * 60 * 1000;
/** Messages one alarm delivers before it yields (the rest: the next alarm, at once). */
const BATCH = 16;
/** A mail API that does not answer within this is a failed attempt. */
const ATTEMPT_TIMEOUT_MS = 10_000;

/** Adds `message` ({to, subject, text}) to the outbox, due now. */
export function enqueue(storage, secretKey, message, now) {
  checkMessage(message);
  const sealed = sealSecret(secretKey, JSON.stringify({ to: message.to, subject: message.subject, text: message.text }));
  storage.sql.exec('INSERT INTO outbox (sealed, attempts, next_at, created_at) VALUES (?, 0, ?, ?)', sealed, now, now);
}

/** When the next message is due, or null when the outbox is empty. */
export function nextDue(storage) {
  const row = storage.sql.exec('SELECT min(next_at) AS due FROM outbox').toArray()[0];
  return row?.due ?? null;
}

/** The wait after the `attempts`-th failure: base · 2^(attempts-1), at most an hour. */
export function backoffMs(baseMs, attempts) {
  return Math.min(MAX_BACKOFF_MS, baseMs * 2 ** Math.min(attempts - 1, 30));
}

/**
 * Delivers the messages due at `now` through `mail` ({url, token, from,
 * retryBaseMs}): one POST of {from, to, subject, text} as JSON each.
 * Answers what happened, for the log: {delivered, failed}.
 */
export async function deliverDue(storage, secretKey, mail, now) {
  const due = storage.sql
    .exec('SELECT id, sealed, attempts FROM outbox WHERE next_at <= ? ORDER BY id LIMIT ?', now, BATCH)
    .toArray();
  let delivered = 0;
  let failed = 0;
  for (const row of due) {
    const message = JSON.parse(openSecret(secretKey, row.sealed));
    let ok = false;
    try {
      const headers = { 'content-type': 'application/json' };
      if (mail.token) headers.authorization = `Bearer ${mail.token}`;
      const res = await fetch(mail.url, {
        method: 'POST',
        headers,
        body: JSON.stringify({ from: mail.from, ...message }),
        signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
      });
      await res.body?.cancel();
      ok = res.ok;
    } catch {
      ok = false;
    }
    if (ok) {
      storage.sql.exec('DELETE FROM outbox WHERE id = ?', row.id);
      delivered += 1;
    } else {
      const attempts = row.attempts + 1;
      storage.sql.exec(
        'UPDATE outbox SET attempts = ?, next_at = ? WHERE id = ?',
        attempts,
        Date.now() + backoffMs(mail.retryBaseMs, attempts),
        row.id,
      );
      failed += 1;
    }
  }
  return { delivered, failed };
}
