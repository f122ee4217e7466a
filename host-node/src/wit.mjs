// Conversions between the stored documents (plain JSON: numbers, null) and
// jco's WIT values, in one place. jco's conventions (see README "Hosts"):
// u64 is a BigInt both ways (jco 1.35 refuses a Number for a u64 it lowers
// with validation), `option` is undefined, records are camelCase objects,
// enums and variant tags are kebab-case strings.

const big = (n) => BigInt(n);
const opt = (v) => (v === null || v === undefined ? undefined : v);
const optBig = (v) => (v === null || v === undefined ? undefined : BigInt(v));

/** A stored user as the WIT `user` record. */
export function user(u) {
  return {
    id: u.id,
    username: u.username,
    name: u.name,
    roles: u.roles,
    createdAt: big(u.createdAt),
    verifiedEmails: u.emails.filter((e) => e.verified).map((e) => e.address),
    passwordBcrypt: opt(u.passwordBcrypt),
    totp: u.totp ? totp(u.totp) : undefined,
    emailTwoFactor: u.emailTwoFactor,
    emailCode: u.emailCode
      ? {
          codeHash: u.emailCode.codeHash,
          salt: u.emailCode.salt,
          expiresAt: big(u.emailCode.expiresAt),
          attempts: u.emailCode.attempts,
        }
      : undefined,
    failures: failures(u.failures),
  };
}

function totp(t) {
  return {
    secret: t.secret,
    algorithm: t.algorithm,
    digits: t.digits,
    period: t.period,
    lastUsedStep: big(t.lastUsedStep),
    // The codes themselves stay here: `find-backup-code` answers for one.
    hasBackupCodes: t.hashedBackupCodes.length + t.spentBackupCodes.length > 0,
  };
}

export function failures(f) {
  return { count: f.count, lastFailedAt: big(f.lastFailedAt) };
}

/** A stored token entry as the WIT `login-token` record. */
export function loginToken(t) {
  return {
    hashedToken: t.hashedToken,
    kind: t.kind,
    name: opt(t.name),
    createdAt: big(t.createdAt),
    bypassTwoFactor: t.bypassTwoFactor,
    twoFactorAuthorizedHash: opt(t.authorizedHash),
    twoFactorAuthorizedUntil: optBig(t.authorizedUntil),
    lastUsedAt: optBig(t.lastUsedAt),
    expiresAt: optBig(t.expiresAt),
  };
}

/** A stored personal access token as the WIT `personal-access-token` record. */
export function personalAccessToken(t) {
  return {
    name: t.name,
    hashedToken: t.hashedToken,
    lastTokenPart: t.lastTokenPart,
    createdAt: big(t.createdAt),
    bypassTwoFactor: t.bypassTwoFactor,
    lastUsedAt: optBig(t.lastUsedAt),
    expiresAt: optBig(t.expiresAt),
  };
}

/** A WIT `personal-access-token` as a stored token entry. */
export function patEntry(p) {
  return {
    hashedToken: p.hashedToken,
    kind: 'personal-access-token',
    name: p.name,
    lastTokenPart: p.lastTokenPart,
    createdAt: Number(p.createdAt),
    bypassTwoFactor: p.bypassTwoFactor,
    authorizedHash: null,
    authorizedUntil: null,
    lastUsedAt: p.lastUsedAt === undefined || p.lastUsedAt === null ? null : Number(p.lastUsedAt),
    expiresAt: p.expiresAt === undefined || p.expiresAt === null ? null : Number(p.expiresAt),
  };
}

/** A new session token entry. */
export function loginEntry(hashedToken, createdAt) {
  return {
    hashedToken,
    kind: 'login',
    name: null,
    lastTokenPart: '',
    createdAt: Number(createdAt),
    bypassTwoFactor: false,
    authorizedHash: null,
    authorizedUntil: null,
    lastUsedAt: null,
    expiresAt: null,
  };
}
