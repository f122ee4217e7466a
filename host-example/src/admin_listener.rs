//! The admin listener (`--admin-listen`, default 127.0.0.1:9464), for
//! Prometheus, load balancers and Kubernetes probes: `/metrics` (Prometheus
//! text format, recorded by `telemetry.rs`), `/health` (the process is up)
//! and `/ready` (storage answers and the component is loaded), with the API
//! listener's connection limits (`connections.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::server::{App, Backend};

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
        app.services.storage().authenticate("", "", None).is_ok()
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
