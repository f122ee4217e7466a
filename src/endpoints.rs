//! The REST endpoints, in the order of checks of the Rocket.Chat generation
//! the documentation describes: authentication (401), 2FA, `tokenName`,
//! permission, existence. Malformed headers and bodies, and bodies over
//! `MAX_PAT_BODY_BYTES`, are refused first, as Rocket.Chat's body parser
//! does, before any storage is touched.

use crate::env::Env;
use crate::model::*;
use crate::reply::{self, ApiError, MAX_PAT_BODY_BYTES, PatMethod};
use crate::request::{self, Body, Headers};
use crate::time::iso8601;
use crate::token;
use crate::twofactor;

/// The permission every personal-access-token route checks.
pub const PAT_PERMISSION: &str = "create-personal-access-tokens";

/// Everything every endpoint does first: parse, authenticate.
pub(crate) struct Authenticated {
    pub(crate) headers: Headers,
    pub(crate) session: Session,
}

/// The presented credentials: 401 unless they name a stored token of the
/// user, and, for a session token, one younger than `login-expiration-days`.
/// A PAT's use is recorded (see `record_use`). `permission`: the one the
/// route checks later (`Session::permitted` answers it; read together with
/// the session, which saves a storage call).
pub(crate) fn authenticate(
    env: &mut dyn Env,
    settings: &Settings,
    req: &Request,
    permission: Option<&str>,
) -> Result<Authenticated, ApiError> {
    let authenticated = authenticate_unmarked(env, settings, req, permission)?;
    let session = &authenticated.session;
    record_use(env, &session.user.id, &session.token);
    Ok(authenticated)
}

fn authenticate_unmarked(
    env: &mut dyn Env,
    settings: &Settings,
    req: &Request,
    permission: Option<&str>,
) -> Result<Authenticated, ApiError> {
    let headers = request::headers(req)?;
    let (Some(user_id), Some(token)) = (headers.user_id.as_deref(), headers.auth_token.as_deref())
    else {
        return Err(ApiError::NotLoggedIn);
    };
    if user_id.is_empty() || token.is_empty() {
        return Err(ApiError::NotLoggedIn);
    }
    // Noise shaped like one of our prefixed tokens costs no lookup.
    let prefix = settings.token_prefix;
    if token::looks_prefixed(&prefix, token)
        && !token::prefixed_token_is_well_formed(&prefix, token)
    {
        return Err(ApiError::NotLoggedIn);
    }
    let hashed_token = token::hash_token(token);
    let Some(session) = env
        .storage()
        .authenticate(user_id, &hashed_token, permission)
        .map_err(|_| ApiError::StorageFailure)?
    else {
        return Err(crate::reuse::unknown_token(
            env,
            settings,
            user_id,
            &hashed_token,
            &crate::audit::Origin::of(&headers, req),
        ));
    };
    if session.token.kind == TokenKind::Login && settings.login_expiration_days > 0 {
        let lifetime_ms = u64::from(settings.login_expiration_days) * 86_400_000;
        if env.now_ms() >= session.token.created_at.saturating_add(lifetime_ms) {
            return Err(ApiError::NotLoggedIn);
        }
    }
    // An expired PAT is refused as an unknown one is.
    let now = env.now_ms();
    if crate::expiry::is_expired(session.token.expires_at, now) {
        let event = AuditEvent {
            token_name: session.token.name.clone(),
            ..crate::audit::Origin::of(&headers, req).event(
                now,
                user_id,
                AuditKind::TokenExpiredOnUse,
            )
        };
        crate::audit::record(env, &[event]);
        return Err(ApiError::NotLoggedIn);
    }
    Ok(Authenticated { headers, session })
}

/// How stale a PAT's `lastUsedAt` may get before a request rewrites it: at
/// most one write per token per hour, so authentication stays a read.
pub const LAST_USE_INTERVAL_MS: u64 = 3_600_000;

/// Records that a PAT authenticated this request, when its stored last use
/// is older than the interval. Best effort: a failed write costs a stale
/// `lastUsedAt`, never the request (it changes nothing else).
fn record_use(env: &mut dyn Env, user_id: &str, token: &LoginToken) {
    if token.kind != TokenKind::PersonalAccessToken {
        return;
    }
    let now = env.now_ms();
    let stale_before = now.saturating_sub(LAST_USE_INTERVAL_MS);
    if token.last_used_at.is_none_or(|at| at < stale_before) {
        let _ = env
            .storage()
            .record_token_use(user_id, &token.hashed_token, now, stale_before);
    }
}

