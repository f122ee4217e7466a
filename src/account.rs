//! `POST /api/v1/login`, `POST /api/v1/logout` and `GET /api/v1/me`:
//! password logins (with the second factor) that issue session tokens, their
//! removal, and the authenticated user.

use serde::Serialize;
use serde_json::Value;

use crate::endpoints::{authenticate, respond};
use crate::env::Env;
use crate::model::*;
use crate::reply::{self, ApiError};
use crate::request;
use crate::token;
use crate::twofactor::{self, Attempt};

/// Rocket.Chat's `me` object (the fields this service knows).
#[derive(Serialize)]
struct Me<'a> {
    _id: &'a str,
    username: &'a str,
    name: &'a str,
    emails: Vec<Email<'a>>,
    status: &'static str,
    active: bool,
    roles: &'a [String],
    services: Services,
}

/// Which second factors the user has (Rocket.Chat's `getUserInfo`: a
/// factor appears only when enabled; whether a password exists, never its
/// hash), so a client can show the account's 2FA state.
#[derive(Serialize)]
struct Services {
    #[serde(skip_serializing_if = "Option::is_none")]
    email2fa: Option<Enabled>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp: Option<Enabled>,
    password: PasswordExists,
}

#[derive(Serialize)]
struct Enabled {
    enabled: bool,
}

#[derive(Serialize)]
struct PasswordExists {
    exists: bool,
}

#[derive(Serialize)]
struct Email<'a> {
    address: &'a str,
    verified: bool,
}

fn me_of(user: &User) -> Me<'_> {
    Me {
        _id: &user.id,
        username: &user.username,
        name: &user.name,
        emails: user
            .verified_emails
            .iter()
            .map(|a| Email {
                address: a,
                verified: true,
            })
            .collect(),
        status: "online",
        active: true,
        roles: &user.roles,
        services: Services {
            email2fa: user.email_two_factor.then_some(Enabled { enabled: true }),
            totp: user.totp.is_some().then_some(Enabled { enabled: true }),
            password: PasswordExists {
                exists: user.password_bcrypt.is_some(),
            },
        },
    }
}

/// A bcrypt hash (Rocket.Chat's cost, 10) that no password digest matches:
/// checked when the named user does not exist or has no password, so that
/// every failed login costs the same and timing does not reveal accounts.
#[cfg(not(fuzzing))]
const UNMATCHABLE_BCRYPT: &str = "$2b$10$eYUntGe2g37JGKekAiXYmOt3978Ztt4vCZOedHsscbJ/Pu8gi.4pq";
/// Under the fuzzer (`cargo fuzz` sets `cfg(fuzzing)`): the cheapest cost,
/// so that millions of executions fit in minutes.
#[cfg(fuzzing)]
const UNMATCHABLE_BCRYPT: &str = "$2b$04$0MV5Z45YVrhyObBqYkbRE.RyrQQDU7LAIgqJGl1gJ/m6dvwx4kDA2";

/// `GET /api/v1/me`.
pub fn me(env: &mut dyn Env, settings: &Settings, req: &Request) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        me: Me<'a>,
        success: bool,
    }
    respond((|| {
        let session = authenticate(env, settings, req, None)?.session;
        Ok(Response::new(
            200,
            reply::to_json(&Body {
                me: me_of(&session.user),
                success: true,
            }),
        ))
    })())
}

/// Who the body names: `user` (an email when it has an `@`), `username` or `email`.
fn identifier(body: &request::Body) -> Result<LoginIdentifier, ApiError> {
    let text = |key: &str| match body.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(ApiError::InvalidLogin(
            "The 'user', 'username' and 'email' params must be strings",
        )),
    };
    if let Some(user) = text("user")? {
        return Ok(if user.contains('@') {
            LoginIdentifier::Email(user)
        } else {
            LoginIdentifier::Username(user)
        });
    }
    if let Some(username) = text("username")? {
        return Ok(LoginIdentifier::Username(username));
    }
    if let Some(email) = text("email")? {
        return Ok(LoginIdentifier::Email(email));
    }
    Err(ApiError::InvalidLogin(
        "The 'user' and 'password' params are required",
    ))
}

/// The password as Rocket.Chat checks it: the lowercase hex SHA-256, sent
/// either as the plaintext or as `{"digest","algorithm":"sha-256"}`.
fn body_password_digest(body: &request::Body) -> Result<String, ApiError> {
    match body.get("password") {
        Some(Value::String(p)) if !p.is_empty() => Ok(token::password_digest(p)),
        Some(Value::Object(o)) => match (o.get("digest"), o.get("algorithm")) {
            (Some(Value::String(d)), Some(Value::String(a)))
                if a == "sha-256" && d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(d.to_ascii_lowercase())
            }
            _ => Err(ApiError::InvalidLogin(
                "The 'password' digest must be a sha-256 hex digest",
            )),
        },
        _ => Err(ApiError::InvalidLogin(
            "The 'user' and 'password' params are required",
        )),
    }
}

