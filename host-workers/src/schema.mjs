// The one schema every Durable Object of this host keeps in its SQLite
// storage (a user's object uses users, user_emails, login_counts and
// outbox; the directory, names; an address's object, login_counts), with
// its version in a meta table: workerd refuses `PRAGMA user_version`
// (SQLITE_AUTH), and `BEGIN` too (transactionSync is the way).
//
import { AUDIT_SCHEMA } from '../../host-node/src/storage/audit.mjs';

// Versions follow the other hosts' schema numbering
// (`rcpat_store::SCHEMA_VERSION`, test/durability.test.mjs keeps them in step):
// this host's first schema is version 14, so a contract change that bumps
// the project's version adds its step here under the same number.

/** The schema version this host writes (the project's, see above). */
export const SCHEMA_VERSION = 17;

/** Each version's step, by the version it brings the schema to. */
const MIGRATIONS = {
  14: `
    CREATE TABLE users (
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
    );
    CREATE TABLE outbox (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      sealed TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      next_at INTEGER NOT NULL,
      created_at INTEGER NOT NULL
    );
    CREATE TABLE names (
      kind TEXT NOT NULL,
      key TEXT NOT NULL,
      user_id TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      PRIMARY KEY (kind, key, user_id)
    );
    CREATE INDEX names_by_user ON names (user_id);
  `,
  // 15: nothing here (PostgreSQL's indexes and flags for issue 30).
  15: '',
  // 16: nothing here either: superseded values (reuse detection) live in
  // the user's document, as its tokens do.
  16: '',
  // 17: the audit trail, each object's own events (audit.mjs).
  17: AUDIT_SCHEMA,
};

/** The first version this host has a schema for. */
const FIRST = Math.min(...Object.keys(MIGRATIONS).map(Number));

/**
 * The schema of one object's storage (`ctx.storage`): `exists()` without
 * writing anything (an object that is only read, such as one named by a
 * made-up X-User-Id, must stay empty), `ensure()` before the first write.
 */
export function schema(storage) {
  const sql = storage.sql;
  let known = null; // the version once read: storage is this object's alone
  const read = () => {
    const meta = sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rcpat_meta'").toArray();
    if (meta.length === 0) return 0;
    const row = sql.exec("SELECT value FROM rcpat_meta WHERE key = 'schema_version'").toArray()[0];
    return row ? Number(row.value) : 0;
  };
  const check = (version) => {
    if (version > SCHEMA_VERSION) {
      throw new Error(`this object's storage has schema version ${version}; this host knows up to ${SCHEMA_VERSION}`);
    }
    return version;
  };
  return {
    exists() {
      known ??= check(read());
      return known === SCHEMA_VERSION;
    },
    ensure() {
      if (this.exists()) return;
      storage.transactionSync(() => {
        sql.exec('CREATE TABLE IF NOT EXISTS rcpat_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)');
        for (let v = Math.max(known + 1, FIRST); v <= SCHEMA_VERSION; v++) {
          if (MIGRATIONS[v]) sql.exec(MIGRATIONS[v]);
        }
        sql.exec(
          "INSERT INTO rcpat_meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
          String(SCHEMA_VERSION),
        );
      });
      known = SCHEMA_VERSION;
    },
  };
}
