//! Metrics, health and readiness on a separate listener (`--admin-listen`,
//! default 127.0.0.1:9464), for Prometheus, load balancers and Kubernetes
//! probes: `/metrics` (Prometheus text format, through the `metrics` facade
//! and `metrics-exporter-prometheus`), `/health` (the process is up) and
//! `/ready` (storage answers and the component is loaded).
//!
//! Every metric name is here, and every label is a bounded set: routes,
//! statuses, storage call names, 2FA methods and outcomes. No user id, token,
//! address or code is ever a label. Without an installed recorder (tests,
//! `bench`) every recording is a no-op.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::server::{App, Backend};

/// Installs the process-wide Prometheus recorder (once, at `serve`'s start).
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    const LATENCY: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY)?
        .set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), BATCH)?
        .install_recorder()
}

const REQUESTS: &str = "rcpat_http_requests_total";
const REQUEST_SECONDS: &str = "rcpat_http_request_duration_seconds";
const INSTANCES_IN_USE: &str = "rcpat_instances_in_use";
const INSTANCE_POOL: &str = "rcpat_instance_pool_size";
const COMPONENT_FAILURES: &str = "rcpat_component_failures_total";
const STORAGE_SECONDS: &str = "rcpat_storage_operation_duration_seconds";
const STORAGE_ERRORS: &str = "rcpat_storage_errors_total";
const COMMIT_BATCH: &str = "rcpat_sqlite_commit_batch_size";
const TWO_FACTOR: &str = "rcpat_two_factor_total";
const MAIL: &str = "rcpat_mail_total";
const CACHE: &str = "rcpat_component_cache_total";
const CONNECTIONS_REFUSED: &str = "rcpat_connections_refused_total";

/// One answered request.
pub fn request(route: &'static str, status: u16, elapsed: Duration) {
    counter!(REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    histogram!(REQUEST_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

/// A connection over the cap (answered 503 and closed).
pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

/// The instance pool's size, set once.
pub fn instance_pool(size: usize) {
    gauge!(INSTANCE_POOL).set(size as f64);
}

/// Counts an instance in use for as long as the guard lives.
pub struct InstanceInUse(());

impl InstanceInUse {
    pub fn enter() -> Self {
        gauge!(INSTANCES_IN_USE).increment(1.0);
        InstanceInUse(())
    }
}

impl Drop for InstanceInUse {
    fn drop(&mut self) {
        gauge!(INSTANCES_IN_USE).decrement(1.0);
    }
}

/// A component call that failed: `timeout`, `memory_limit`, `trap`, `other`.
pub fn component_failure(kind: &'static str) {
    counter!(COMPONENT_FAILURES, "kind" => kind).increment(1);
}

/// Where the component's imports report (`rcpat_wasmtime::Hooks`): storage
/// latency and errors, mail outcomes, and each failure as a log line with
/// its typed error (the guest only ever sees a fixed text).
pub struct Telemetry;

impl rcpat_wasmtime::Hooks for Telemetry {
    fn storage_call(
        &self,
        call: &'static str,
        elapsed: Duration,
        outcome: Result<(), &rcpat::storage::HostError>,
    ) {
        histogram!(STORAGE_SECONDS, "call" => call).record(elapsed.as_secs_f64());
        if let Err(e) = outcome {
            counter!(STORAGE_ERRORS, "call" => call).increment(1);
            tracing::error!(event = "storage_failed", call, error = %e, "storage call failed");
        }
    }

    fn mail(&self, outcome: Result<(), &rcpat::storage::HostError>) {
        mail(if outcome.is_ok() { "sent" } else { "failed" });
        if let Err(e) = outcome {
            tracing::error!(event = "mail_failed", error = %e, "sending mail failed");
        }
    }
}

/// Writes committed together by SQLite's writer.
pub fn commit_batch(size: usize) {
    histogram!(COMMIT_BATCH).record(size as f64);
}

/// A second-factor outcome: `challenged`, `accepted`, `rejected`,
/// `locked_out`; the method as the client or the challenge named it.
pub fn two_factor(method: &'static str, outcome: &'static str) {
    counter!(TWO_FACTOR, "method" => method, "outcome" => outcome).increment(1);
}

/// A message handed to the mailer: `sent` or `failed`.
pub fn mail(outcome: &'static str) {
    counter!(MAIL, "outcome" => outcome).increment(1);
}

/// How the component was loaded at start: `hit`, `compiled`, ...
pub fn cache(outcome: &'static str) {
    counter!(CACHE, "outcome" => outcome).increment(1);
}

/// A 2FA method name from a client header or a reply, from a fixed set.
pub fn method_label(text: &str) -> &'static str {
    match text {
        "totp" => "totp",
        "email" => "email",
        "password" => "password",
        _ => "other",
    }
}

struct Admin {
    app: Arc<App>,
    handle: PrometheusHandle,
}

/// The admin listener's routes.
pub fn router(app: Arc<App>, handle: PrometheusHandle) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_page))
        .route("/health", axum::routing::get(health))
        .route("/ready", axum::routing::get(ready))
        .with_state(Arc::new(Admin { app, handle }))
}

async fn metrics_page(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        admin.handle.render(),
    )
}

async fn health() -> impl IntoResponse {
    ([("content-type", "application/json")], r#"{"status":"ok"}"#)
}

/// Ready when a storage read answers within a second and the component is
/// loaded (it is, once the server runs: a failed load stops the start).
async fn ready(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let app = admin.app.clone();
    let probe = tokio::task::spawn_blocking(move || {
        // A read every request makes (it finds nothing).
        app.services.storage.authenticate("", "", None).is_ok()
    });
    let storage_ok = matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(true))
    );
    let component = match admin.app.backend {
        Backend::Wasm(_) => "loaded",
        Backend::Native => "native",
    };
    let (status, body) = if storage_ok {
        (
            StatusCode::OK,
            format!(r#"{{"status":"ready","storage":"ok","component":"{component}"}}"#),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"status":"unavailable","storage":"failing","component":"{component}"}}"#),
        )
    };
    (status, [("content-type", "application/json")], body)
}

/// Serves the admin routes on `listener` until `shutdown` completes, with
/// the API listener's connection limits (header timeout, caps).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: crate::connections::ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::connections::Stopped {
    crate::connections::serve(listener, router, None, limits, shutdown).await
}
