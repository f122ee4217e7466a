//! Every reply the endpoints can give, rendered exactly as Rocket.Chat does.
//!
//! Rocket.Chat turns a thrown `Meteor.Error(error, reason, details)` into HTTP
//! 400 `{"success":false,"error":"<reason> [<error>]","errorType":<error>,"details":...}`.
//! Keys are written in Rocket.Chat's order through typed structs, so replies are byte-for-byte what its clients see.

use serde::Serialize;

use crate::model::Response;

/// Longest accepted request body (logins). Bodies here are a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted body on the personal-access-token routes, refused before
/// authentication: `{"tokenName": 200 characters, "bypassTwoFactor": true}`
/// fits with room for escapes.
pub const MAX_PAT_BODY_BYTES: usize = 4 * 1024;
/// Longest accepted `tokenName`, in characters (Rocket.Chat has no bound).
pub const MAX_TOKEN_NAME_CHARS: usize = 200;

/// The `details.method` Rocket.Chat puts on PAT errors: the Meteor method name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatMethod {
    Generate,
    Regenerate,
    Remove,
}

impl PatMethod {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PatMethod::Generate => "personalAccessTokens:generateToken",
            PatMethod::Regenerate => "personalAccessTokens:regenerateToken",
            PatMethod::Remove => "personalAccessTokens:removeToken",
        }
    }
}

/// The three 2FA failures; they share one details shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwoFactorFailure {
    Required,
    Invalid,
    MaxAttempts,
}