/// Authentication, then the body, then the second factor: the prologue of the
/// three 2FA-protected POST endpoints. `sensitive` says, from the body and the
/// presented token, whether a bypass token must still pass a real factor.
/// `retires_presented`: the route replaces or removes the token its body
/// names, so when that is the presented token its use is not recorded (the
/// value is retired by this very request; a self-rotating client would
/// otherwise pay a write for every rotation).
fn authenticate_with_second_factor(
    env: &mut dyn Env,
    settings: &Settings,
    req: &Request,
    sensitive: fn(&Body, &LoginToken) -> bool,
    retires_presented: bool,
    retry: Option<&Retry>,
) -> Result<(Session, Body, twofactor::Passed, crate::audit::Origin), ApiError> {
    // Body syntax (and size) is checked before authentication, as Express'
    // JSON parser runs before Rocket.Chat's routes; its fields only after 2FA.
    let body = request::body(&req.body, MAX_PAT_BODY_BYTES)?;
    let Authenticated {
        headers,
        mut session,
    } = authenticate_unmarked(env, settings, req, Some(PAT_PERMISSION))?;
    // Authenticated, before any work: one request per key goes on.
    if let Some(retry) = retry {
        retry.reserve(env, settings)?;
    }
    if !(retires_presented && names_the_presented_token(&body, &session.token)) {
        record_use(env, &session.user.id, &session.token);
    }
    let sensitive = sensitive(&body, &session.token);
    let attempt =
        twofactor::Attempt::of_request(&headers, &session.token, &req.client_address, sensitive);
    let passed = twofactor::check(env, settings, &mut session.user, &attempt)?;
    let origin = crate::audit::Origin::of(&headers, req);
    Ok((session, body, passed, origin))
}

/// `create-personal-access-tokens` (asked for when the session was read),
/// or `denied` (the error differs per route).
fn require_permission(session: &Session, denied: ApiError) -> Result<(), ApiError> {
    if session.permitted {
        Ok(())
    } else {
        Err(denied)
    }
}

/// A new token value (under the host's `token-prefix`) and its stored record.
fn mint(
    env: &mut dyn Env,
    settings: &Settings,
    name: String,
    bypass_two_factor: bool,
    expires_at: Option<TimestampMs>,
) -> Result<(String, PersonalAccessToken), ApiError> {
    if !settings.token_prefix.is_valid() {
        return Err(ApiError::Internal(
            "The host's token-prefix setting is invalid",
        ));
    }
    let plaintext = token::with_prefix(
        &settings.token_prefix,
        &token::new_token(&env.random_bytes(token::TOKEN_LEN)),
    );
    let record = PersonalAccessToken {
        hashed_token: token::hash_token(&plaintext),
        last_token_part: token::last_part(&plaintext).to_string(),
        name,
        created_at: env.now_ms(),
        bypass_two_factor,
        last_used_at: None,
        expires_at,
    };
    Ok((plaintext, record))
}

/// What a regeneration needs of the value it replaces.
struct Replaced {
    hashed_token: String,
    bypass_two_factor: bool,
    created_at: TimestampMs,
    expires_at: Option<TimestampMs>,
}

impl Replaced {
    /// The presented token, when it is the PAT called `name`: the same
    /// stored entry `find-personal-access-token` would read again. If another
    /// request replaced it meanwhile, the compare-and-swap refuses.
    fn presented(presented: &LoginToken, name: &str) -> Option<Self> {
        is_the_pat_named(presented, name).then(|| Replaced {
            hashed_token: presented.hashed_token.clone(),
            bypass_two_factor: presented.bypass_two_factor,
            created_at: presented.created_at,
            expires_at: presented.expires_at,
        })
    }
}

impl From<PersonalAccessToken> for Replaced {
    fn from(t: PersonalAccessToken) -> Self {
        Replaced {
            hashed_token: t.hashed_token,
            bypass_two_factor: t.bypass_two_factor,
            created_at: t.created_at,
            expires_at: t.expires_at,
        }
    }
}

/// The presented token is the PAT called `name` (session tokens have no name).
fn is_the_pat_named(presented: &LoginToken, name: &str) -> bool {
    presented.kind == TokenKind::PersonalAccessToken && presented.name.as_deref() == Some(name)
}

/// The body names the presented PAT (a valid `tokenName` equal to its name).
fn names_the_presented_token(body: &Body, presented: &LoginToken) -> bool {
    request::token_name(body).is_ok_and(|name| is_the_pat_named(presented, &name))
}

