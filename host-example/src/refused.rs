//! Requests the server refuses before reading their body (404, 405).

use std::time::Duration;

use axum::body::Body;

/// The most of a refused request's body read before its reply (a larger one
/// is left unread, and its connection closed).
const DRAINED_BODY_BYTES: usize = 16 * 1024;
/// The longest a refused request's body is waited for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the small body of a request refused without it (404, 405) to its
/// end, bounded in size and time: a reply sent before the body arrived
/// makes hyper close the connection, and a client reusing it for its next
/// request would find it gone.
pub async fn drain(body: Body) {
    let _ = tokio::time::timeout(
        DRAIN_TIMEOUT,
        axum::body::to_bytes(body, DRAINED_BODY_BYTES),
    )
    .await;
}
