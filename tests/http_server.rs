//! HTTP-level tests against a real `serve` on an ephemeral loopback port.

use crate::common::temp_dir;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use std::sync::{Arc, Barrier, Mutex};

use host_example::admin::{self, UserSpec};
use host_example::cache::CacheOutcome;
use host_example::clock::{Clock, SystemClock};
use host_example::config::{Options, StorageKind};
use host_example::startup::{RunningServer, services_from};
use rcpat::model::TotpAlgorithm;
use serde_json::Value;

const PASSWORD: &str = "s3cret password";

fn options(dir: &std::path::Path) -> Options {
    Options {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        storage: Some(StorageKind::Sqlite),
        db: Some(dir.join("rcpat.sqlite")),
        outbox: Some(dir.join("outbox")),
        cache_dir: Some(crate::common::shared_cache_dir()),
        ..Options::default()
    }
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

struct Reply {
    status: u16,
    json: Value,
    headers: Vec<(String, String)>,
}

impl Client {
    fn new(server: &RunningServer) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            agent,
            base: server.url(""),
        }
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::reply(req.send(body).expect("the server answers"))
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::reply(req.call().expect("the server answers"))
    }

    fn reply(mut resp: ureq::http::Response<ureq::Body>) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = resp.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        Reply {
            status,
            json,
            headers,
        }
    }
}

/// Creates a user in the server's database (the admin CLI's code path).
fn add_user(
    opts: &Options,
    name: &str,
    totp: bool,
    email_2fa: bool,
) -> (String, Option<admin::TotpSetup>) {
    let services = services_from(opts).unwrap();
    let email = format!("{name}@example.org");
    let spec = UserSpec {
        username: name,
        email: Some(&email),
        password: Some(PASSWORD),
        roles: &["user"],
    };
    let id = admin::create_user(&services, &spec, 4).unwrap();
    let setup =
        totp.then(|| admin::enable_totp(&services, &id, name, TotpAlgorithm::Sha1, 6).unwrap());
    if email_2fa {
        services.storage().set_email_two_factor(&id, true).unwrap();
    }
    (id, setup)
}

fn totp_now(setup: &admin::TotpSetup, offset: i64) -> String {
    admin::totp_code(
        &setup.secret,
        TotpAlgorithm::Sha1,
        6,
        SystemClock.now_ms(),
        offset,
    )
}

fn auth<'a>(id: &'a str, token: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("X-User-Id", id), ("X-Auth-Token", token)]
}