/// Regenerating or removing a token other than the presented one.
fn targets_another_token(body: &Body, presented: &LoginToken) -> bool {
    match request::token_name(body) {
        Ok(name) => !is_the_pat_named(presented, &name),
        // An invalid name fails right after the second factor anyway.
        Err(_) => false,
    }
}

/// Generating a token that itself bypasses the second factor.
fn mints_bypass_token(body: &Body, _presented: &LoginToken) -> bool {
    request::bypass_two_factor(body) == Ok(true)
}

/// A token-creating request that carried `Idempotency-Key` (and the host
/// keeps replies): what binds its retries to it.
struct Retry {
    key: String,
    body_hash: String,
    user_id: String,
    /// The presented token's plaintext: the kept reply is sealed under it.
    presented: String,
    presented_hash: String,
    /// The body's `tokenName`, if it has a valid one (a kept reply is only
    /// served while the token it returned still holds that name unused).
    name: Option<String>,
    /// Whether this request holds the key's reservation (to give back if
    /// it ends without its write).
    reserved: std::cell::Cell<bool>,
}

/// How long a reservation of an `Idempotency-Key` holds off its duplicates
/// (409) if the request that made it never ends it (its host died). Only
/// replies depend on it: a duplicate that runs after a lapsed lease still
/// cannot write once a reply is kept (`reply-kept`).
const KEY_LEASE_MS: u64 = 10_000;

impl Retry {
    /// `None` without the header, when the host keeps no replies, or
    /// without credentials (authentication answers those).
    fn of(settings: &Settings, req: &Request, route: PatMethod) -> Result<Option<Retry>, ApiError> {
        // An oversized body gets its 413 from the usual flow, unhashed.
        let sent = |h: &Header| h.name.eq_ignore_ascii_case("idempotency-key");
        if settings.idempotency_key_hours == 0
            || req.body.len() > MAX_PAT_BODY_BYTES
            || !req.headers.iter().any(sent)
        {
            return Ok(None);
        }
        // Strictly, as authentication will: a duplicated header is a 400.
        let headers = request::headers(req)?;
        let Some(key) = headers.idempotency_key.as_deref() else {
            return Ok(None);
        };
        let key = crate::idempotency::parse_key(key)?;
        let (Some(user_id), Some(presented)) = (headers.user_id, headers.auth_token) else {
            return Ok(None);
        };
        Ok(Some(Retry {
            key,
            body_hash: crate::idempotency::body_hash(route.name(), &req.body),
            presented_hash: token::hash_token(&presented),
            user_id,
            presented,
            name: request::body(&req.body, MAX_PAT_BODY_BYTES)
                .ok()
                .and_then(|body| request::token_name(&body).ok()),
            reserved: std::cell::Cell::new(false),
        }))
    }

    /// The first step of a token-creating route: `Err` with the kept reply
    /// when the request is a retry, else what its write keeps (if anything).
    fn start(
        env: &mut dyn Env,
        settings: &Settings,
        req: &Request,
        route: PatMethod,
    ) -> Result<Result<Option<Retry>, Response>, ApiError> {
        let Some(retry) = Self::of(settings, req, route)? else {
            return Ok(Ok(None));
        };
        Ok(match retry.replay(env, settings, req)? {
            Some(kept) => Err(kept),
            None => Ok(Some(retry)),
        })
    }

    fn ttl_ms(settings: &Settings) -> u64 {
        u64::from(settings.idempotency_key_hours) * 3_600_000
    }

    /// The reply kept by an earlier request with this key, credentials and
    /// body; the key with another body is refused. Runs before
    /// authentication: the presented token may be the one that request
    /// replaced, and only its holder can open the reply.
    fn replay(
        &self,
        env: &mut dyn Env,
        settings: &Settings,
        req: &Request,
    ) -> Result<Option<Response>, ApiError> {
        let not_before = env.now_ms().saturating_sub(Self::ttl_ms(settings));
        let Some(kept) = env
            .storage()
            .find_idempotent_reply(&self.user_id, &self.presented_hash, &self.key, not_before)
            .map_err(|_| ApiError::StorageFailure)?
        else {
            return Ok(None);
        };
        self.opened(env, settings, req, &kept)
    }

