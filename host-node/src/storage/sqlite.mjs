// SQLite documents through better-sqlite3 (synchronous, as jco's imports
// must be on Node 20): one row per user holding its JSON document, indexed
// columns for the login lookups, and one row per failed-login count. Each
// storage call is one `BEGIN IMMEDIATE` transaction; WAL with
// synchronous=FULL, so an answered write is on disk. TOTP secrets are
// sealed with AES-256-GCM under the host's secret key (keys.mjs) before they
// reach the file.

import Database from 'better-sqlite3';
import { closeSync, openSync } from 'node:fs';
import { asciiLower } from './store.mjs';
import { userDocuments } from '../keys.mjs';
import { AUDIT_SCHEMA, sqlAuditLog } from './audit.mjs';

const SCHEMA_VERSION = 2;
const MIGRATIONS = [
  `CREATE TABLE users (
     id TEXT PRIMARY KEY,
     username TEXT NOT NULL UNIQUE,
     created_at INTEGER NOT NULL,
     doc TEXT NOT NULL
   );
   CREATE TABLE user_emails (
     address_lower TEXT NOT NULL,
     user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
     PRIMARY KEY (address_lower, user_id)
   );
   CREATE TABLE login_counts (
     kind TEXT NOT NULL,
     key TEXT NOT NULL,
     count INTEGER NOT NULL,
     last_at INTEGER NOT NULL,
     PRIMARY KEY (kind, key)
   );`,
  // 2: the audit trail, written in the transaction of the change it records.
  AUDIT_SCHEMA,
];

/**
 * Opens (creating it owner-only if new) the database at `path`; `hostId` is
 * stamped on the audit events this process stores, kept `retentionMs`.
 */
export function openSqlite(path, keys, { hostId = '', retentionMs } = {}) {
  // Owner-only from the first byte: create the file before SQLite does.
  closeSync(openSync(path, 'a', 0o600));
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db);

  const q = {
    user: db.prepare('SELECT doc FROM users WHERE id = ?'),
    save: db.prepare('UPDATE users SET doc = ? WHERE id = ?'),
    byUsername: db.prepare('SELECT doc FROM users WHERE username = ? ORDER BY created_at, id LIMIT 1'),
    byEmail: db.prepare(
      `SELECT u.doc FROM user_emails e JOIN users u ON u.id = e.user_id
       WHERE e.address_lower = ? ORDER BY u.created_at, u.id LIMIT 1`,
    ),
    count: db.prepare('SELECT count, last_at FROM login_counts WHERE kind = ? AND key = ?'),
    setCount: db.prepare(
      `INSERT INTO login_counts (kind, key, count, last_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (kind, key) DO UPDATE SET count = excluded.count, last_at = excluded.last_at`,
    ),
    deleteCount: db.prepare('DELETE FROM login_counts WHERE kind = ? AND key = ?'),
    insertUser: db.prepare('INSERT INTO users (id, username, created_at, doc) VALUES (?, ?, ?, ?)'),
    insertEmail: db.prepare('INSERT OR IGNORE INTO user_emails (address_lower, user_id) VALUES (?, ?)'),
    users: db.prepare('SELECT doc FROM users ORDER BY username'),
  };

  const { decode, encode } = userDocuments(keys);
  // Nested calls (a storage call inside an admin transaction) join the outer one.
  const immediate = (fn) => (db.inTransaction ? fn() : db.transaction(fn).immediate());

  const statements = new Map();
  const prepared = (sql) => {
    let st = statements.get(sql);
    if (!st) statements.set(sql, (st = db.prepare(sql)));
    return st;
  };
  const audit = sqlAuditLog(
    {
      run: (sql, ...args) => prepared(sql).run(...args).changes,
      all: (sql, ...args) => prepared(sql).all(...args),
    },
    hostId,
    retentionMs,
  );

  return {
    kind: 'sqlite',
    audit,
    transaction: immediate,
    user: (id) => decode(q.user.get(id)),
    save: (doc) => void q.save.run(encode(doc), doc.id),
    userForLogin: (tag, value) =>
      decode(tag === 'username' ? q.byUsername.get(value) : q.byEmail.get(asciiLower(value))),
    count(kind, key) {
      const r = q.count.get(kind, key);
      return r ? { count: r.count, lastAt: r.last_at } : undefined;
    },
    setCount: (kind, key, c) => void q.setCount.run(kind, key, c.count, c.lastAt),
    deleteCount: (kind, key) => void q.deleteCount.run(kind, key),
    insertUser(doc) {
      immediate(() => {
        q.insertUser.run(doc.id, doc.username, doc.createdAt, encode(doc));
        for (const e of doc.emails) q.insertEmail.run(asciiLower(e.address), doc.id);
      });
    },
    users: () => q.users.all().map(decode),
    close: () => db.close(),
  };
}

function migrate(db) {
  const version = db.pragma('user_version', { simple: true });
  if (version > SCHEMA_VERSION) {
    throw new Error(`the database has schema version ${version}; this host knows up to ${SCHEMA_VERSION}`);
  }
  db.transaction(() => {
    for (let v = version; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v]);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}
