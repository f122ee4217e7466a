//! `host-example serve`: Rocket.Chat's REST paths for personal access tokens
//! over HTTP/1.1, one fresh component instance per request.
//!
//! The HTTP layer only routes, bounds and logs: 404/405/408/413/415/429/503
//! are answered here (in Rocket.Chat's error shape, rendered by the component
//! crate's `reply` module); everything else is the component's reply, passed
//! through. Connections are accepted by our own loop (`serve`), so that each
//! is bounded: a cap on open connections, a time limit for a request's
//! headers (which also ends idle keep-alive connections) and its body.
//! Logins run on the password pool (`password_pool.rs`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use tokio::sync::Semaphore;
use wasmtime::error::Context;

use rcpat::model::{Header, Request, Response, Settings};
use rcpat::reply::ApiError;

use crate::password_pool::{PasswordPool, PoolError};
use crate::runtime::{CallError, Endpoint, Runtime};
use crate::services::Services;

/// What bounds the server's work per client.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Requests running at once (the instance pool's size).
    pub concurrency: usize,
    /// Password-check workers, and how long a login waits for one.
    pub password_workers: usize,
    pub password_wait: Duration,
    /// Time to receive a request's headers (also: the idle keep-alive
    /// limit), and then its body.
    pub request_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections from one client address at most (the same reply).
    pub max_connections_per_address: usize,
    /// During a shutdown, how long an idle connection stays open for a
    /// request already on its way (`connections.rs`).
    pub drain_grace: Duration,
    /// How long a shutdown waits for the requests in flight.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: rcpat::reply::MAX_BODY_BYTES,
            concurrency: 64,
            password_workers: 1,
            password_wait: Duration::from_millis(100),
            request_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_address: 256,
            drain_grace: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// What bounds a listener's connections (the API's and the admin's).
    pub fn connections(&self) -> crate::connections::ConnLimits {
        crate::connections::ConnLimits {
            max_connections: self.max_connections,
            max_per_address: self.max_connections_per_address,
            exempt: Default::default(),
            idle_timeout: self.request_timeout,
            drain_grace: self.drain_grace,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

/// Where the logic runs.
pub enum Backend {
    /// In the component, in wasmtime (the product).
    Wasm(Box<Runtime>),
    /// Linked natively (the baseline for benchmarks).
    Native,
}

pub struct App {
    pub backend: Backend,
    /// HTTPS, when configured (`--tls-cert`, `--tls-key`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Reverse proxies whose forwarding header names the client
    /// (`--trusted-proxies`; none by default).
    pub proxies: crate::client_address::Proxies,
    /// Whether `/` serves the token page (`--web`; `web.rs`).
    pub web: bool,
    /// How long audit events are kept (`--audit-retention-days`; `None`:
    /// forever); `serve` prunes older ones in the background (`audit.rs`).
    pub audit_retention: Option<Duration>,
    pub services: Services,
    pub settings: Settings,
    pub limits: Limits,
    /// At most `limits.concurrency` requests run at once.
    permits: Semaphore,
    passwords: PasswordPool,
}

impl App {
    pub fn new(
        backend: Backend,
        services: Services,
        settings: Settings,
        limits: Limits,
    ) -> wasmtime::Result<Self> {
        // Fail closed at start rather than at the first second-factor check.
        if services.code_key().len() < rcpat::codes::MIN_CODE_KEY_LEN {
            wasmtime::bail!(
                "the code key (settings.code-key) must be {} bytes or more; refusing to start",
                rcpat::codes::MIN_CODE_KEY_LEN
            );
        }
        Ok(App {
            backend,
            tls: None,
            proxies: Default::default(),
            web: true,
            audit_retention: None,
            services,
            settings,
            permits: Semaphore::new(limits.concurrency.max(1)),
            passwords: PasswordPool::new(limits.password_workers, limits.password_wait)
                .context("cannot start the password workers")?,
            limits,
        })
    }

    /// Runs one endpoint to completion (blocking: wasm, SQLite, bcrypt).
    pub fn call(&self, endpoint: Endpoint, req: &Request) -> Response {
        match &self.backend {
            Backend::Native => endpoint.call_native(&self.services, &self.settings, req),
            Backend::Wasm(runtime) => {
                let _in_use = crate::telemetry::InstanceInUse::enter();
                match runtime.call(&self.services, endpoint, &self.settings, req) {
                    Ok(r) => r,
                    Err(e) => {
                        crate::telemetry::component_failure(match e {
                            CallError::Timeout => "timeout",
                            CallError::MemoryLimit => "memory_limit",
                            CallError::Trap(_) => "trap",
                            CallError::Other(_) => "other",
                        });
                        let reason = describe_failure(&e);
                        tracing::warn!(route = endpoint.path(), error = %e, "component call failed");
                        ApiError::Internal(reason).to_response()
                    }
                }
            }
        }
    }
}

/// A client-facing explanation of a failed call (never its internals).
fn describe_failure(e: &CallError) -> &'static str {
    match e {
        CallError::Timeout => "The request exceeded its time limit and was stopped",
        CallError::MemoryLimit => "The request exceeded its memory limit and was stopped",
        CallError::Trap(_) | CallError::Other(_) => {
            "The request failed inside the component and was stopped"
        }
    }
}

pub fn router(app: Arc<App>) -> axum::Router {
    let api = axum::Router::new().fallback(handle);
    let routes = if app.web {
        crate::web::routes().merge(api)
    } else {
        api
    };
    routes.with_state(app)
}

pub use crate::connections::Stopped;

/// Serves until `shutdown` completes; then stops accepting (the listener is
/// closed, so new connections are refused), answers every request already
/// on its way, and returns once every connection has ended or
/// `limits.shutdown_timeout` has passed (`connections.rs`: the caps, idle
/// limits and the drain).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Stopped {
    let limits = crate::connections::ConnLimits {
        exempt: app.proxies.clone(),
        ..app.limits.connections()
    };
    crate::connections::serve(
        listener,
        router(app.clone()),
        app.tls.clone(),
        limits,
        shutdown,
    )
    .await
}

