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

/// A request refused before its body is read (405 on the page or the API,
/// 404) must not cost its connection: the reply waits for a small body, so
/// a client that sends the body after the headers can reuse the connection
/// (before, hyper closed it, and the next request on it failed: the cause
/// of this file's first test failing now and then).
#[test]
fn a_refused_request_leaves_its_connection_usable() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let dir = temp_dir("refused-keepalive");
    let (mut child, base) = serve_on(&dir, &["--storage", "memory"]);
    let addr = base.trim_start_matches("http://").to_string();
    for (path, status) in [
        ("/", "405"),
        ("/api/v1/me", "405"),
        ("/nope", "404"),
        ("/api/v1/users.getPersonalAccessTokens", "405"),
    ] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(b"x").unwrap();
        let first = read_reply(&mut s);
        assert!(
            first.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {first}"
        );
        s.write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let second = read_reply(&mut s);
        assert!(
            second.starts_with("HTTP/1.1 401"),
            "{path}: then {second:?}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();

    /// One reply: headers, then content-length bytes ("" if the peer closed).
    fn read_reply(s: &mut std::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => buf.push(byte[0]),
                _ => return String::from_utf8_lossy(&buf).into_owned(),
            }
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        head + &String::from_utf8_lossy(&body)
    }
}
