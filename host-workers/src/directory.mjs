// The login directory, one Durable Object: which user id a username or an
// email address names. Only logins and user creation ask it (a request with
// a token names its user in X-User-Id), each a one-row indexed read, so one
// object serves every login; a unique username is claimed here in one
// transaction with the user's addresses. (Why not D1: it would answer the
// same query over a network hop from the Worker, with no transaction
// shared with the objects either; a Durable Object is as fast and testable
// in a local workerd.)

import { DurableObject } from 'cloudflare:workers';
import { asciiLower } from '../../host-node/src/storage/store.mjs';
import { schema } from './schema.mjs';

export class Directory extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.schema = schema(ctx.storage);
  }

  /** The oldest user with this exact username, or with this address (ASCII case-insensitively); null if none. */
  lookup(tag, value) {
    if (!this.schema.exists()) return null;
    const [kind, key] = tag === 'username' ? ['username', value] : ['email', asciiLower(value)];
    const row = this.ctx.storage.sql
      .exec('SELECT user_id FROM names WHERE kind = ? AND key = ? ORDER BY created_at, user_id LIMIT 1', kind, key)
      .toArray()[0];
    return row ? row.user_id : null;
  }

  /** Claims `username` (unique) and `emails` for user `id`; answers {ok} or {error}. */
  claim(id, username, emails, createdAt) {
    this.schema.ensure();
    return this.ctx.storage.transactionSync(() => {
      const sql = this.ctx.storage.sql;
      if (sql.exec("SELECT 1 FROM names WHERE kind = 'username' AND key = ?", username).toArray().length > 0) {
        return { error: `user ${username} already exists` };
      }
      sql.exec("INSERT INTO names (kind, key, user_id, created_at) VALUES ('username', ?, ?, ?)", username, id, createdAt);
      for (const e of emails) {
        sql.exec("INSERT OR IGNORE INTO names (kind, key, user_id, created_at) VALUES ('email', ?, ?, ?)", asciiLower(e), id, createdAt);
      }
      return { ok: true };
    });
  }

  /** Drops every name of user `id` (a creation that failed after its claim). */
  release(id) {
    if (this.schema.exists()) this.ctx.storage.sql.exec('DELETE FROM names WHERE user_id = ?', id);
  }
}