    /// Reserves the key for this request (after authentication): refused
    /// with 409 `error-idempotency-key-in-flight` while another request
    /// holds it, and when a reply was kept meanwhile (`keyed` then serves
    /// that reply instead).
    fn reserve(&self, env: &mut dyn Env, settings: &Settings) -> Result<(), ApiError> {
        let now = env.now_ms();
        let not_before = now.saturating_sub(Self::ttl_ms(settings));
        match env
            .storage()
            .reserve_idempotency_key(
                &self.user_id,
                &self.presented_hash,
                &self.key,
                now,
                now.saturating_add(KEY_LEASE_MS),
                not_before,
            )
            .map_err(|_| ApiError::StorageFailure)?
        {
            KeyReservation::Reserved => {
                self.reserved.set(true);
                Ok(())
            }
            KeyReservation::InFlight | KeyReservation::Kept(_) => {
                Err(ApiError::IdempotencyKeyInFlight)
            }
        }
    }

    /// Gives the reservation back after a request that did not write, so a
    /// retry runs at once. A failure here only delays retries until the
    /// lease ends.
    fn release(&self, env: &mut dyn Env) {
        if self.reserved.replace(false) {
            let _ = env.storage().release_idempotency_key(
                &self.user_id,
                &self.presented_hash,
                &self.key,
            );
        }
    }

    /// A kept reply as this request's answer: refused if it was kept for
    /// another body, `None` if these credentials cannot open it.
    ///
    /// A kept reply is served only while it is still the answer (issue 26,
    /// item 4): the credential that made the request still authenticates
    /// (not logged out, not expired), unless the request itself retired it
    /// (a PAT rotating itself: the lost-reply case), and the token the reply
    /// returned is still the current, unexpired token of its name and has
    /// never been used (once used, its holder clearly got it). Otherwise:
    /// 401 when the presented credential is gone, else 400
    /// `error-idempotency-key-spent`; never the token.
    fn opened(
        &self,
        env: &mut dyn Env,
        settings: &Settings,
        req: &Request,
        kept: &IdempotentReply,
    ) -> Result<Option<Response>, ApiError> {
        if !token::secret_eq(kept.body_hash.as_bytes(), self.body_hash.as_bytes()) {
            return Err(ApiError::IdempotencyKeyReused);
        }
        let Some(opened) = crate::idempotency::open(
            &self.presented,
            &self.user_id,
            &self.key,
            &self.body_hash,
            &kept.sealed_reply,
        ) else {
            return Ok(None);
        };
        if !opened.retired_presented {
            authenticate_unmarked(env, settings, req, None)?;
        }
        if !self.returned_token_is_untouched(env, &opened.body)? {
            return Err(if opened.retired_presented {
                ApiError::NotLoggedIn
            } else {
                ApiError::IdempotencyKeySpent
            });
        }
        Ok(Some(Response::new(200, opened.body)))
    }

    /// Whether the token in a kept reply's `body` is still the current
    /// token of the request's name, unexpired and never used.
    fn returned_token_is_untouched(&self, env: &mut dyn Env, body: &str) -> Result<bool, ApiError> {
        // The body is `reply::token_created`'s, sealed by this component:
        // the token is the first string, of an alphabet without quotes or
        // escapes. (Read by hand: a serde struct here would pull serde_json's
        // number parsing into the component, 39 KB of it.)
        let token = body
            .strip_prefix(r#"{"token":""#)
            .and_then(|rest| rest.split_once('"'))
            .map(|(token, _)| token);
        let (Some(name), Some(token)) = (&self.name, token) else {
            return Ok(false);
        };
        let Some(current) = env
            .storage()
            .find_personal_access_token(&self.user_id, name)
            .map_err(|_| ApiError::StorageFailure)?
        else {
            return Ok(false);
        };
        let now = env.now_ms();
        Ok(token::secret_eq(
            current.hashed_token.as_bytes(),
            token::hash_token(token).as_bytes(),
        ) && current.last_used_at.is_none()
            && !crate::expiry::is_expired(current.expires_at, now))
    }

    /// `reply`, sealed, for the write to keep.
    fn keep(
        &self,
        env: &mut dyn Env,
        settings: &Settings,
        reply: &Response,
        retires_presented: bool,
    ) -> IdempotentWrite {
        let now = env.now_ms();
        let nonce = env.random_bytes(crate::idempotency::NONCE_BYTES);
        IdempotentWrite {
            presented_hashed_token: self.presented_hash.clone(),
            key: self.key.clone(),
            body_hash: self.body_hash.clone(),
            sealed_reply: crate::idempotency::seal(
                &self.presented,
                &self.user_id,
                &self.key,
                &self.body_hash,
                &reply.body,
                retires_presented,
                &nonce,
            ),
            created_at: now,
            forget_before: now.saturating_sub(Self::ttl_ms(settings)),
        }
    }
}

pub(crate) fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| e.to_response())
}

