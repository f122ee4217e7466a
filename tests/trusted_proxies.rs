//! Issue 26, item 8, over real sockets: behind a trusted reverse proxy
//! (`--trusted-proxies`), the client is the right-most untrusted hop of
//! `X-Forwarded-For`, so one client's failed logins block that client, not
//! everyone behind the proxy; a client cannot choose its address by adding
//! hops; a peer that is not trusted cannot choose it at all; log lines name
//! the client (and the proxy as `via`); a trusted proxy's connections are
//! not held to the per-address cap.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use host_example::admin::{self, UserSpec};

#[test]
fn clients_behind_a_trusted_proxy_are_told_apart() {
    let dir = temp_dir("proxies");
    let db = dir.join("proxies.sqlite");
    let services = host_example::startup::services_from(&host_example::config::Options {
        db: Some(db.clone()),
        ..Default::default()
    })
    .unwrap();
    admin::create_user(
        &services,
        &UserSpec {
            username: "alice",
            email: None,
            password: Some(PASSWORD),
            roles: &["user"],
        },
        COST,
    )
    .unwrap();
    drop(services);
    let (proxy, stranger) = (Ipv4Addr::new(127, 0, 0, 51), Ipv4Addr::new(127, 0, 0, 52));
    let mut child = serve_command(&dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .arg("--db")
        .arg(&db)
        .args(["--trusted-proxies", "127.0.0.51/32,10.0.0.0/8"])
        .args(["--max-failed-logins-per-address", "5"])
        .args(["--max-connections-per-address", "2"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    let log = collect(lines);
    let server: SocketAddrV4 = log_field(&listening, "addr").parse().unwrap();
    let login = |from: Ipv4Addr, forwarded: Option<&str>, user: &str, password: &str| {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        let headers: Vec<(&str, &str)> = forwarded
            .map(|f| ("X-Forwarded-For", f))
            .into_iter()
            .collect();
        post_from(from, server, "/api/v1/login", &headers, &body)
    };

    // An attacker behind the proxy tries made-up names until its address
    // is blocked (5 failures, the per-address limit).
    let attacker = Some("203.0.113.7");
    for i in 0..5 {
        assert_eq!(login(proxy, attacker, &format!("nobody{i}"), "x").0, 401);
    }
    let (status, body) = login(proxy, attacker, "nobody", "x");
    assert_eq!(status, 401);
    assert!(body.contains("error-login-blocked-for-ip"), "{body}");
    // Adding hops of its own changes nothing: the proxy appended the
    // attacker's real address last.
    let (_, body) = login(proxy, Some("198.51.100.1, 203.0.113.7"), "nobody", "x");
    assert!(body.contains("error-login-blocked-for-ip"), "{body}");
    // Nor does a second trusted proxy between them.
    let (_, body) = login(proxy, Some("203.0.113.7, 10.1.2.3"), "nobody", "x");
    assert!(body.contains("error-login-blocked-for-ip"), "{body}");
    // Alice, behind the same proxy, is not blocked.
    let (status, body) = login(proxy, Some("203.0.113.8"), "alice", PASSWORD);
    assert_eq!(status, 200, "{body}");

    // A peer that is not a trusted proxy is counted under its own address,
    // whatever it claims.
    for i in 0..5 {
        let claim = format!("192.0.2.{i}");
        assert_eq!(
            login(stranger, Some(&claim), &format!("stranger{i}"), "x").0,
            401
        );
    }
    let (_, body) = login(stranger, Some("192.0.2.99"), "stranger", "x");
    assert!(body.contains("error-login-blocked-for-ip"), "{body}");
    // ...and its claims do not block the address it named.
    let (status, body) = login(proxy, Some("192.0.2.1"), "alice", PASSWORD);
    assert_eq!(status, 200, "{body}");

    // The log names the client behind the proxy, and the proxy as `via`.
    std::thread::sleep(Duration::from_millis(200));
    let lines = log.lock().unwrap().clone();
    let named = |client: &str| {
        lines
            .iter()
            .filter(|l| l.contains("/api/v1/login") && l.contains(&format!("client={client} ")))
            .cloned()
            .collect::<Vec<_>>()
    };
    let attacker_lines = named("203.0.113.7");
    assert!(attacker_lines.len() >= 8, "{lines:#?}");
    assert!(
        attacker_lines.iter().all(|l| l.contains("via=127.0.0.51")),
        "{attacker_lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("login_blocked") && l.contains("client=203.0.113.7")),
        "{lines:#?}"
    );
    assert!(named("192.0.2.99").is_empty(), "{lines:#?}");
    assert!(
        named("127.0.0.52").iter().all(|l| !l.contains("via=")),
        "{lines:#?}"
    );

    // The proxy holds more connections than the per-address cap (2); a
    // stranger does not.
    let count_held = |from: Ipv4Addr| {
        let opened: Vec<_> = (0..6).map(|_| connect_from(from, server)).collect();
        std::thread::sleep(Duration::from_millis(500));
        opened
            .into_iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 12];
                let mut reader: &std::net::TcpStream = s;
                !matches!(reader.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"503")
            })
            .count()
    };
    assert_eq!(count_held(proxy), 6);
    assert_eq!(count_held(stranger), 2);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// A typo in `--trusted-proxies` stops the server at start, naming it.
#[test]
fn a_malformed_trusted_proxy_is_refused_at_start() {
    let dir = temp_dir("proxies-bad");
    let out = serve_command(&dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--storage", "memory"])
        .args(["--trusted-proxies", "10.0.0.1/8"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("did you mean 10.0.0.0/8"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
