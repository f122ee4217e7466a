// The document store of host-node's storage rules (host-node/src/storage/
// rules.mjs, used as is) over one Durable Object's SQLite storage: the same
// tables and documents as host-node's sqlite.mjs, through the object's
// synchronous `sql.exec`, with `transactionSync` for atomicity (nested calls
// become savepoints). A user's object holds that one user; an object named
// after an unknown login holds only its failed-login counts.
//
// Nothing is written before the first write: reads of an object without a
// schema answer "nothing here", so a made-up X-User-Id leaves no object
// behind. TOTP secrets are sealed under the host's secret key (host-node's
// keys.mjs) before they reach storage.

import { asciiLower, StoreError } from '../../host-node/src/storage/store.mjs';
import { userDocuments } from '../../host-node/src/keys.mjs';
import { schema } from './schema.mjs';
import { sqlAuditLog } from '../../host-node/src/storage/audit.mjs';

/** The store of the object whose state is `storage` (ctx.storage); `hostId` stamps its audit events. */
export function objectStore(storage, keys, hostId = '') {
  const sql = storage.sql;
  const shape = schema(storage);
  const rows = (query, ...args) => sql.exec(query, ...args).toArray();
  const first = (query, ...args) => (shape.exists() ? rows(query, ...args)[0] : undefined);

  const { decode, encode } = userDocuments(keys);
  const transaction = (fn) => {
    shape.ensure();
    return storage.transactionSync(fn);
  };

  // The object's own audit trail, in the same transactions as its documents.
  const audit = sqlAuditLog(
    {
      run(query, ...args) {
        shape.ensure();
        return sql.exec(query, ...args).rowsWritten;
      },
      all: (query, ...args) => (shape.exists() ? rows(query, ...args) : []),
    },
    hostId,
  );

  return {
    kind: 'durable-object',
    audit,
    schema: shape,
    transaction,
    user: (id) => decode(first('SELECT doc FROM users WHERE id = ?', id)),
    save: (doc) => void sql.exec('UPDATE users SET doc = ? WHERE id = ?', encode(doc), doc.id),
    userForLogin(tag, value) {
      return decode(
        tag === 'username'
          ? first('SELECT doc FROM users WHERE username = ? ORDER BY created_at, id LIMIT 1', value)
          : first(
              `SELECT u.doc FROM user_emails e JOIN users u ON u.id = e.user_id
               WHERE e.address_lower = ? ORDER BY u.created_at, u.id LIMIT 1`,
              asciiLower(value),
            ),
      );
    },
    count(kind, key) {
      const r = first('SELECT count, last_at FROM login_counts WHERE kind = ? AND key = ?', kind, key);
      return r ? { count: r.count, lastAt: r.last_at } : undefined;
    },
    setCount(kind, key, c) {
      shape.ensure();
      sql.exec(
        `INSERT INTO login_counts (kind, key, count, last_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (kind, key) DO UPDATE SET count = excluded.count, last_at = excluded.last_at`,
        kind,
        key,
        c.count,
        c.lastAt,
      );
    },
    deleteCount(kind, key) {
      if (shape.exists()) sql.exec('DELETE FROM login_counts WHERE kind = ? AND key = ?', kind, key);
    },
    insertUser(doc) {
      transaction(() => {
        if (rows('SELECT 1 FROM users').length > 0) throw new StoreError('this object already holds a user');
        sql.exec('INSERT INTO users (id, username, created_at, doc) VALUES (?, ?, ?, ?)', doc.id, doc.username, doc.createdAt, encode(doc));
        for (const e of doc.emails) {
          sql.exec('INSERT OR IGNORE INTO user_emails (address_lower, user_id) VALUES (?, ?)', asciiLower(e.address), doc.id);
        }
      });
    },
    users: () => (shape.exists() ? rows('SELECT doc FROM users ORDER BY username').map(decode) : []),
    close() {},
  };
}
