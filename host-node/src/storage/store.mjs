// What both document stores share.

/** A store refused an admin operation (a duplicate user, a bad key file). */
export class StoreError extends Error {}

/** Lowercases ASCII letters only, as the Rust backends compare addresses. */
export function asciiLower(s) {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}