/// `details` of a 2FA challenge, in Rocket.Chat's key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TwoFactorDetails {
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_or_username: Option<String>,
    pub code_generated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_expires: Option<String>,
    pub available_methods: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 401: no or unknown credentials.
    NotLoggedIn,
    /// 401, exactly `NotLoggedIn`'s: a superseded value of the PAT with
    /// this name was presented and its family revoked (`reuse.rs`); the
    /// reply's `events` tell the host.
    SupersededTokenReused(String),
    /// 400: a 2FA challenge or failure.
    TwoFactor(TwoFactorFailure, TwoFactorDetails),
    /// 400: `tokenName` missing or falsy (Rocket.Chat's exact text, no errorType).
    TokenNameRequired,
    /// 400 `error-invalid-params`: a body field of the wrong type or size.
    InvalidParam(String),
    /// 400 `not-authorized`: no `create-personal-access-tokens` permission.
    NotAuthorized(PatMethod),
    /// 403: same, on the GET endpoint (which Rocket.Chat guards at the route).
    Forbidden,
    /// 400 `error-token-does-not-exists`.
    TokenDoesNotExist(PatMethod),
    /// 400 `error-token-already-exists`.
    TokenAlreadyExists,
    /// 409: another request regenerated the same token first.
    RegeneratedConcurrently,
    /// 400 `error-idempotency-key-reused`: the key came with another body.
    IdempotencyKeyReused,
    /// 400 `error-idempotency-key-spent`: the key's request completed and
    /// its reply is no longer served (its token was used, replaced or
    /// expired); a new request needs a new key.
    IdempotencyKeySpent,
    /// 409 `error-idempotency-key-in-flight`: another request with this key
    /// is running; retry later to get its reply.
    IdempotencyKeyInFlight,
    /// 400 `error-invalid-body`: not JSON, or not a JSON object.
    InvalidBody(&'static str),
    /// 413: body over the route's limit (in bytes).
    BodyTooLarge(usize),
    /// 400 (HTTP layer): the body ended before its `Content-Length`.
    IncompleteBody,
    /// 400 on logout: the request presents a personal access token.
    LogoutPersonalAccessToken,
    /// 401 on login: too many failed logins for the account.
    LoginBlockedForUser,
    /// 401 on login: too many failed logins from the client address.
    LoginBlockedForAddress,
    /// 408 (host): the body did not arrive within the time limit.
    RequestTimeout,
    /// 503 (host): too many open connections.
    Unavailable,
    /// 429 (host): no capacity for the request now (password checks are
    /// bounded so that they cannot starve other requests).
    TooManyRequests,
    /// 400 `error-invalid-header`: duplicated or non-UTF-8 header that matters.
    InvalidHeader(String),
    /// 400 `error-invalid-2fa-method`: `x-2fa-method` is not totp, email or password.
    InvalidTwoFactorMethod,
    /// 500 `error-storage-failure`: the host's storage failed; nothing changed.
    StorageFailure,
    /// 500 `error-email-send-failed`: the code email could not be sent; nothing changed.
    MailFailure,
    /// 500 `error-code-key-missing`: a second-factor check was needed, but
    /// the host gave no `settings.code-key` of 32 bytes or more; no code was
    /// checked, stored or sent (a configuration error of the host's).
    CodeKeyMissing,
    /// 400 on login: credentials missing or of the wrong shape.
    InvalidLogin(&'static str),
    /// 404 (HTTP layer): no such endpoint.
    NotFound,
    /// 405 (HTTP layer): the endpoint exists for another method.
    MethodNotAllowed(&'static str),
    /// 415 (HTTP layer): a body that is not `application/json`.
    UnsupportedMediaType,
    /// 500 (host): the request could not be completed; the text says why.
    Internal(&'static str),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    success: bool,
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Details<'a> {
    Method { method: &'static str },
    TwoFactor(&'a TwoFactorDetails),
}

/// `/api/v1/login`'s error body: Rocket.Chat's login route answers
/// `{"status":"error","error":<type>,"details"?,"message":<reason>}`.
#[derive(Serialize)]
struct LoginErrorBody<'a> {
    status: &'static str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    message: &'a str,
}

impl ApiError {
    /// The HTTP status and JSON body of this error.
    pub fn to_response(&self) -> Response {
        if matches!(
            self,
            ApiError::NotLoggedIn | ApiError::SupersededTokenReused(_)
        ) {
            // The documented body; Rocket.Chat's oldest and documented shape.
            let mut reply = Response::new(
                401,
                r#"{"status":"error","message":"You must be logged in to do this."}"#.to_string(),
            );
            // A revoked family answers the same body; only the host hears of it.
            if let ApiError::SupersededTokenReused(name) = self {
                reply
                    .events
                    .push(crate::model::SecurityEvent::SupersededTokenReused(
                        name.clone(),
                    ));
            }
            return reply;
        }
        let (status, reason, error_type, details) = self.parts();
        let error = match error_type {
            // Meteor.Error's message: "<reason> [<error>]".
            Some(ty) => format!("{reason} [{ty}]"),
            None => reason,
        };
        // The 403 is Rocket.Chat's `API.v1.forbidden`: only `success` and `error`.
        let error_type = if matches!(self, ApiError::Forbidden) {
            None
        } else {
            error_type
        };
        let body = ErrorBody {
            success: false,
            error,
            error_type,
            details,
        };
        Response::new(status, to_json(&body))
    }

    /// The same error as `/api/v1/login` renders it: wrong credentials and
    /// 2FA failures are 401 there.
    pub fn to_login_response(&self) -> Response {
        let (status, reason, error_type, details) = self.parts();
        let (status, error, message) = match self {
            ApiError::NotLoggedIn | ApiError::SupersededTokenReused(_) => {
                (401, "Unauthorized", "Unauthorized".to_string())
            }
            ApiError::TwoFactor(..) => (401, error_type.unwrap_or_default(), reason),
            _ => (status, error_type.unwrap_or("error"), reason),
        };
        let body = LoginErrorBody {
            status: "error",
            error,
            details,
            message: &message,
        };
        Response::new(status, to_json(&body))
    }

    /// (status, reason, errorType, details); errorType None = plain `error` text.
    fn parts(&self) -> (u16, String, Option<&'static str>, Option<Details<'_>>) {
        use ApiError::*;
        match self {
            NotLoggedIn | SupersededTokenReused(_) => (
                401,
                "You must be logged in to do this.".into(),
                Some("unauthorized"),
                None,
            ),
            TwoFactor(kind, details) => {
                let (reason, ty) = match kind {
                    TwoFactorFailure::Required => ("TOTP Required", "totp-required"),
                    TwoFactorFailure::Invalid => ("TOTP Invalid", "totp-invalid"),
                    // "Maximun" is Rocket.Chat's spelling.
                    TwoFactorFailure::MaxAttempts => {
                        ("TOTP Maximun Failed Attempts Reached", "totp-max-attempts")
                    }
                };
                (
                    400,
                    reason.into(),
                    Some(ty),
                    Some(Details::TwoFactor(details)),
                )
            }
            TokenNameRequired => (400, "The 'tokenName' param is required".into(), None, None),
            InvalidParam(reason) => (400, reason.clone(), Some("error-invalid-params"), None),
            NotAuthorized(m) => (
                400,
                "Not Authorized".into(),
                Some("not-authorized"),
                Some(Details::Method { method: m.name() }),
            ),
            Forbidden => (
                403,
                "User does not have the permissions required for this action".into(),
                Some("error-unauthorized"),
                None,
            ),
            TokenDoesNotExist(m) => (
                400,
                "Token does not exist".into(),
                Some("error-token-does-not-exists"),
                Some(Details::Method { method: m.name() }),
            ),
            TokenAlreadyExists => (
                400,
                "A token with this name already exists".into(),
                Some("error-token-already-exists"),
                Some(Details::Method {
                    method: PatMethod::Generate.name(),
                }),
            ),
            IdempotencyKeyReused => (
                400,
                "This Idempotency-Key was used with another request".into(),
                Some("error-idempotency-key-reused"),
                None,
            ),
            IdempotencyKeySpent => (
                400,
                "This Idempotency-Key's request already completed and its reply is no longer served; send a new key"
                    .into(),
                Some("error-idempotency-key-spent"),
                None,
            ),
            IdempotencyKeyInFlight => (
                409,
                "A request with this Idempotency-Key is in progress; retry it later".into(),
                Some("error-idempotency-key-in-flight"),
                None,
            ),
            RegeneratedConcurrently => (
                409,
                "The token was regenerated by a concurrent request".into(),
                Some("error-token-regenerated-concurrently"),
                Some(Details::Method {
                    method: PatMethod::Regenerate.name(),
                }),
            ),
            InvalidBody(reason) => (400, (*reason).into(), Some("error-invalid-body"), None),
            BodyTooLarge(limit) => (
                413,
                format!("The request body exceeds {limit} bytes"),
                Some("error-request-too-large"),
                None,
            ),
            IncompleteBody => (
                400,
                "The request body ended before its Content-Length".into(),
                Some("error-invalid-body"),
                None,
            ),
            LoginBlockedForUser => (
                401,
                "Login has been temporarily blocked For User".into(),
                Some("error-login-blocked-for-user"),
                None,
            ),
            LoginBlockedForAddress => (
                401,
                "Login has been temporarily blocked For IP".into(),
                Some("error-login-blocked-for-ip"),
                None,
            ),
            RequestTimeout => (
                408,
                "The request body did not arrive in time".into(),
                Some("error-request-timeout"),
                None,
            ),
            Unavailable => (
                503,
                "The server has too many open connections; try again shortly".into(),
                Some("error-service-unavailable"),
                None,
            ),
            TooManyRequests => (
                429,
                "Error, too many requests. Please slow down.".into(),
                Some("error-too-many-requests"),
                None,
            ),
            LogoutPersonalAccessToken => (
                400,
                "Personal access tokens are removed with users.removePersonalAccessToken".into(),
                Some("error-logout-personal-access-token"),
                None,
            ),
            InvalidHeader(reason) => (400, reason.clone(), Some("error-invalid-header"), None),
            InvalidTwoFactorMethod => (
                400,
                "The 'x-2fa-method' header must be totp, email or password".into(),
                Some("error-invalid-2fa-method"),
                None,
            ),
            StorageFailure => (
                500,
                "Storage failure; nothing was changed".into(),
                Some("error-storage-failure"),
                None,
            ),
            MailFailure => (
                500,
                "The authentication code email could not be sent".into(),
                Some("error-email-send-failed"),
                None,
            ),
            CodeKeyMissing => (
                500,
                "Second-factor checks are unavailable: the server has no settings.code-key \
                 of 32 bytes or more"
                    .into(),
                Some("error-code-key-missing"),
                None,
            ),
            InvalidLogin(reason) => (400, (*reason).into(), Some("error-invalid-params"), None),
            NotFound => (
                404,
                "The endpoint was not found".into(),
                Some("error-not-found"),
                None,
            ),
            MethodNotAllowed(allowed) => (
                405,
                format!("This endpoint only accepts {allowed}"),
                Some("error-method-not-allowed"),
                None,
            ),
            UnsupportedMediaType => (
                415,
                "The request body must be sent as application/json".into(),
                Some("error-unsupported-media-type"),
                None,
            ),
            Internal(reason) => (500, (*reason).into(), Some("error-internal"), None),
        }
    }
}

/// 200 with `{"token":...,"success":true}`.
pub fn token_created(token: &str) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        token: &'a str,
        success: bool,
    }
    Response::new(
        200,
        to_json(&Body {
            token,
            success: true,
        }),
    )
}

/// 200 `/api/v1/logout`: Rocket.Chat's exact body.
pub fn logged_out() -> Response {
    Response::new(
        200,
        r#"{"status":"success","data":{"message":"You've been logged out!"}}"#.to_string(),
    )
}

/// 200 with `{"success":true}`.
pub fn success() -> Response {
    Response::new(200, r#"{"success":true}"#.to_string())
}

/// Serialises a reply. Replies hold only strings, bools and vectors, which
/// serde_json cannot fail on; the fallback keeps even that case a valid reply.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| r#"{"success":false,"error":"Internal error"}"#.to_string())
}
