// In-memory documents: every storage call runs to completion on Node's one
// thread (the component's imports are synchronous), so each is atomic, and
// rules.mjs changes a document only after every check has passed.

import { asciiLower, StoreError } from './store.mjs';
import { memoryAuditLog } from './audit.mjs';

/** hostId: stamped on the audit events stored; retentionMs: how long they are kept (audit.mjs). */
export function openMemory({ hostId = '', retentionMs } = {}) {
  const users = new Map();
  const counts = new Map();
  const countKey = (kind, key) => `${kind}\u0000${key}`;
  return {
    kind: 'memory',
    audit: memoryAuditLog(hostId, retentionMs),
    transaction: (fn) => fn(),
    user: (id) => users.get(id),
    save: () => {},
    userForLogin(tag, value) {
      let best;
      for (const u of users.values()) {
        const hit =
          tag === 'username'
            ? u.username === value
            : u.emails.some((e) => asciiLower(e.address) === asciiLower(value));
        if (hit && (!best || u.createdAt < best.createdAt || (u.createdAt === best.createdAt && u.id < best.id))) {
          best = u;
        }
      }
      return best;
    },
    count: (kind, key) => counts.get(countKey(kind, key)),
    setCount: (kind, key, c) => void counts.set(countKey(kind, key), c),
    deleteCount: (kind, key) => void counts.delete(countKey(kind, key)),
    insertUser(doc) {
      if (users.has(doc.id) || [...users.values()].some((u) => u.username === doc.username)) {
        throw new StoreError(`user ${doc.username} already exists`);
      }
      users.set(doc.id, structuredClone(doc));
    },
    users: () => [...users.values()],
    close() {},
  };
}