#[test]
fn login_challenge_totp_then_regenerate() {
    let dir = temp_dir("totp");
    let opts = options(&dir);
    let (id, setup) = add_user(&opts, "alice", true, false);
    let setup = setup.unwrap();
    let server = RunningServer::start(&opts).unwrap();
    let c = Client::new(&server);

    // Wrong password: Rocket.Chat's 401.
    let r = c.post(
        "/api/v1/login",
        &[],
        r#"{"user":"alice","password":"nope"}"#,
    );
    assert_eq!(
        (r.status, &r.json),
        (
            401,
            &serde_json::json!({"status":"error","error":"Unauthorized","message":"Unauthorized"})
        )
    );
    // Right password, no code: the 2FA challenge clients look for.
    let r = c.post(
        "/api/v1/login",
        &[],
        &format!(r#"{{"user":"alice","password":"{PASSWORD}"}}"#),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"], "totp-required");
    assert_eq!(r.json["details"]["method"], "totp");
    // Retry with the code in the headers.
    // Codes come from the real clock: this step at login and the next one for the
    // regeneration, so a step boundary in between cannot push either out of the window.
    let code = totp_now(&setup, 0);
    let r = c.post(
        "/api/v1/login",
        &[("x-2fa-code", &code), ("x-2fa-method", "totp")],
        &format!(r#"{{"username":"alice","password":"{PASSWORD}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "success");
    assert_eq!(r.json["data"]["userId"], id.as_str());
    assert_eq!(r.json["data"]["me"]["username"], "alice");
    let session = r.json["data"]["authToken"].as_str().unwrap().to_string();

    // Generate (with a backup code), then regenerate after a challenge.
    let mut h = auth(&id, &session);
    h.extend([
        ("x-2fa-method", "totp"),
        ("x-2fa-code", setup.backup_codes[0].as_str()),
    ]);
    let r = c.post(
        "/api/v1/users.generatePersonalAccessToken",
        &h,
        r#"{"tokenName":"ci"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let old = r.json["token"].as_str().unwrap().to_string();
    let r = c.post(
        "/api/v1/users.regeneratePersonalAccessToken",
        &auth(&id, &session),
        r#"{"tokenName":"ci"}"#,
    );
    assert_eq!(
        (r.status, r.json["errorType"].as_str()),
        (400, Some("totp-required"))
    );
    let code = totp_now(&setup, 1);
    let mut h = auth(&id, &session);
    h.extend([("x-2fa-method", "totp"), ("x-2fa-code", code.as_str())]);
    let r = c.post(
        "/api/v1/users.regeneratePersonalAccessToken",
        &h,
        r#"{"tokenName":"ci"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let new = r.json["token"].as_str().unwrap().to_string();

    // The PAT works as X-Auth-Token for `me`; the old one is 401.
    let r = c.get("/api/v1/me", &auth(&id, &new));
    assert_eq!(
        (
            r.status,
            r.json["username"].as_str(),
            r.json["success"].as_bool()
        ),
        (200, Some("alice"), Some(true))
    );
    let r = c.get("/api/v1/me", &auth(&id, &old));
    assert_eq!(
        (r.status, &r.json),
        (
            401,
            &serde_json::json!({"status":"error","message":"You must be logged in to do this."})
        )
    );
    let r = c.get("/api/v1/users.getPersonalAccessTokens", &auth(&id, &new));
    assert_eq!(r.json["tokens"][0]["name"], "ci");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn email_and_password_methods() {
    let dir = temp_dir("email");
    let opts = options(&dir);
    let (eid, _) = add_user(&opts, "emma", false, true);
    let (pid, _) = add_user(&opts, "paul", false, false);
    let services = services_from(&opts).unwrap();
    let emma_pat = admin::issue_personal_access_token(&services, &eid, "ci", false).unwrap();
    let paul_pat = admin::issue_personal_access_token(&services, &pid, "ci", false).unwrap();
    drop(services);
    let server = RunningServer::start(&opts).unwrap();
    let c = Client::new(&server);

    let r = c.post(
        "/api/v1/users.regeneratePersonalAccessToken",
        &auth(&eid, &emma_pat),
        r#"{"tokenName":"ci"}"#,
    );
    assert_eq!(
        (
            r.status,
            r.json["details"]["method"].as_str(),
            r.json["details"]["codeGenerated"].as_bool()
        ),
        (400, Some("email"), Some(true))
    );
    let outbox = host_example::mail::Outbox::new(dir.join("outbox")).unwrap();
    let (_, mail) = outbox
        .messages()
        .pop()
        .expect("the code was mailed to the outbox");
    assert!(mail.contains("To: emma@example.org"));
    let code = host_example::mail::code_in(&mail).unwrap();
    let mut h = auth(&eid, &emma_pat);
    h.extend([("x-2fa-method", "email"), ("x-2fa-code", code.as_str())]);
    assert_eq!(
        c.post(
            "/api/v1/users.regeneratePersonalAccessToken",
            &h,
            r#"{"tokenName":"ci"}"#
        )
        .status,
        200
    );

    let r = c.post(
        "/api/v1/users.regeneratePersonalAccessToken",
        &auth(&pid, &paul_pat),
        r#"{"tokenName":"ci"}"#,
    );
    assert_eq!(r.json["details"]["method"], "password");
    let digest = rcpat::token::password_digest(PASSWORD);
    let mut h = auth(&pid, &paul_pat);
    h.extend([
        ("x-2fa-method", "password"),
        ("x-2fa-code", digest.as_str()),
    ]);
    assert_eq!(
        c.post(
            "/api/v1/users.regeneratePersonalAccessToken",
            &h,
            r#"{"tokenName":"ci"}"#
        )
        .status,
        200
    );
    // Login with a password digest object, as Rocket.Chat clients send it.
    let r = c.post("/api/v1/login", &[], &format!(r#"{{"user":"paul@example.org","password":{{"digest":"{digest}","algorithm":"sha-256"}}}}"#));
    assert_eq!(r.status, 200, "{}", r.json);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_errors_have_rocket_chat_shape_and_the_server_keeps_serving() {
    let dir = temp_dir("errors");
    let opts = options(&dir);
    let server = RunningServer::start(&opts).unwrap();
    let c = Client::new(&server);
    let r = c.get("/api/v1/nope", &[]);
    assert_eq!(
        (r.status, r.json["errorType"].as_str()),
        (404, Some("error-not-found"))
    );
    let r = c.get("/api/v1/users.regeneratePersonalAccessToken", &[]);
    assert_eq!(
        (r.status, r.json["errorType"].as_str()),
        (405, Some("error-method-not-allowed"))
    );
    assert!(r.headers.iter().any(|(k, v)| k == "allow" && v == "POST"));
    let resp = c
        .agent
        .post(c.base.clone() + "/api/v1/users.regeneratePersonalAccessToken")
        .header("Content-Type", "text/plain")
        .send("tokenName=x")
        .unwrap();
    let r = Client::reply(resp);
    assert_eq!(
        (r.status, r.json["errorType"].as_str()),
        (415, Some("error-unsupported-media-type"))
    );
    let big = format!(r#"{{"tokenName":"{}"}}"#, "x".repeat(100_000));
    let r = c.post("/api/v1/users.regeneratePersonalAccessToken", &[], &big);
    assert_eq!(
        (r.status, r.json["errorType"].as_str()),
        (413, Some("error-request-too-large"))
    );
    let r = c.post("/api/v1/users.regeneratePersonalAccessToken", &[], "{nope");
    assert_eq!(
        (r.status, r.json["errorType"].as_str()),
        (400, Some("error-invalid-body"))
    );
    let r = c.post(
        "/api/v1/users.regeneratePersonalAccessToken",
        &[],
        r#"{"tokenName":"x"}"#,
    );
    assert_eq!(r.status, 401);
    let r = c.post("/api/v1/login", &[], r#"{"password":"x"}"#);
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("error-invalid-params"))
    );
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/json")
    );
    // A body shorter than its Content-Length (the client stops sending) is
    // a bad request, not a "too large" one.
    let reply = raw_exchange(
        server.addr,
        "POST /api/v1/users.regeneratePersonalAccessToken HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tokenName\":",
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains(r#""errorType":"error-invalid-body""#),
        "{reply}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Sends `request` over a raw socket, closes the sending half, and returns
/// everything the server answers.
fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

#[test]
fn concurrent_burst_over_http_leaves_one_valid_token() {
    let dir = temp_dir("burst");
    let opts = options(&dir);
    let (id, _) = add_user(&opts, "burst", false, false);
    let services = services_from(&opts).unwrap();
    let pat = admin::issue_personal_access_token(&services, &id, "shared", true).unwrap();
    let session = admin::issue_login_token(&services, &id).unwrap();
    let server = RunningServer::start(&opts).unwrap();
    let threads = 16;
    let barrier = Arc::new(Barrier::new(threads));
    let issued = Arc::new(Mutex::new(vec![pat.clone()]));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (barrier, issued, base, id) =
                (barrier.clone(), issued.clone(), server.url(""), id.clone());
            let token = if i % 2 == 0 {
                pat.clone()
            } else {
                session.clone()
            };
            std::thread::spawn(move || {
                let c = Client {
                    agent: ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into(),
                    base,
                };
                barrier.wait();
                let digest = rcpat::token::password_digest(PASSWORD);
                let mut h = auth(&id, &token);
                h.extend([
                    ("x-2fa-method", "password"),
                    ("x-2fa-code", digest.as_str()),
                ]);
                let r = c.post(
                    "/api/v1/users.regeneratePersonalAccessToken",
                    &h,
                    r#"{"tokenName":"shared"}"#,
                );
                match r.status {
                    200 => issued
                        .lock()
                        .unwrap()
                        .push(r.json["token"].as_str().unwrap().to_string()),
                    401 | 409 => {}
                    other => panic!("undefined reply {other} {}", r.json),
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let issued = issued.lock().unwrap();
    let live: Vec<_> = issued
        .iter()
        .filter(|t| {
            services
                .storage()
                .authenticate(&id, &rcpat::token::hash_token(t), None)
                .unwrap()
                .is_some()
        })
        .collect();
    assert_eq!(
        live.len(),
        1,
        "exactly one token of the name authenticates ({} issued)",
        issued.len()
    );
    assert_eq!(
        services
            .storage()
            .token_hashes_named(&id, "shared")
            .unwrap()
            .len(),
        1
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hostile_guest_is_contained() {
    let dir = temp_dir("hostile");
    let mut opts = options(&dir);
    opts.component = Some(host_example::HOSTILE_COMPONENT_PATH.into());
    opts.timeout_ms = Some(300);
    opts.memory_limit_mb = Some(8);
    opts.no_cache = Some(true);
    let server = RunningServer::start(&opts).unwrap();
    let c = Client::new(&server);
    let path = "/api/v1/users.regeneratePersonalAccessToken";
    let r = c.post(path, &[], "loop");
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (
            500,
            Some("The request exceeded its time limit and was stopped [error-internal]")
        )
    );
    let r = c.post(path, &[], "oom");
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (
            500,
            Some("The request exceeded its memory limit and was stopped [error-internal]")
        )
    );
    let r = c.post(path, &[], "trap");
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (
            500,
            Some("The request failed inside the component and was stopped [error-internal]")
        )
    );
    // The next request is served normally, and so are many after the failures.
    for _ in 0..20 {
        let r = c.post(path, &[], "ok");
        assert_eq!(
            (r.status, &r.json),
            (200, &serde_json::json!({"success": true}))
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn restart_keeps_data_and_uses_the_compiled_cache() {
    let dir = temp_dir("restart");
    // Its own cache, to see it filled, hit and repaired.
    let opts = Options {
        cache_dir: Some(dir.join("cache")),
        ..options(&dir)
    };
    let (id, _) = add_user(&opts, "rita", false, false);
    let services = services_from(&opts).unwrap();
    let session = admin::issue_login_token(&services, &id).unwrap();
    drop(services);
    let digest = rcpat::token::password_digest(PASSWORD);
    let mut h = auth(&id, &session);
    h.extend([
        ("x-2fa-method", "password"),
        ("x-2fa-code", digest.as_str()),
    ]);

    let first = RunningServer::start(&opts).unwrap();
    assert_eq!(first.cache, Some(CacheOutcome::Compiled));
    let r = Client::new(&first).post(
        "/api/v1/users.generatePersonalAccessToken",
        &h,
        r#"{"tokenName":"keep"}"#,
    );
    let token = r.json["token"].as_str().unwrap().to_string();
    drop(first);

    let second = RunningServer::start(&opts).unwrap();
    assert_eq!(second.cache, Some(CacheOutcome::Hit));
    let r = Client::new(&second).get("/api/v1/me", &auth(&id, &token));
    assert_eq!(
        r.status, 200,
        "the token issued before the restart still works"
    );
    drop(second);

    // A corrupt artifact is recompiled, not trusted.
    for entry in std::fs::read_dir(dir.join("cache")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "cwasm") {
            std::fs::write(path, b"garbage").unwrap();
        }
    }
    let third = RunningServer::start(&opts).unwrap();
    assert_eq!(third.cache, Some(CacheOutcome::Compiled));
    drop(third);
    let _ = std::fs::remove_dir_all(dir);
}

/// A minimal SMTP receiver on loopback: accepts one message, returns its DATA.
fn smtp_receiver() -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream);
        let mut data = String::new();
        writeln!(out, "220 localhost ESMTP test\r").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let cmd = line.trim_end().to_ascii_uppercase();
            if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                write!(out, "250-localhost\r\n250 OK\r\n").unwrap();
            } else if cmd == "DATA" {
                write!(out, "354 go ahead\r\n").unwrap();
                loop {
                    line.clear();
                    lines.read_line(&mut line).unwrap();
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                write!(out, "250 queued\r\n").unwrap();
            } else if cmd == "QUIT" {
                write!(out, "221 bye\r\n").unwrap();
                break;
            } else {
                write!(out, "250 OK\r\n").unwrap();
            }
        }
        data
    });
    (addr, handle)
}

#[test]
fn email_codes_are_delivered_over_smtp() {
    let dir = temp_dir("smtp");
    let (smtp, receiver) = smtp_receiver();
    let mut opts = options(&dir);
    opts.smtp = Some(smtp);
    // This receiver speaks plain SMTP only (tests/tls.rs has STARTTLS and AUTH).
    opts.smtp_tls = Some(host_example::mail::SmtpTls::None);
    let (id, _) = add_user(&opts, "sam", false, true);
    let services = services_from(&opts).unwrap();
    let pat = admin::issue_personal_access_token(&services, &id, "ci", false).unwrap();
    let server = RunningServer::start(&opts).unwrap();
    let c = Client::new(&server);
    let r = c.post(
        "/api/v1/users.regeneratePersonalAccessToken",
        &auth(&id, &pat),
        r#"{"tokenName":"ci"}"#,
    );
    assert_eq!(r.json["details"]["codeGenerated"], true, "{}", r.json);
    let data = receiver.join().unwrap();
    assert!(data.contains("Subject: Authentication code"), "{data}");
    let code = host_example::mail::code_in(&data).expect("a code in the message");
    let mut h = auth(&id, &pat);
    h.extend([("x-2fa-method", "email"), ("x-2fa-code", code.as_str())]);
    assert_eq!(
        c.post(
            "/api/v1/users.regeneratePersonalAccessToken",
            &h,
            r#"{"tokenName":"ci"}"#
        )
        .status,
        200
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// The second-factor rules over real sockets, as an attacker with a stolen
/// password or session would try them: a method the user lacks, 64 guesses
/// at once, a session that outlives its logout; and what the server writes
/// at rest (the key file, mail with the configured sender).
#[test]
fn stolen_credentials_over_http() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("stolen");
    let mut opts = options(&dir);
    opts.mail_from = Some("Ops <ops@example.org>".into());
    // All 64 guesses reach the component (the password pool would shed
    // most of them with 429 otherwise, which a separate test shows). Fewer
    // workers than the per-account login limit: a password check in flight
    // counts until it succeeds, so ten right passwords checked at the same
    // instant would briefly block the account.
    opts.password_workers = Some(8);
    opts.password_wait_ms = Some(30_000);
    let (tid, setup) = add_user(&opts, "tina", true, false);
    let setup = setup.unwrap();
    let (eid, _) = add_user(&opts, "emil", false, true);
    let services = services_from(&opts).unwrap();
    let emil_pat = admin::issue_personal_access_token(&services, &eid, "ci", false).unwrap();
    admin::issue_personal_access_token(&services, &tid, "ci", false).unwrap();
    drop(services);
    // The code key lives beside the database, owner-only.
    let key = dir.join("rcpat.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let server = RunningServer::start(&opts).unwrap();
    let c = Client::new(&server);
    let login = format!(r#"{{"user":"tina","password":"{PASSWORD}"}}"#);

    // Asking for email with a TOTP-only user: the TOTP challenge, no mail.
    let r = c.post("/api/v1/login", &[("x-2fa-method", "email")], &login);
    assert_eq!(
        (r.status, r.json["details"]["method"].as_str()),
        (401, Some("totp"))
    );
    assert!(
        !dir.join("outbox").exists()
            || std::fs::read_dir(dir.join("outbox"))
                .unwrap()
                .next()
                .is_none()
    );

    // 64 wrong codes at once: at most the limit are evaluated.
    let barrier = Arc::new(Barrier::new(64));
    let taken: Vec<String> = (-1..=1).map(|o| totp_now(&setup, o)).collect();
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let (barrier, base, login) = (barrier.clone(), c.base.clone(), login.clone());
            let code = (0..)
                .map(|k| format!("{:06}", (i * 7919 + k) % 1_000_000))
                .find(|c| !taken.contains(c))
                .unwrap();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                barrier.wait();
                let mut resp = agent
                    .post(format!("{base}/api/v1/login"))
                    .header("Content-Type", "application/json")
                    .header("x-2fa-method", "totp")
                    .header("x-2fa-code", &code)
                    .send(&login)
                    .unwrap();
                let json: Value =
                    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
                json["error"].as_str().unwrap_or("").to_string()
            })
        })
        .collect();
    let errors: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        errors.iter().filter(|e| *e == "totp-invalid").count(),
        9,
        "{errors:?}"
    );
    assert_eq!(
        errors.iter().filter(|e| *e == "totp-max-attempts").count(),
        55,
        "{errors:?}"
    );

    // Emailed codes go out from the configured sender.
    let r = c.post(
        "/api/v1/users.regeneratePersonalAccessToken",
        &auth(&eid, &emil_pat),
        r#"{"tokenName":"ci"}"#,
    );
    assert_eq!(r.json["details"]["codeGenerated"], true);
    let outbox = host_example::mail::Outbox::new(dir.join("outbox")).unwrap();
    let (path, mail) = outbox.messages().pop().unwrap();
    assert!(mail.contains("From: Ops <ops@example.org>\r\n"), "{mail}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Logout ends the session at once.
    let services = services_from(&opts).unwrap();
    let session = admin::issue_login_token(&services, &eid).unwrap();
    drop(services);
    assert_eq!(c.get("/api/v1/me", &auth(&eid, &session)).status, 200);
    let r = c.post("/api/v1/logout", &auth(&eid, &session), "");
    assert_eq!(
        (r.status, r.json["data"]["message"].as_str()),
        (200, Some("You've been logged out!"))
    );
    assert_eq!(c.get("/api/v1/me", &auth(&eid, &session)).status, 401);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Slow and idle clients over real sockets: a half-sent header, headers
/// dripped a byte at a time, an idle keep-alive connection and a stalled
/// body are all cut off at the time limit, while others are served; above
/// the connection cap a client gets a 503.
#[test]
fn slow_and_idle_clients_are_cut_off_and_others_served() {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = temp_dir("slow");
    let mut opts = options(&dir);
    opts.request_timeout_secs = Some(1);
    opts.max_connections = Some(12);
    let server = RunningServer::start(&opts).unwrap();
    let c = Client::new(&server);
    let connect = || {
        let s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    // Closed (EOF or reset) within the limit, after maybe an error reply.
    let closed_within = |mut s: TcpStream, what: &str| {
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(4),
            "{what}: open for {waited:?}"
        );
        String::from_utf8_lossy(&buf).into_owned()
    };

    let mut half = connect();
    half.write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nX-Us")
        .unwrap();
    let mut stalled_body = connect();
    stalled_body
        .write_all(
            b"POST /api/v1/users.regeneratePersonalAccessToken HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tok",
        )
        .unwrap();
    let mut idle = connect();
    idle.write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Meanwhile other clients are served at once.
    let started = Instant::now();
    assert_eq!(c.get("/api/v1/me", &[]).status, 401);
    assert!(started.elapsed() < Duration::from_millis(500));
    // A byte every 300 ms: never finishes its headers within the limit.
    let dripper = std::thread::spawn({
        let addr = server.addr;
        move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let started = Instant::now();
            for b in b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\n\r\n" {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            started.elapsed()
        }
    });
    closed_within(half, "half a header");
    let reply = closed_within(stalled_body, "a stalled body");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("error-request-timeout"), "{reply}");
    let reply = closed_within(idle, "an idle keep-alive connection");
    assert!(reply.starts_with("HTTP/1.1 401"), "served first: {reply}");
    let dripped = dripper.join().unwrap();
    assert!(
        dripped < Duration::from_secs(4),
        "the dripping client was cut off after {dripped:?}"
    );

    // The cap: 12 open connections; the next gets a 503 and is closed.
    let held: Vec<TcpStream> = (0..12).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let reply = closed_within(connect(), "over the cap");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("error-service-unavailable"), "{reply}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        c.get("/api/v1/me", &[]).status,
        401,
        "served again once they left"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// A flood of wrong logins (blocks off, as from many addresses) is held to
/// the password pool: logins beyond it are shed with 429, and token requests
/// keep their latency.
#[test]
fn a_login_flood_does_not_starve_token_requests() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let dir = temp_dir("flood");
    let mut opts = options(&dir);
    opts.two_factor = Some(false);
    opts.max_failed_logins_per_user = Some(0);
    opts.max_failed_logins_per_address = Some(0);
    let (id, _) = add_user(&opts, "rota", false, false);
    let services = services_from(&opts).unwrap();
    let mut token = admin::issue_personal_access_token(&services, &id, "ci", true).unwrap();
    drop(services);
    let server = RunningServer::start(&opts).unwrap();
    let c = Client::new(&server);
    let mut rotate = |n: usize| -> Duration {
        let mut times: Vec<Duration> = (0..n)
            .map(|_| {
                let started = Instant::now();
                let r = c.post(
                    "/api/v1/users.regeneratePersonalAccessToken",
                    &auth(&id, &token),
                    r#"{"tokenName":"ci"}"#,
                );
                assert_eq!(r.status, 200);
                token = r.json["token"].as_str().unwrap().to_string();
                started.elapsed()
            })
            .collect();
        times.sort();
        times[n / 2]
    };
    let quiet = rotate(40);

    let stop = Arc::new(AtomicBool::new(false));
    let (shed, checked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flooders: Vec<_> = (0..8)
        .map(|i| {
            let (stop, shed, checked, base) =
                (stop.clone(), shed.clone(), checked.clone(), c.base.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                while !stop.load(Ordering::Relaxed) {
                    let r = agent
                        .post(format!("{base}/api/v1/login"))
                        .header("Content-Type", "application/json")
                        .send(format!(r#"{{"user":"nobody{i}","password":"guess"}}"#))
                        .unwrap();
                    match r.status().as_u16() {
                        429 => shed.fetch_add(1, Ordering::Relaxed),
                        401 => checked.fetch_add(1, Ordering::Relaxed),
                        other => panic!("login answered {other}"),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let flooded = rotate(40);
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let (shed, checked) = (
        shed.load(Ordering::Relaxed),
        checked.load(Ordering::Relaxed),
    );
    assert!(shed > 0 && checked > 0, "shed {shed}, checked {checked}");
    assert!(
        flooded < quiet * 3 + Duration::from_millis(5),
        "median regeneration {flooded:?} under the flood against {quiet:?} before"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
