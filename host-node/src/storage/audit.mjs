// The audit trail beside the documents (issue 28): events are appended by
// the storage call that makes their change, inside its transaction (the
// document store's `transaction`), and read newest first by
// `list-audit-events`. Kinds a flood repeats count on one row per
// (account, address, kind, minute). Three logs with one interface:
//   append(events)                 in the caller's transaction
//   list(filter, offset, count)    {total, events: [{event, hostId, count}]}
//   prune(before, batch)           removes events older than `before`; how many
// memoryAuditLog (memory.mjs), sqlAuditLog over better-sqlite3 (sqlite.mjs)
// or a Durable Object's `sql.exec` (host-workers), the same SQL for both.
//
// Retention: these hosts have no thread to prune on (Node's one event loop;
// a Durable Object wakes only for requests and alarms), so every 64th
// append also removes at most 256 events older than `retentionMs` before
// the appended one, in the same transaction: bounded work (well under a
// millisecond) on one request in 64, and four times faster than the trail
// grows, so it never falls behind.

/** Days events are kept unless configured (`audit-retention-days`). */
export const DEFAULT_RETENTION_MS = 365 * 86_400_000;
const PRUNE_EVERY = 64;
const PRUNE_AT_MOST = 256;

/** The kinds counted per minute (`rcpat::model::AuditKind::aggregated`). */
export const AGGREGATED = new Set(['login-failed', 'login-blocked', 'two-factor-locked-out', 'token-expired-on-use']);

/** The table and its indexes (host-example's SQLite schema 17, the same columns). */
export const AUDIT_SCHEMA = `
  CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    token_name TEXT,
    token_last_part TEXT,
    method TEXT,
    address TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    host_id TEXT NOT NULL DEFAULT '',
    count INTEGER NOT NULL DEFAULT 1,
    minute INTEGER
  );
  CREATE INDEX audit_by_time ON audit_events (at);
  CREATE INDEX audit_by_account ON audit_events (account, at);
  CREATE UNIQUE INDEX audit_per_minute ON audit_events (account, address, kind, minute)
    WHERE minute IS NOT NULL;
`;

const minuteOf = (e) => (AGGREGATED.has(e.kind) ? Math.floor(Number(e.at) / 60_000) : null);

/** The WIT `stored-audit-event` of a row. */
function stored(r) {
  return {
    event: {
      at: BigInt(r.at),
      account: r.account,
      kind: r.kind,
      tokenName: r.token_name ?? undefined,
      tokenLastPart: r.token_last_part ?? undefined,
      method: r.method ?? undefined,
      clientAddress: r.address,
      userAgent: r.user_agent,
    },
    hostId: r.host_id,
    count: r.count,
  };
}

/**
 * The log over SQL: `db` = {run(sql, ...args) -> changes, all(sql, ...args) -> rows}.
 * `hostId` is stamped on every event appended.
 */
export function sqlAuditLog(db, hostId = '', retentionMs = DEFAULT_RETENTION_MS) {
  let appended = 0;
  const log = {
    append(events) {
      for (const e of events ?? []) {
        db.run(
          `INSERT INTO audit_events (at, account, kind, token_name, token_last_part, method, address, user_agent, host_id, minute)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (account, address, kind, minute) WHERE minute IS NOT NULL DO UPDATE SET count = count + 1`,
          Number(e.at), e.account, e.kind, e.tokenName ?? null, e.tokenLastPart ?? null, e.method ?? null,
          e.clientAddress, e.userAgent, hostId, minuteOf(e),
        );
        if (++appended % PRUNE_EVERY === 0 && retentionMs > 0) log.prune(Number(e.at) - retentionMs, PRUNE_AT_MOST, true);
      }
    },
    list(filter, offset, count) {
      const conditions = [];
      const args = [];
      if (filter?.account !== undefined) conditions.push('account = ?') && args.push(filter.account);
      if (filter?.since !== undefined) conditions.push('at >= ?') && args.push(Number(filter.since));
      if (filter?.kind !== undefined) conditions.push('kind = ?') && args.push(filter.kind);
      const where = conditions.length ? `WHERE ${conditions.join(' AND ')}` : '';
      const total = db.all(`SELECT count(*) AS n FROM audit_events ${where}`, ...args)[0].n;
      const rows = db.all(
        `SELECT * FROM audit_events ${where} ORDER BY at DESC, id DESC LIMIT ? OFFSET ?`,
        ...args, count, offset,
      );
      return { total, events: rows.map(stored) };
    },
    /** Removes events older than `before`, `batch` per statement (`once`: one batch only). */
    prune(before, batch, once = false) {
      let removed = 0;
      for (;;) {
        const n = db.run(
          'DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < ? ORDER BY at LIMIT ?)',
          before, batch,
        );
        removed += n;
        if (once || n < batch) return removed;
      }
    },
  };
  return log;
}

/** The log in memory (its rows in the order stored). */
export function memoryAuditLog(hostId = '', retentionMs = DEFAULT_RETENTION_MS) {
  const rows = [];
  let id = 0;
  const log = {
    append(events) {
      for (const e of events ?? []) {
        const minute = minuteOf(e);
        const same = minute !== null &&
          rows.find((r) => r.minute === minute && r.kind === e.kind && r.account === e.account && r.address === e.clientAddress);
        if (same) {
          same.count += 1;
          continue;
        }
        rows.push({
          id: ++id, at: Number(e.at), account: e.account, kind: e.kind, token_name: e.tokenName,
          token_last_part: e.tokenLastPart, method: e.method, address: e.clientAddress,
          user_agent: e.userAgent, host_id: hostId, count: 1, minute,
        });
        if (id % PRUNE_EVERY === 0 && retentionMs > 0) log.prune(Number(e.at) - retentionMs);
      }
    },
    list(filter, offset, count) {
      const found = rows
        .filter((r) =>
          (filter?.account === undefined || r.account === filter.account) &&
          (filter?.since === undefined || r.at >= Number(filter.since)) &&
          (filter?.kind === undefined || r.kind === filter.kind))
        .sort((a, b) => b.at - a.at || b.id - a.id);
      return { total: found.length, events: found.slice(offset, offset + count).map(stored) };
    },
    prune(before) {
      const kept = rows.filter((r) => r.at >= before);
      const removed = rows.length - kept.length;
      rows.splice(0, rows.length, ...kept);
      return removed;
    },
  };
  return log;
}