async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let started = Instant::now();
    let method = req.method().clone();
    // Behind trusted proxies, the client they name; else the peer.
    let client = app.proxies.client(peer.ip(), req.headers());
    let via = (client != peer.ip().to_canonical()).then_some(peer.ip());
    // The user a request names (an id, not a secret), for security events.
    let user_id = req
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("")
        .to_string();
    let path = req.uri().path().to_string();
    let endpoint = Endpoint::ALL.into_iter().find(|e| e.path() == path);
    // Whether a second-factor code came, and by which method (for metrics).
    let code_method = req.headers().contains_key("x-2fa-code").then(|| {
        crate::telemetry::method_label(
            req.headers()
                .get("x-2fa-method")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("totp"),
        )
    });
    let reply = match endpoint {
        None => {
            crate::refused::drain(req.into_body()).await;
            ApiError::NotFound.to_response()
        }
        Some(ep) => dispatch(&app, ep, client, req).await,
    };
    // One line per request: client, route, status, latency. Never headers
    // or bodies (they carry tokens, codes and passwords).
    let route = endpoint.map_or("(unknown)", |e| e.path());
    tracing::info!(
        client = %client,
        via = via.map(tracing::field::display),
        method = %method,
        route = %route,
        status = reply.status,
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    log_security_event(client, via, route, &user_id, &reply);
    log_hidden_events(client, via, route, &user_id, &reply);
    if reply.status == 500 && reply.body.contains("error-code-key-missing") {
        tracing::error!(
            event = "configuration_error",
            setting = "code-key",
            route = %route,
            "the component has no code key of 32 bytes or more: every second-factor check answers 500"
        );
    }
    crate::telemetry::request(route, reply.status, started.elapsed());
    record_two_factor(code_method, &reply);
    let mut resp = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if reply.status == 405 {
        let allow = if endpoint.is_some_and(Endpoint::is_post) {
            "POST"
        } else {
            "GET"
        };
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

async fn dispatch(
    app: &Arc<App>,
    ep: Endpoint,
    client: IpAddr,
    req: axum::extract::Request,
) -> Response {
    let (expected, allowed) = if ep.is_post() {
        (Method::POST, "POST")
    } else {
        (Method::GET, "GET")
    };
    if req.method() != expected {
        crate::refused::drain(req.into_body()).await;
        return ApiError::MethodNotAllowed(allowed).to_response();
    }
    let (parts, body) = req.into_parts();
    let body = if ep.is_post() {
        let read = axum::body::to_bytes(Body::new(body), app.limits.max_body_bytes);
        let bytes = match tokio::time::timeout(app.limits.request_timeout, read).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) if is_length_limit(&e) => {
                return ApiError::BodyTooLarge(app.limits.max_body_bytes).to_response();
            }
            // The client stopped (or was cut off) before its Content-Length.
            Ok(Err(_)) => return ApiError::IncompleteBody.to_response(),
            Err(_) => return ApiError::RequestTimeout.to_response(),
        };
        if !bytes.is_empty() && !is_json(parts.headers.get(header::CONTENT_TYPE)) {
            return ApiError::UnsupportedMediaType.to_response();
        }
        bytes.to_vec()
    } else {
        Vec::new()
    };
    let request = Request {
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.as_str().to_string(),
                value: value.as_bytes().to_vec(),
            })
            .collect(),
        client_address: client.to_string(),
        body,
        query: parts.uri.query().unwrap_or("").to_string(),
    };
    if ep == Endpoint::Login {
        let pool_app = app.clone();
        return match app.passwords.run(move || pool_app.call(ep, &request)).await {
            Ok(reply) => reply,
            Err(PoolError::Busy) => ApiError::TooManyRequests.to_login_response(),
            Err(PoolError::Failed) => {
                tracing::error!(route = ep.path(), "login handler failed");
                ApiError::Internal("The request failed and was stopped").to_response()
            }
        };
    }
    let Ok(_permit) = app.permits.acquire().await else {
        return ApiError::Internal("The server is shutting down").to_response();
    };
    let app = app.clone();
    match tokio::task::spawn_blocking(move || app.call(ep, &request)).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(route = ep.path(), error = %e, "request handler panicked");
            ApiError::Internal("The request failed and was stopped").to_response()
        }
    }
}