/// `POST users.regeneratePersonalAccessToken`.
pub fn regenerate(env: &mut dyn Env, settings: &Settings, req: &Request) -> Response {
    keyed(env, settings, req, PatMethod::Regenerate, |env, retry| {
        let (session, body, mut passed, origin) = authenticate_with_second_factor(
            env,
            settings,
            req,
            targets_another_token,
            true,
            retry,
        )?;
        let name = request::token_name(&body)?;
        let user_id = session.user.id.as_str();
        // The documentation's example names generateToken here; the documentation wins.
        require_permission(&session, ApiError::NotAuthorized(PatMethod::Generate))?;
        let presented = Replaced::presented(&session.token, &name);
        let retires_presented = presented.is_some();
        let old = match presented {
            // A token rotating itself: authentication just read it.
            Some(old) => old,
            None => env
                .storage()
                .find_personal_access_token(user_id, &name)
                .map_err(|_| ApiError::StorageFailure)?
                .map(Replaced::from)
                .ok_or(ApiError::TokenDoesNotExist(PatMethod::Regenerate))?,
        };
        // The flag is carried over from the old token (as Rocket.Chat does),
        // and its lifetime is renewed.
        let expires_at = crate::expiry::for_replacement(
            env.now_ms(),
            old.created_at,
            old.expires_at,
            settings.max_token_lifetime_days,
        );
        let (plaintext, replacement) =
            mint(env, settings, name, old.bypass_two_factor, expires_at)?;
        let created = reply::token_created(&plaintext);
        passed.proof.reply = retry.map(|r| r.keep(env, settings, &created, retires_presented));
        // One compare-and-swap: the old value is replaced by the new one at
        // once, kept as superseded (reuse detection), and the reply kept
        // for retries with it.
        let keep_superseded = crate::reuse::keep(settings);
        passed.proof.events = origin.token_write(
            replacement.created_at,
            user_id,
            passed.method,
            AuditKind::TokenRegenerated,
            &replacement,
        );
        match env
            .storage()
            .replace_personal_access_token(
                user_id,
                &old.hashed_token,
                &replacement,
                &passed.proof,
                keep_superseded,
            )
            .map_err(|_| ApiError::StorageFailure)?
        {
            WriteOutcome::Done => Ok(created),
            WriteOutcome::NotFound => Err(ApiError::RegeneratedConcurrently),
            WriteOutcome::NameTaken => Err(ApiError::TokenAlreadyExists),
            WriteOutcome::FactorAlreadyUsed => Err(passed.spent_error()),
            WriteOutcome::CredentialsRevoked => Err(ApiError::NotLoggedIn),
            WriteOutcome::ReplyKept => Err(ApiError::IdempotencyKeyInFlight),
        }
    })
}

/// A token-creating route with `Idempotency-Key` handling around `work`:
/// a retry of a request whose reply was kept gets that reply without
/// running; otherwise `work` runs (reserving the key once authenticated).
/// If it fails, the reservation is given back and the kept reply looked up
/// once more: a duplicate that lost the race to the request that wrote
/// (its token replaced, its code spent, the key in flight or kept) gets
/// that request's reply, not its own failure.
fn keyed(
    env: &mut dyn Env,
    settings: &Settings,
    req: &Request,
    route: PatMethod,
    work: impl FnOnce(&mut dyn Env, Option<&Retry>) -> Result<Response, ApiError>,
) -> Response {
    respond((|| {
        let retry = match Retry::start(env, settings, req, route)? {
            Ok(retry) => retry,
            Err(kept) => return Ok(kept),
        };
        let Some(retry) = retry else {
            return work(env, None);
        };
        let err = match work(env, Some(&retry)) {
            Ok(done) => return Ok(done),
            Err(err) => err,
        };
        retry.release(env);
        match retry.replay(env, settings, req)? {
            Some(kept) => Ok(kept),
            None => Err(err),
        }
    })())
}

