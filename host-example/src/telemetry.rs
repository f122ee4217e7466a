//! Metrics, through the `metrics` facade and `metrics-exporter-prometheus`
//! (served on the admin listener, `admin_listener.rs`).
//!
//! Every metric name is here, and every label is a bounded set: routes,
//! statuses, storage call names, 2FA methods and outcomes. No user id, token,
//! address or code is ever a label. Without an installed recorder (tests,
//! `bench`) every recording is a no-op.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
const TOKEN_REUSE: &str = "rcpat_token_reuse_detected_total";

/// One answered request.
pub fn request(route: &'static str, status: u16, elapsed: Duration) {
    counter!(REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    histogram!(REQUEST_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

/// A superseded token value came back and its token was revoked.
pub fn token_reuse_detected() {
    counter!(TOKEN_REUSE).increment(1);
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
