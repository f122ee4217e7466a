// The host's configuration from the Worker's environment. The two keys are
// Worker secrets (`wrangler secret put`; locally, workerd's `fromEnvironment`
// bindings), never part of the bundle, and the Worker refuses to start
// without them: a missing or short key throws at load, and workerd then
// serves nothing.

import { MIN_CODE_KEY_LEN } from '../../host-node/src/component.mjs';

/** A 32-byte key given as 64 hex digits. */
function key(env, name) {
  const hex = env[name];
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex.trim())) {
    throw new Error(`the Worker secret ${name} must be 64 hex digits (32 bytes); refusing to start`);
  }
  return Buffer.from(hex.trim(), 'hex');
}

/** A positive whole number of milliseconds, or `fallback`. */
function ms(value, fallback) {
  const n = Number(value);
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

/**
 * Rocket.Chat's settings the component takes (WIT `settings`, camelCase,
 * e.g. {"rememberForSeconds": 1800}) as the SETTINGS var's JSON object;
 * component.mjs refuses a name the component does not know.
 */
function settings(text) {
  if (text === undefined || text === null || text === '') return {};
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error('SETTINGS is not JSON; refusing to start');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error('SETTINGS must be a JSON object; refusing to start');
  }
  return parsed;
}

/** Reads and checks the configuration; throws (the Worker does not start) when a secret is missing. */
export function configure(env) {
  const codeKey = key(env, 'CODE_KEY');
  if (codeKey.length < MIN_CODE_KEY_LEN) throw new Error('CODE_KEY is too short; refusing to start');
  if (typeof env.MAIL_URL !== 'string' || !/^https?:\/\//.test(env.MAIL_URL)) {
    throw new Error('MAIL_URL (the HTTP mail API the outbox delivers to) is not set; refusing to start');
  }
  const admin = typeof env.ADMIN_TOKEN === 'string' && env.ADMIN_TOKEN.length > 0 ? env.ADMIN_TOKEN : null;
  if (admin !== null && admin.length < 32) throw new Error('ADMIN_TOKEN must be 32 characters or more; refusing to start');
  return {
    keys: { codeKey, secretKey: key(env, 'SECRET_KEY') },
    mail: {
      url: env.MAIL_URL,
      token: env.MAIL_TOKEN || null,
      from: env.MAIL_FROM || 'rcpat@localhost',
      retryBaseMs: ms(env.MAIL_RETRY_BASE_MS, 1000),
    },
    adminToken: admin,
    settings: settings(env.SETTINGS),
    // Stamped on the audit events this Worker's objects store.
    hostId: typeof env.HOST_ID === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(env.HOST_ID) ? env.HOST_ID : 'workerd',
  };
}
