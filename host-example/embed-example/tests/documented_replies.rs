//! The embedding example, run as a newcomer would run it, answers the
//! endpoint documentation's examples byte for byte over HTTP
//! (`shared/spec/regenerate-personal-access-token.txt`), and a regenerated
//! token replaces the old one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Example {
    child: Child,
    addr: String,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Example {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embed-example"))
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    Example { child, addr }
}

/// One HTTP/1.1 request; (status, body).
fn post(ex: &Example, method: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(&ex.addr).unwrap();
    let mut req = format!(
        "POST /api/v1/{method} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    s.write_all(format!("{req}\r\n{body}").as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn field(body: &str, name: &str) -> String {
    let start = body.find(&format!("\"{name}\":\"")).expect(name) + name.len() + 4;
    body[start..].split('"').next().unwrap().to_string()
}

/// Logs in with the demo password: (user id, auth token).
fn login(ex: &Example, user: &str) -> (String, String) {
    let (status, body) =
        post(ex, "login", &[], &format!(r#"{{"user":"{user}","password":"demo-password"}}"#));
    assert_eq!(status, 200, "{body}");
    (field(&body, "userId"), field(&body, "authToken"))
}

#[test]
fn the_example_answers_the_documented_replies() {
    let ex = start();
    let (id, auth) = login(&ex, "alice");
    let digest = rcpat::token::sha256_hex(b"demo-password");
    let me = [("X-User-Id", id.as_str()), ("X-Auth-Token", auth.as_str())];
    let with_2fa = [me[0], me[1], ("x-2fa-method", "password"), ("x-2fa-code", digest.as_str())];
    let name = r#"{"tokenName":"mypersonaltoken"}"#;
    let regenerate = "users.regeneratePersonalAccessToken";

    // 401: no credentials.
    assert_eq!(
        post(&ex, regenerate, &[], name),
        (401, r#"{"status":"error","message":"You must be logged in to do this."}"#.into())
    );
    // Example 1: the second factor is required (the password, for alice).
    assert_eq!(
        post(&ex, regenerate, &me, name),
        (400, r#"{"success":false,"error":"TOTP Required [totp-required]","errorType":"totp-required","details":{"method":"password","codeGenerated":false,"availableMethods":[]}}"#.into())
    );
    // Example 2: no token name.
    assert_eq!(
        post(&ex, regenerate, &with_2fa, "{}"),
        (400, r#"{"success":false,"error":"The 'tokenName' param is required"}"#.into())
    );
    // Example 3: a user whose roles lack the permission.
    let (gid, gauth) = login(&ex, "guest");
    let guest = [
        ("X-User-Id", gid.as_str()),
        ("X-Auth-Token", gauth.as_str()),
        ("x-2fa-method", "password"),
        ("x-2fa-code", digest.as_str()),
    ];
    assert_eq!(
        post(&ex, regenerate, &guest, name),
        (400, r#"{"success":false,"error":"Not Authorized [not-authorized]","errorType":"not-authorized","details":{"method":"personalAccessTokens:generateToken"}}"#.into())
    );
    // 200: generate, then regenerate; the new value authenticates, the old does not.
    let (status, body) = post(&ex, "users.generatePersonalAccessToken", &with_2fa, name);
    assert_eq!(status, 200, "{body}");
    let old = field(&body, "token");
    let (status, body) = post(&ex, regenerate, &with_2fa, name);
    assert_eq!(status, 200, "{body}");
    let new = field(&body, "token");
    assert_eq!(body, format!(r#"{{"token":"{new}","success":true}}"#));
    assert_ne!(new, old);
    let as_pat = |token: &str| post(&ex, "me", &[("X-User-Id", &id), ("X-Auth-Token", token)], "").0;
    assert_eq!((as_pat(&new), as_pat(&old)), (200, 401));
}

/// The README's "Embedding" section shows this example whole: keep them one.
#[test]
fn the_readme_shows_this_example() {
    let readme = include_str!("../../../README.md");
    let example = include_str!("../src/main.rs");
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "README.md's embedding example differs from host-example/embed-example/src/main.rs"
    );
}
