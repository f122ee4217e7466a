//! `host-example serve`: Rocket.Chat's REST paths for personal access tokens
//! over HTTP/1.1, one fresh component instance per request.
//!
//! The HTTP layer only routes, bounds and logs: 404/405/413/415 are answered
//! here (in Rocket.Chat's error shape, rendered by the component crate's
//! `reply` module); everything else is the component's reply, passed through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use tokio::sync::Semaphore;

use rcpat::model::{Header, Request, Response, Settings};
use rcpat::reply::ApiError;

use crate::runtime::{Endpoint, Runtime};
use crate::services::Services;

/// Where the logic runs.
pub enum Backend {
    /// In the component, in wasmtime (the product).
    Wasm(Box<Runtime>),
    /// Linked natively (the baseline for benchmarks).
    Native,
}

pub struct App {
    pub backend: Backend,
    pub services: Services,
    pub settings: Settings,
    pub max_body_bytes: usize,
    /// At most this many requests run at once (the instance pool's size).
    permits: Semaphore,
}

impl App {
    pub fn new(
        backend: Backend,
        services: Services,
        settings: Settings,
        max_body_bytes: usize,
        concurrency: usize,
    ) -> Self {
        App {
            backend,
            services,
            settings,
            max_body_bytes,
            permits: Semaphore::new(concurrency.max(1)),
        }
    }

    /// Runs one endpoint to completion (blocking: wasm, SQLite, bcrypt).
    pub fn call(&self, endpoint: Endpoint, req: &Request) -> Response {
        match &self.backend {
            Backend::Native => endpoint.call_native(&self.services, &self.settings, req),
            Backend::Wasm(runtime) => {
                match runtime.call(&self.services, endpoint, &self.settings, req) {
                    Ok(r) => r,
                    Err(e) => {
                        let reason = describe_failure(&e);
                        tracing::warn!(route = endpoint.path(), error = %e, "component call failed");
                        ApiError::Internal(reason).to_response()
                    }
                }
            }
        }
    }
}

/// A client-facing explanation of a trap (never its internals).
fn describe_failure(e: &wasmtime::Error) -> &'static str {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "The request exceeded its time limit and was stopped",
        _ if format!("{e:?}").contains("memory") => {
            "The request exceeded its memory limit and was stopped"
        }
        _ => "The request failed inside the component and was stopped",
    }
}

pub fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(app)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let endpoint = Endpoint::ALL.into_iter().find(|e| e.path() == path);
    let reply = match endpoint {
        None => ApiError::NotFound.to_response(),
        Some(ep) => dispatch(&app, ep, peer, req).await,
    };
    // One line per request: route, status, latency. Never headers or bodies.
    tracing::info!(
        method = %method,
        route = %endpoint.map_or("(unknown)", |e| e.path()),
        status = reply.status,
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
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
    peer: SocketAddr,
    req: axum::extract::Request,
) -> Response {
    let (expected, allowed) = if ep.is_post() {
        (Method::POST, "POST")
    } else {
        (Method::GET, "GET")
    };
    if req.method() != expected {
        return ApiError::MethodNotAllowed(allowed).to_response();
    }
    let (parts, body) = req.into_parts();
    let body = if ep.is_post() {
        let bytes = match axum::body::to_bytes(Body::new(body), app.max_body_bytes).await {
            Ok(b) => b,
            Err(e) if is_length_limit(&e) => {
                return ApiError::BodyTooLarge(app.max_body_bytes).to_response();
            }
            // The client stopped (or was cut off) before its Content-Length.
            Err(_) => return ApiError::IncompleteBody.to_response(),
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
        client_address: peer.ip().to_string(),
        body,
    };
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

/// Opens the configured storage and mailer.
pub fn services_from(opts: &crate::config::Options) -> Result<Services, String> {
    use crate::config::StorageKind;
    let keys = Arc::new(match opts.storage() {
        // Codes stored in memory die with the process; so may their key.
        StorageKind::Memory if opts.secret_key_file.is_none() => crate::keys::Keys::random(),
        _ => crate::keys::Keys::load(&opts.secret_key_file())?,
    });
    let storage: Arc<dyn crate::storage::Storage> = match opts.storage() {
        StorageKind::Sqlite => Arc::new(crate::storage::SqliteStorage::open_with_keys(
            opts.db(),
            keys.clone(),
        )?),
        StorageKind::Memory => Arc::new(crate::storage::MemoryStorage::new()),
    };
    let from = opts
        .mail_from
        .clone()
        .unwrap_or_else(|| crate::mail::DEFAULT_FROM.into());
    let mailer: Arc<dyn crate::mail::Mailer> = match &opts.smtp {
        Some(server) => Arc::new(crate::mail::SmtpMailer::new(server, &from)?),
        None => Arc::new(
            crate::mail::Outbox::with_sender(opts.outbox(), &from)
                .map_err(|e| format!("outbox: {e}"))?,
        ),
    };
    Ok(Services::new(storage, mailer).with_keys(keys))
}

/// Builds the application the options describe; also says whether the
/// compiled component came from the cache (`None` for the native backend).
pub fn app_from(
    opts: &crate::config::Options,
) -> Result<(App, Option<crate::cache::CacheOutcome>), String> {
    let services = services_from(opts)?;
    let runtime_config = opts.runtime();
    let concurrency = runtime_config.max_instances as usize;
    let (backend, outcome) = if opts.native() {
        (Backend::Native, None)
    } else {
        let owned;
        let wasm: &[u8] = match &opts.component {
            Some(path) => {
                owned = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                &owned
            }
            None => crate::COMPONENT,
        };
        let (runtime, outcome) = Runtime::cached(wasm, runtime_config, opts.cache_dir().as_deref())
            .map_err(|e| format!("loading the component: {e:?}"))?;
        (Backend::Wasm(Box::new(runtime)), Some(outcome))
    };
    Ok((
        App::new(
            backend,
            services,
            opts.settings(),
            opts.max_body_bytes(),
            concurrency,
        ),
        outcome,
    ))
}

/// A server running on its own thread and tokio runtime (tests, benches).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub cache: Option<crate::cache::CacheOutcome>,
    pub startup: std::time::Duration,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Starts a server for `opts` (listening where they say; port 0 picks one).
    pub fn start(opts: &crate::config::Options) -> Result<Self, String> {
        let started = Instant::now();
        let (app, cache) = app_from(opts)?;
        let listener = std::net::TcpListener::bind(opts.listen())
            .map_err(|e| format!("bind {}: {e}", opts.listen()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Arc::new(app);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = serve(listener, app, async move {
                    let _ = rx.await;
                })
                .await;
            });
        });
        Ok(RunningServer {
            addr,
            cache,
            startup: started.elapsed(),
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
