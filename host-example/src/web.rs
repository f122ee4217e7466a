//! The token page (`--web`, on by default): `GET /` and the two files it
//! loads, embedded in the binary (`host-example/web/`), with no third-party
//! asset and no network fetch beyond this server's own REST routes. Served
//! with a strict policy: scripts and styles from this origin only (no
//! inline script), no framing, no referrer, nothing cached.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy every page response carries (`tests/web_page.rs` checks it as
/// served). `form-action 'none'`: a form the script failed to take over
/// cannot send a password anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/app.css");
const ICON: &str = include_str!("../web/favicon.svg");

/// The page's routes, for any router state (the API's fallback handles the rest).
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        // Another method on the page's paths: the API's 405, in its JSON
        // shape (axum adds `Allow: GET,HEAD`).
        .method_not_allowed_fallback(|body: axum::body::Body| async move {
            crate::refused::drain(body).await;
            let reply = rcpat::reply::ApiError::MethodNotAllowed("GET").to_response();
            let mut resp = (StatusCode::METHOD_NOT_ALLOWED, reply.body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    resp
}