/// `POST /api/v1/login`.
pub fn login(env: &mut dyn Env, settings: &Settings, req: &Request) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        user_id: &'a str,
        auth_token: &'a str,
        me: Me<'a>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        status: &'static str,
        data: Data<'a>,
    }
    let result = (|| {
        let headers = request::headers(req)?;
        let body = request::body(&req.body, reply::MAX_BODY_BYTES)?;
        let identifier = identifier(&body)?;
        let digest = body_password_digest(&body)?;
        let code = match body.get("code") {
            Some(Value::String(c)) => Some(c.as_str()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(ApiError::InvalidLogin("The 'code' param must be a string")),
        };
        let found = env
            .storage()
            .find_user_for_login(&identifier)
            .map_err(|_| ApiError::StorageFailure)?;
        // Failed logins are limited per account and per address before any
        // bcrypt work; an unknown user is limited under the name given, so
        // it answers exactly like a known one.
        let account = match (&found, &identifier) {
            (Some(user), _) => user.id.clone(),
            (None, LoginIdentifier::Username(name)) => format!("unknown-username:{name}"),
            (None, LoginIdentifier::Email(email)) => {
                format!("unknown-email:{}", email.to_ascii_lowercase())
            }
        };
        let now = env.now_ms();
        let origin = crate::audit::Origin::of(&headers, req);
        let refused = match env
            .storage()
            .reserve_login_attempt(&account, &req.client_address, now, &settings.login_limits())
            .map_err(|_| ApiError::StorageFailure)?
        {
            LoginAdmission::Admitted => None,
            LoginAdmission::AccountBlocked => Some(ApiError::LoginBlockedForUser),
            LoginAdmission::AddressBlocked => Some(ApiError::LoginBlockedForAddress),
        };
        if let Some(refused) = refused {
            crate::audit::record(env, &[origin.event(now, &account, AuditKind::LoginBlocked)]);
            return Err(refused);
        }
        // One bcrypt check whatever is found, so that an unknown user or one
        // without a password answers as slowly as a wrong password.
        let hash = found
            .as_ref()
            .and_then(|u| u.password_bcrypt.as_deref())
            .unwrap_or(UNMATCHABLE_BCRYPT);
        let matches = bcrypt::verify(&digest, hash).unwrap_or(false);
        let mut user = match found {
            Some(user) if matches && user.password_bcrypt.is_some() => user,
            // The reserved attempt stays counted as a failed login.
            _ => {
                crate::audit::record(env, &[origin.event(now, &account, AuditKind::LoginFailed)]);
                return Err(ApiError::NotLoggedIn);
            }
        };
        // A right password resets the account's count. Should this fail the
        // login still stands: the count only errs on the side of blocking.
        let _ = env
            .storage()
            .login_succeeded(&account, &req.client_address, now);
        let attempt = Attempt {
            code: code.or(headers.two_factor_code.as_deref()),
            method: headers.two_factor_method.as_deref(),
            user_agent: headers.user_agent.as_deref(),
            client_address: &req.client_address,
            token: None,
            password_fallback: false,
            sensitive: false,
        };
        let mut passed = twofactor::check(env, settings, &mut user, &attempt)?;
        let plaintext = token::new_token(&env.random_bytes(token::TOKEN_LEN));
        let issued_at = env.now_ms();
        passed.proof.events = origin.with_factor(
            passed.method,
            origin.event(issued_at, &user.id, AuditKind::LoginSucceeded),
        );
        match env
            .storage()
            .insert_login_token(
                &user.id,
                &token::hash_token(&plaintext),
                issued_at,
                &passed.proof,
            )
            .map_err(|_| ApiError::StorageFailure)?
        {
            WriteOutcome::Done => {}
            WriteOutcome::FactorAlreadyUsed => return Err(passed.spent_error()),
            // (A login keeps no reply, so never `ReplyKept`.)
            WriteOutcome::NotFound
            | WriteOutcome::NameTaken
            | WriteOutcome::CredentialsRevoked
            | WriteOutcome::ReplyKept => {
                return Err(ApiError::NotLoggedIn);
            }
        }
        let data = Data {
            user_id: &user.id,
            auth_token: &plaintext,
            me: me_of(&user),
        };
        Ok(Response::new(
            200,
            reply::to_json(&Body {
                status: "success",
                data,
            }),
        ))
    })();
    result.unwrap_or_else(|e| e.to_login_response())
}

/// `POST /api/v1/logout`: removes the presented session token. A personal
/// access token is refused (Rocket.Chat would delete it, letting whoever
/// holds it remove it without the second factor its removal requires).
pub fn logout(env: &mut dyn Env, settings: &Settings, req: &Request) -> Response {
    respond((|| {
        let authenticated = authenticate(env, settings, req, None)?;
        let session = authenticated.session;
        if session.token.kind != TokenKind::Login {
            return Err(ApiError::LogoutPersonalAccessToken);
        }
        let origin = crate::audit::Origin::of(&authenticated.headers, req);
        let event = origin.event(env.now_ms(), &session.user.id, AuditKind::LoggedOut);
        match env
            .storage()
            .remove_login_token(&session.user.id, &session.token.hashed_token, &[event])
            .map_err(|_| ApiError::StorageFailure)?
        {
            WriteOutcome::Done => Ok(reply::logged_out()),
            // Removed by a concurrent logout: the token no longer logs in.
            _ => Err(ApiError::NotLoggedIn),
        }
    })())
}
