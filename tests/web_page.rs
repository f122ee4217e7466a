//! The token page as `serve` sends it (`host-example/src/web.rs`): the page
//! and its files with the strict policy, nothing inline, and `--web false`
//! leaving only the JSON API. (The page at work, in a real browser, is
//! `host-example/web/test/`, which `./dev test` runs in Chromium.)

use crate::common::*;

#[test]
fn the_page_and_its_files_carry_the_policy() {
    let dir = temp_dir("web-page");
    let (mut child, base) = serve_on(&dir, &["--storage", "memory"]);
    let agent = http_agent();
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let mut r = agent.get(format!("{base}{path}")).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("content-type").as_deref(), Some(kind), "{path}");
        assert_eq!(
            h("content-security-policy").as_deref(),
            Some(host_example::web::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert_eq!(
            h("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            h("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(h("cache-control").as_deref(), Some("no-store"), "{path}");
        let body = r.body_mut().read_to_string().unwrap();
        if path == "/" {
            // Scripts only from files (the policy would refuse inline ones anyway).
            assert!(body.contains(r#"<script src="/app.js" defer></script>"#));
            assert_eq!(body.matches("<script").count(), 1);
            let handler = body
                .split_whitespace()
                .find(|w| w.starts_with("on") && w.contains('='));
            assert_eq!(handler, None, "no inline event handler");
        }
    }
    let csp = host_example::web::CONTENT_SECURITY_POLICY;
    for directive in [
        "default-src 'none'",
        "script-src 'self';",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "{directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    // Another method: the API's 405, in its JSON shape.
    let mut r = agent.post(format!("{base}/")).send("x").unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "GET,HEAD");
    assert!(r.body_mut().read_to_string().unwrap().starts_with('{'));
    // The API is unchanged beside it.
    let r = agent.get(format!("{base}/api/v1/me")).call().unwrap();
    assert_eq!(r.status(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn web_false_serves_only_the_api() {
    let dir = temp_dir("web-off");
    let (mut child, base) = serve_on(&dir, &["--storage", "memory", "--web", "false"]);
    let agent = http_agent();
    for path in ["/", "/app.js", "/app.css"] {
        let mut r = agent.get(format!("{base}{path}")).call().unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.body_mut().read_to_string().unwrap().starts_with('{'),
            "{path}: the API's JSON 404"
        );
    }
    let r = agent.get(format!("{base}/api/v1/me")).call().unwrap();
    assert_eq!(r.status(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
}
