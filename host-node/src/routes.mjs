// The HTTP boundary every JavaScript host draws the same way (host-node's
// server.mjs, host-workers' Worker), as host-example's `serve` does: which
// path is which component route, 404 and 405 with Allow, the body bound
// (413) and its media type (415). Everything past it is the component's.

/** The component's routes (WIT `route`, the argument of `handle`), by path. */
export const ENDPOINTS = {
  '/api/v1/login': ['POST', 'login'],
  '/api/v1/logout': ['POST', 'logout'],
  '/api/v1/me': ['GET', 'me'],
  '/api/v1/users.regeneratePersonalAccessToken': ['POST', 'regenerate-personal-access-token'],
  '/api/v1/users.generatePersonalAccessToken': ['POST', 'generate-personal-access-token'],
  '/api/v1/users.getPersonalAccessTokens': ['GET', 'get-personal-access-tokens'],
  '/api/v1/users.removePersonalAccessToken': ['POST', 'remove-personal-access-token'],
  '/api/v1/audit.personalAccessTokens': ['GET', 'audit-personal-access-tokens'],
};

/** Longest accepted body (`rcpat::reply::MAX_BODY_BYTES`; the PAT routes bound theirs tighter inside). */
export const MAX_BODY_BYTES = 64 * 1024;

/** A Rocket.Chat-style error reply: {status, body}. */
export function apiError(status, reason, type) {
  return { status, body: JSON.stringify({ success: false, error: `${reason} [${type}]`, errorType: type }) };
}

export const tooLarge = () => apiError(413, `The request body exceeds ${MAX_BODY_BYTES} bytes`, 'error-request-too-large');

/**
 * Where `method path` goes: {route, method} for a component route, or
 * {reply, allow?} for 404/405 (allow: the Allow header's value).
 */
export function routeOf(method, path) {
  const found = ENDPOINTS[path];
  if (!found) return { reply: apiError(404, 'The endpoint was not found', 'error-not-found') };
  if (method !== found[0]) {
    return {
      reply: apiError(405, `This endpoint only accepts ${found[0]}`, 'error-method-not-allowed'),
      allow: found[0],
    };
  }
  return { method: found[0], route: found[1] };
}

/** 415 unless a non-empty body is declared application/json (null when it may go on). */
export function mediaTypeRefusal(contentType, bodyLength) {
  const isJson = (contentType ?? '').split(';')[0].trim().toLowerCase() === 'application/json';
  return bodyLength > 0 && !isJson
    ? apiError(415, 'The request body must be sent as application/json', 'error-unsupported-media-type')
    : null;
}