/// The second-factor outcome a reply shows, as a metric: a challenge, a
/// wrong code, a lockout (from the error and its `details.method`), or a
/// success of a request that carried a code.
fn record_two_factor(code_method: Option<&'static str>, reply: &Response) {
    use crate::telemetry::{method_label, two_factor};
    if reply.status == 200 {
        if let Some(method) = code_method {
            two_factor(method, "accepted");
        }
        return;
    }
    if !reply.body.contains("totp-") {
        return;
    }
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&reply.body) else {
        return;
    };
    // The PAT routes say `errorType`; the login route says `error`.
    let kind = body["errorType"].as_str().or(body["error"].as_str());
    let outcome = match kind {
        Some("totp-required") => "challenged",
        Some("totp-invalid") => "rejected",
        Some("totp-max-attempts") => "locked_out",
        _ => return,
    };
    two_factor(
        method_label(body["details"]["method"].as_str().unwrap_or("")),
        outcome,
    );
}

/// Security events as their own log lines, from the reply (the component
/// decides; the host reports): failed logins, blocks, wrong codes, lockouts.
/// Never with a secret: the client address and the user id at most.
fn log_security_event(
    client: IpAddr,
    via: Option<IpAddr>,
    route: &str,
    user_id: &str,
    reply: &Response,
) {
    if reply.status < 400 || reply.status >= 500 {
        return;
    }
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&reply.body) else {
        return;
    };
    let kind = body["errorType"]
        .as_str()
        .or(body["error"].as_str())
        .unwrap_or("");
    let event = match kind {
        "Unauthorized" if route == Endpoint::Login.path() => "login_failed",
        "error-login-blocked-for-user" | "error-login-blocked-for-ip" => "login_blocked",
        "error-too-many-requests" => "login_shed",
        "totp-invalid" => "wrong_code",
        "totp-max-attempts" => "two_factor_lockout",
        _ => return,
    };
    tracing::warn!(
        event,
        client = %client,
        via = via.map(tracing::field::display),
        user_id,
        route = %route,
        reason = kind,
        "security"
    );
}

/// The events a reply does not show (the component names them beside it):
/// each a security log line and a count.
fn log_hidden_events(
    client: IpAddr,
    via: Option<IpAddr>,
    route: &str,
    user_id: &str,
    reply: &Response,
) {
    for event in &reply.events {
        match event {
            rcpat::model::SecurityEvent::SupersededTokenReused(token_name) => {
                crate::telemetry::token_reuse_detected();
                tracing::warn!(
                    event = "token_reuse_detected",
                    client = %client,
                    via = via.map(tracing::field::display),
                    user_id,
                    route = %route,
                    // Debug: a name stored before control characters were
                    // refused is escaped, not written raw into the log.
                    token_name = ?token_name,
                    "security: a regenerated token's old value came back; the token was revoked"
                );
            }
        }
    }
}

/// Whether reading a body failed because it exceeded the limit (rather than
/// because it ended early or the connection broke).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// `application/json`, with or without parameters such as `charset`.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}