/// `POST users.generatePersonalAccessToken`.
pub fn generate(env: &mut dyn Env, settings: &Settings, req: &Request) -> Response {
    keyed(env, settings, req, PatMethod::Generate, |env, retry| {
        let (session, body, mut passed, origin) =
            authenticate_with_second_factor(env, settings, req, mints_bypass_token, false, retry)?;
        let name = request::new_token_name(&body)?;
        let bypass = request::bypass_two_factor(&body)?;
        let expires_at = crate::expiry::for_new_token(
            env.now_ms(),
            request::expires_at(&body)?,
            settings.max_token_lifetime_days,
        )?;
        let user_id = session.user.id.as_str();
        require_permission(&session, ApiError::NotAuthorized(PatMethod::Generate))?;
        let (plaintext, record) = mint(env, settings, name, bypass, expires_at)?;
        let created = reply::token_created(&plaintext);
        passed.proof.reply = retry.map(|r| r.keep(env, settings, &created, false));
        passed.proof.events = origin.token_write(
            record.created_at,
            user_id,
            passed.method,
            AuditKind::TokenGenerated,
            &record,
        );
        match env
            .storage()
            .insert_personal_access_token(user_id, &record, &passed.proof)
            .map_err(|_| ApiError::StorageFailure)?
        {
            WriteOutcome::Done => Ok(created),
            WriteOutcome::NameTaken => Err(ApiError::TokenAlreadyExists),
            WriteOutcome::NotFound => Err(ApiError::NotLoggedIn),
            WriteOutcome::FactorAlreadyUsed => Err(passed.spent_error()),
            WriteOutcome::CredentialsRevoked => Err(ApiError::NotLoggedIn),
            WriteOutcome::ReplyKept => Err(ApiError::IdempotencyKeyInFlight),
        }
    })
}

/// `POST users.removePersonalAccessToken`.
pub fn remove(env: &mut dyn Env, settings: &Settings, req: &Request) -> Response {
    respond((|| {
        let (session, body, mut passed, origin) =
            authenticate_with_second_factor(env, settings, req, targets_another_token, true, None)?;
        let name = request::token_name(&body)?;
        let user_id = session.user.id.as_str();
        require_permission(&session, ApiError::NotAuthorized(PatMethod::Remove))?;
        let now = env.now_ms();
        let removed = AuditEvent {
            token_name: Some(name.clone()),
            ..origin.event(now, user_id, AuditKind::TokenRemoved)
        };
        passed.proof.events = origin.with_factor(passed.method, removed);
        match env
            .storage()
            .remove_personal_access_token(user_id, &name, &passed.proof)
            .map_err(|_| ApiError::StorageFailure)?
        {
            WriteOutcome::Done => Ok(reply::success()),
            WriteOutcome::NotFound | WriteOutcome::NameTaken => {
                Err(ApiError::TokenDoesNotExist(PatMethod::Remove))
            }
            WriteOutcome::FactorAlreadyUsed => Err(passed.spent_error()),
            // (Removal keeps no reply, so never `ReplyKept`.)
            WriteOutcome::CredentialsRevoked | WriteOutcome::ReplyKept => {
                Err(ApiError::NotLoggedIn)
            }
        }
    })())
}

/// `GET users.getPersonalAccessTokens` (no 2FA; permission checked at the
/// route in Rocket.Chat, hence 403).
pub fn list(env: &mut dyn Env, settings: &Settings, req: &Request) -> Response {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Item<'a> {
        name: &'a str,
        created_at: String,
        last_token_part: &'a str,
        bypass_two_factor: bool,
        /// Not a Rocket.Chat field: present only once the token was used.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_used_at: Option<String>,
        /// Not a Rocket.Chat field: present only for a token that expires.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<String>,
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        tokens: Vec<Item<'a>>,
        success: bool,
    }
    respond((|| {
        let Authenticated { session, .. } = authenticate(env, settings, req, Some(PAT_PERMISSION))?;
        let user_id = session.user.id.as_str();
        require_permission(&session, ApiError::Forbidden)?;
        let tokens = env
            .storage()
            .list_personal_access_tokens(user_id)
            .map_err(|_| ApiError::StorageFailure)?;
        let items = tokens
            .iter()
            .map(|t| Item {
                name: &t.name,
                created_at: iso8601(t.created_at),
                last_token_part: &t.last_token_part,
                bypass_two_factor: t.bypass_two_factor,
                last_used_at: t
                    .last_used_at
                    .filter(|_| settings.show_token_last_use)
                    .map(iso8601),
                expires_at: t.expires_at.map(iso8601),
            })
            .collect();
        Ok(Response::new(
            200,
            reply::to_json(&Body {
                tokens: items,
                success: true,
            }),
        ))
    })())
}
