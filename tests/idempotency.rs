//! Safe retries (issue 12): `Idempotency-Key` on generate and regenerate.
//! A retry of a request whose reply was lost gets the same reply, even
//! though the token it presents was replaced by that request; the key with
//! another body is refused; nobody else can replay it; records expire. On
//! memory, SQLite and PostgreSQL, and over HTTP with the server killed
//! (SIGKILL) under load.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use host_example::clock::Clock;
use host_example::config::Options;
use host_example::runtime::Endpoint;
use host_example::startup::services_from;
use host_example::storage::Backend;
use rcpat::model::Request;

const HOUR_MS: u64 = 3_600_000;

fn with_key(ep: Endpoint, fx: &Fx, u: &User, token: &str, key: &str, body: &str) -> Reply {
    let req = Request::new(
        &[
            ("X-User-Id", u.id.as_str()),
            ("X-Auth-Token", token),
            ("Idempotency-Key", key),
        ],
        body.as_bytes(),
    );
    fx.send(ep, &req)
}

fn retries(backend: Arc<dyn Backend>) {
    let mut fx = Fx::with_storage(backend);
    // Off: a retry after its kept reply expired presents a replaced value,
    // which reuse detection would rightly take as theft (tested in
    // `reuse_detection`); here the retries alone.
    fx.settings.reuse_detection = false;
    let u = fx.user("rotor", None);
    let a = fx.pat(&u, "ci", true);
    let body = r#"{"tokenName":"ci"}"#;

    // The first request commits; its reply is "lost". The retry (same
    // token, key and body) gets the same reply byte for byte, and nothing
    // more is written: exactly one token of that name, the new one.
    let first = with_key(Regenerate, &fx, &u, &a, "rot-1-9b2e4c1a-5f3d-4e8b", body);
    let b = first.token();
    let retry = with_key(Regenerate, &fx, &u, &a, "rot-1-9b2e4c1a-5f3d-4e8b", body);
    assert_eq!((retry.status, &retry.body), (200, &first.body));
    let again = with_key(Regenerate, &fx, &u, &a, "rot-1-9b2e4c1a-5f3d-4e8b", body);
    assert_eq!(again.body, first.body);
    assert!(!fx.authenticates(&u, &a) && fx.authenticates(&u, &b));
    assert_eq!(fx.storage.token_hashes_named(&u.id, "ci").unwrap().len(), 1);

    // The same key with another body: refused, nothing changed.
    let other = with_key(
        Regenerate,
        &fx,
        &u,
        &a,
        "rot-1-9b2e4c1a-5f3d-4e8b",
        r#"{"tokenName":"other"}"#,
    );
    assert_eq!(
        (other.status, other.error_type()),
        (400, "error-idempotency-key-reused"),
        "{}",
        other.body
    );
    assert!(fx.authenticates(&u, &b));
    // The key belongs to a route too: the same body sent to generate is
    // another request, not a retry.
    let elsewhere = with_key(Generate, &fx, &u, &a, "rot-1-9b2e4c1a-5f3d-4e8b", body);
    assert_eq!(
        elsewhere.error_type(),
        "error-idempotency-key-reused",
        "{}",
        elsewhere.body
    );

    // Not replayable by anyone else: another user's credentials with the
    // same key run their own request; a wrong token for this user is a 401.
    let v = fx.user("victim", None);
    let v_pat = fx.pat(&v, "ci", true);
    let theirs = with_key(
        Regenerate,
        &fx,
        &v,
        &v_pat,
        "rot-1-9b2e4c1a-5f3d-4e8b",
        body,
    );
    assert_ne!(theirs.token(), b);
    let forged = with_key(
        Regenerate,
        &fx,
        &u,
        "not-the-token",
        "rot-1-9b2e4c1a-5f3d-4e8b",
        body,
    );
    assert_eq!(forged.status, 401);

    // A key is a request, not a token: the next rotation uses a new one.
    let c = with_key(Regenerate, &fx, &u, &b, "rot-2-9b2e4c1a-5f3d-4e8b", body).token();
    assert!(fx.authenticates(&u, &c) && !fx.authenticates(&u, &b));

    // Generate: the retry returns the same token and creates nothing more.
    let g_body = r#"{"tokenName":"deploy"}"#;
    let g1 = with_key(
        Generate,
        &fx,
        &u,
        &u.login,
        "gen-1-9b2e4c1a-5f3d-4e8b",
        g_body,
    );
    let g2 = with_key(
        Generate,
        &fx,
        &u,
        &u.login,
        "gen-1-9b2e4c1a-5f3d-4e8b",
        g_body,
    );
    assert_eq!((g2.status, &g2.body), (200, &g1.body));
    assert_eq!(
        fx.storage
            .token_hashes_named(&u.id, "deploy")
            .unwrap()
            .len(),
        1
    );
    // Without the key the same request is Rocket.Chat's: the name exists.
    let plain = fx.call(Generate, &u, &u.login, None, g_body);
    assert_eq!(plain.error_type(), "error-token-already-exists");

    // Records expire (24 hours by default): a retry after that is an
    // ordinary request again, here with a token that no longer exists.
    fx.clock.advance_ms(24 * HOUR_MS - 1);
    assert_eq!(
        with_key(Regenerate, &fx, &u, &b, "rot-2-9b2e4c1a-5f3d-4e8b", body).body,
        {
            // still kept at the last millisecond
            let kept = with_key(Regenerate, &fx, &u, &b, "rot-2-9b2e4c1a-5f3d-4e8b", body);
            assert_eq!(kept.status, 200);
            kept.body
        }
    );
    fx.clock.advance_ms(2);
    assert_eq!(
        with_key(Regenerate, &fx, &u, &b, "rot-2-9b2e4c1a-5f3d-4e8b", body).status,
        401
    );

    // Bad keys are refused before anything runs.
    for bad in [" ", "a b", &"k".repeat(256)] {
        let r = with_key(Regenerate, &fx, &u, &c, bad, body);
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
    }
    assert!(fx.authenticates(&u, &c));

    // Off (0 hours): the header is ignored, as Rocket.Chat ignores it.
    fx.settings.idempotency_key_hours = 0;
    let d = with_key(Regenerate, &fx, &u, &c, "rot-3-9b2e4c1a-5f3d-4e8b", body).token();
    let r = with_key(Regenerate, &fx, &u, &c, "rot-3-9b2e4c1a-5f3d-4e8b", body);
    assert_eq!(r.status, 401, "no kept reply when off");
    assert!(fx.authenticates(&u, &d));
}

#[test]
fn retries_on_every_backend() {
    for (name, backend) in backends() {
        eprintln!("backend: {name}");
        retries(backend);
    }
}

/// A write that committed but whose storage call answered an error (the
/// reply would be lost: a 500 for a change that happened). With a key the
/// component looks its kept reply up before answering, so the client gets
/// the committed token at once, and a retry gets the same reply.
#[test]
fn a_write_that_failed_after_its_commit_still_answers_its_token() {
    use host_example::storage::{FaultMode, FaultyStorage, MemoryStorage};
    for (name, inner) in [
        ("memory", Arc::new(MemoryStorage::new()) as Arc<dyn Backend>),
        (
            "sqlite",
            Arc::new(host_example::storage::SqliteStorage::open_in_memory().unwrap()),
        ),
        ("postgres", postgres()),
    ] {
        let setup = Fx::with_storage(inner.clone());
        let u = setup.user("lost", None);
        let a = setup.pat(&u, "ci", true);
        // Calls of a self-rotation with a key: find-idempotent-reply,
        // authenticate (with the permission), reserve-idempotency-key,
        // replace (the 4th).
        let faulty = Arc::new(FaultyStorage::new(inner, 4, FaultMode::After));
        let mut fx = Fx::with_storage(faulty.clone());
        fx.clock = setup.clock.clone();
        fx.services = fx.services.clone().with_clock(fx.clock.clone());
        let body = r#"{"tokenName":"ci"}"#;
        let first = with_key(Regenerate, &fx, &u, &a, "lost-reply-1f0e2d3c-4b5a", body);
        assert_eq!(first.status, 200, "{name}: {}", first.body);
        assert!(!setup.authenticates(&u, &a), "{name}: the write committed");
        let b = first.token();
        assert!(setup.authenticates(&u, &b), "{name}: the committed token");
        let retry = with_key(Regenerate, &fx, &u, &a, "lost-reply-1f0e2d3c-4b5a", body);
        assert_eq!((retry.status, &retry.body), (200, &first.body), "{name}");
    }
}

struct Server {
    child: Child,
}

impl Server {
    fn start(db: &std::path::Path, dir: &std::path::Path, addr: &str) -> Server {
        let mut child = serve_command(dir)
            .args(["--listen", addr, "--admin-listen", "off"])
            .arg("--db")
            .arg(db)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        drain(wait_listening(&mut child).1);
        Server { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// Clients self-rotate while the server is killed with SIGKILL and
/// restarted, `kills` times; a request without an answer is retried
/// (with its key, when `keys`) until answered. Returns (rotations,
/// clients left without a working token). With `keys`, also checks that
/// the audit trail agrees with the tokens: every acknowledged regeneration
/// has its event, and no event exists without its change.
fn kill_run(keys: bool, kills: usize) -> (u64, Vec<String>) {
    const CLIENTS: usize = 16;
    let dir = temp_dir(if keys { "kill-keys" } else { "kill-plain" });
    let db = dir.join("rcpat.sqlite");
    let clients = seed_pat_users(&db, "k", CLIENTS);
    let opts = Options {
        db: Some(db.clone()),
        ..Options::default()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Some(Server::start(&db, &dir, &addr));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://{addr}/api/v1/users.regeneratePersonalAccessToken");
    let workers: Vec<_> = clients
        .into_iter()
        .map(|(id, mut token)| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                let mut rotations = 0u64;
                // The last six characters of each token a 200 handed out.
                let mut acked: Vec<String> = Vec::new();
                'rotate: while !stop.load(Ordering::SeqCst) {
                    let key = format!("{id}-{rotations:08}-kill");
                    // One logical request, retried until it is answered.
                    loop {
                        let mut req = agent
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .header("X-User-Id", &id)
                            .header("X-Auth-Token", &token);
                        if keys {
                            req = req.header("Idempotency-Key", &key);
                        }
                        match req.send(r#"{"tokenName":"ci"}"#) {
                            Ok(mut reply) if reply.status().as_u16() == 200 => {
                                let body = reply.body_mut().read_to_string().unwrap();
                                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                                token = json["token"].as_str().unwrap().to_string();
                                acked.push(token[token.len() - 6..].to_string());
                                rotations += 1;
                                continue 'rotate;
                            }
                            // Its first attempt holds the key (its host was
                            // killed after reserving it): retry until the
                            // lease ends.
                            Ok(reply) if keys && reply.status().as_u16() == 409 => {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            // A definite refusal: this client's token is gone.
                            Ok(reply) if reply.status().as_u16() < 500 => break 'rotate,
                            // No answer (or a 500): retry the same request.
                            _ => {
                                if stop.load(Ordering::SeqCst) {
                                    break 'rotate;
                                }
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
                (id, token, rotations, acked)
            })
        })
        .collect();
    let started = Instant::now();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(400));
        server.take().unwrap().kill();
        server = Some(Server::start(&db, &dir, &addr));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    server.take().unwrap().kill();
    assert!(started.elapsed() < Duration::from_secs(60));
    // Which clients still hold a token that works?
    let services = services_from(&opts).unwrap();
    let mut stranded = Vec::new();
    let mut total = 0;
    for (id, token, rotations, acked) in results {
        total += rotations;
        if keys {
            events_agree_with_tokens(&services, &id, &acked);
        }
        let works = services
            .storage()
            .authenticate(&id, &rcpat::token::hash_token(&token), None)
            .unwrap()
            .is_some();
        if !works {
            stranded.push(id);
        }
    }
    (total, stranded)
}

/// The audit trail of a client after the kill run: its `token-regenerated`
/// events, oldest first, are the regenerations it was told of (`acked`), in
/// order, plus at most one more that committed while its reply was lost at
/// the end of the run; and the newest event names the token stored now.
fn events_agree_with_tokens(
    services: &host_example::services::Services,
    id: &str,
    acked: &[String],
) {
    let events: Vec<String> = services
        .storage()
        .audit_events(id)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == rcpat::model::AuditKind::TokenRegenerated)
        .map(|e| e.token_last_part.unwrap())
        .collect();
    let stored = services
        .storage()
        .find_personal_access_token(id, "ci")
        .unwrap()
        .unwrap()
        .last_token_part;
    assert!(
        events.len() == acked.len() || events.len() == acked.len() + 1,
        "{id}: {} events for {} acknowledged regenerations",
        events.len(),
        acked.len()
    );
    assert_eq!(
        &events[..acked.len()],
        acked,
        "{id}: every acknowledged regeneration has its event, in order"
    );
    if let Some(newest) = events.last() {
        assert_eq!(*newest, stored, "{id}: no event without its change");
    }
}

#[test]
fn sigkill_under_load_with_retries_leaves_every_client_a_working_token() {
    let (plain_rotations, plain_stranded) = kill_run(false, 6);
    let (rotations, stranded) = kill_run(true, 10);
    eprintln!(
        "kill test, 6 and 10 SIGKILLs, 16 clients: without Idempotency-Key {plain_rotations} rotations, {} clients \
         left without a working token; with it {rotations} rotations, {} left",
        plain_stranded.len(),
        stranded.len()
    );
    assert!(rotations > 0);
    assert!(
        stranded.is_empty(),
        "clients left without a token: {stranded:?}"
    );
}

/// Issue 26, item 5: 32 identical requests with one `Idempotency-Key` at
/// once (a session token regenerating a named PAT with a TOTP code, split
/// across `bases`). Exactly one executes: every 200 carries the same token,
/// every other reply is 409 `error-idempotency-key-in-flight`, the named
/// token is that one, and a retry afterwards gets its kept reply. Before
/// the key was reserved, 7 of 32 executed.
fn concurrent_duplicates_execute_once(
    services: &host_example::services::Services,
    bases: &[String],
) {
    use host_example::admin::{self, UserSpec};
    let spec = UserSpec {
        username: "dup",
        email: None,
        password: None,
        roles: &["user"],
    };
    let id = admin::create_user(services, &spec, COST).unwrap();
    let setup =
        admin::enable_totp(services, &id, "dup", rcpat::model::TotpAlgorithm::Sha1, 6).unwrap();
    let session = admin::issue_login_token(services, &id).unwrap();
    admin::issue_personal_access_token(services, &id, "ci", false).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let code = admin::totp_code(&setup.secret, rcpat::model::TotpAlgorithm::Sha1, 6, now, 0);
    let send = |base: &str| -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut reply = agent
            .post(format!("{base}/api/v1/users.regeneratePersonalAccessToken"))
            .header("Content-Type", "application/json")
            .header("X-User-Id", &id)
            .header("X-Auth-Token", &session)
            .header("x-2fa-method", "totp")
            .header("x-2fa-code", &code)
            .header("Idempotency-Key", "f3b1c2d4-dup-0001-8a7b-6c5d")
            .send(r#"{"tokenName":"ci"}"#)
            .unwrap();
        (
            reply.status().as_u16(),
            reply.body_mut().read_to_string().unwrap(),
        )
    };
    let barrier = Arc::new(std::sync::Barrier::new(32));
    let replies: Vec<(u16, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..32)
            .map(|i| {
                let (barrier, base, send) = (barrier.clone(), &bases[i % bases.len()], &send);
                scope.spawn(move || {
                    barrier.wait();
                    send(base)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let done: Vec<&String> = replies
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert!(!done.is_empty(), "{replies:?}");
    assert!(
        done.iter().all(|b| *b == done[0]),
        "two executions: {done:?}"
    );
    for (status, body) in &replies {
        assert!(
            *status == 200 || (*status == 409 && body.contains("error-idempotency-key-in-flight")),
            "{status} {body}"
        );
    }
    let token: serde_json::Value = serde_json::from_str(done[0]).unwrap();
    let token = token["token"].as_str().unwrap();
    assert_eq!(
        services.storage().token_hashes_named(&id, "ci").unwrap(),
        [rcpat::token::hash_token(token)],
        "the named token is the one every 200 carried"
    );
    for base in bases {
        assert_eq!(send(base), (200, done[0].clone()), "a retry afterwards");
    }
    eprintln!(
        "32 duplicates: {} answered 200 (one token), {} 409 in flight",
        done.len(),
        replies.len() - done.len()
    );
}

#[test]
fn concurrent_duplicates_execute_once_on_sqlite() {
    let dir = temp_dir("dup-sqlite");
    let db = dir.join("dup.sqlite");
    let services = services_from(&Options {
        db: Some(db.clone()),
        ..Options::default()
    })
    .unwrap();
    let (mut server, base) = serve_on(&dir, &["--db", db.to_str().unwrap()]);
    concurrent_duplicates_execute_once(&services, &[base]);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn concurrent_duplicates_execute_once_across_hosts_on_postgres() {
    let dir = temp_dir("dup-pg");
    let url = postgres_url();
    let key_file = dir.join("rcpat.key");
    let keys = Arc::new(host_example::keys::Keys::load(&key_file).unwrap());
    let storage = Arc::new(
        host_example::storage::PostgresStorage::open(
            &host_example::storage::PostgresConfig::new(&url),
            keys.clone(),
        )
        .unwrap(),
    );
    let services = host_example::services::Services::new(
        storage,
        Arc::new(host_example::mail::MemoryMailer::default()),
    )
    .with_keys(keys);
    let args = [
        "--storage",
        "postgres",
        "--database-url",
        url.as_str(),
        "--secret-key-file",
        key_file.to_str().unwrap(),
    ];
    let (mut a, base_a) = serve_on(&dir, &args);
    let (mut b, base_b) = serve_on(&dir, &args);
    concurrent_duplicates_execute_once(&services, &[base_a, base_b]);
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Issue 26, item 4, over HTTP: a kept reply outlived the credential that
/// made it. Now, within the 24 hours and with the same key and body:
/// - a self-rotation's reply is not served once its new token was used, so
///   a leaked old token plus the key yields a 401, not the live token;
/// - a session's reply is not served once the session logged out (401);
/// - a reply whose token was used is 400 `error-idempotency-key-spent`
///   for a session that is still valid;
/// - a key too short to be random (the README's old example, a date) is
///   refused before anything runs.
#[test]
fn a_kept_reply_does_not_outlive_its_credential_or_its_first_use() {
    use host_example::admin;
    let dir = temp_dir("replay-limits");
    let db = dir.join("replay.sqlite");
    let (id, pat) = seed_pat_users(&db, "r", 1).remove(0);
    let services = services_from(&Options {
        db: Some(db.clone()),
        ..Options::default()
    })
    .unwrap();
    let session = admin::issue_login_token(&services, &id).unwrap();
    let other_session = admin::issue_login_token(&services, &id).unwrap();
    drop(services);
    let (mut server, base) = serve_on(&dir, &["--db", db.to_str().unwrap()]);
    let agent = http_agent();
    let post = |path: &str, token: &str, key: Option<&str>, body: &str| -> (u16, String) {
        let mut req = agent
            .post(format!("{base}/api/v1/{path}"))
            .header("Content-Type", "application/json")
            .header("X-User-Id", &id)
            .header("X-Auth-Token", token);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let mut reply = req.send(body).unwrap();
        (
            reply.status().as_u16(),
            reply.body_mut().read_to_string().unwrap(),
        )
    };
    let me = |token: &str| {
        agent
            .get(format!("{base}/api/v1/me"))
            .header("X-User-Id", &id)
            .header("X-Auth-Token", token)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    let token_of = |body: &str| -> String {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let regenerate = "users.regeneratePersonalAccessToken";
    let ci = r#"{"tokenName":"ci"}"#;

    // A short, guessable key: refused, nothing runs.
    let (status, body) = post(regenerate, &pat, Some("rotate-2026-11-28"), ci);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("error-invalid-header"), "{body}");
    assert_eq!(me(&pat), 200);

    // Self-rotation: the lost-reply retry works until the new token is used.
    let key = "6f1c2e9a-3b4d-4c5e-8f70-a1b2c3d4e5f6";
    let (status, first) = post(regenerate, &pat, Some(key), ci);
    assert_eq!(status, 200, "{first}");
    let fresh = token_of(&first);
    assert_eq!(post(regenerate, &pat, Some(key), ci), (200, first.clone()));
    assert_eq!(me(&fresh), 200, "the client got it and used it");
    let (status, body) = post(regenerate, &pat, Some(key), ci);
    assert_eq!(
        status, 401,
        "the old token and the key yield nothing: {body}"
    );
    assert!(!body.contains(&fresh), "{body}");
    assert_eq!(me(&fresh), 200, "and the live token is untouched");

    // A session's reply: not served once its token was used (the session
    // still valid: the key is spent), nor after the session logged out.
    let deploy = r#"{"tokenName":"deploy"}"#;
    let key = "0c7d8e9f-1a2b-4c3d-9e8f-7a6b5c4d3e2f";
    let (status, made) = post(
        "users.generatePersonalAccessToken",
        &session,
        Some(key),
        deploy,
    );
    assert_eq!(status, 200, "{made}");
    assert_eq!(
        post(
            "users.generatePersonalAccessToken",
            &session,
            Some(key),
            deploy
        ),
        (200, made.clone())
    );
    assert_eq!(me(&token_of(&made)), 200);
    let (status, body) = post(
        "users.generatePersonalAccessToken",
        &session,
        Some(key),
        deploy,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("error-idempotency-key-spent"), "{body}");
    assert!(!body.contains(&token_of(&made)), "{body}");

    let key = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170";
    let staging = r#"{"tokenName":"staging"}"#;
    let (status, made) = post(
        "users.generatePersonalAccessToken",
        &other_session,
        Some(key),
        staging,
    );
    assert_eq!(status, 200, "{made}");
    assert_eq!(post("logout", &other_session, None, "{}").0, 200);
    let (status, body) = post(
        "users.generatePersonalAccessToken",
        &other_session,
        Some(key),
        staging,
    );
    assert_eq!(status, 401, "a logged-out session replays nothing: {body}");
    assert!(!body.contains(&token_of(&made)), "{body}");

    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// A kept reply is not served once the PAT that made it has expired.
#[test]
fn a_kept_reply_is_not_served_after_its_credential_expires() {
    let fx = Fx::new();
    let u = fx.user("exp", None);
    let body = r#"{"tokenName":"child"}"#;
    let parent = with_key(
        Generate,
        &fx,
        &u,
        &u.login,
        "parent-7e6d5c4b-3a29-4180",
        // Four hours after the fixture's clock (2027-01-15T08:00:15Z).
        r#"{"tokenName":"parent","expiresAt":"2027-01-15T12:00:00.000Z"}"#,
    )
    .token();
    let key = "child-1a2b3c4d-5e6f-4708-9a1b";
    let child = with_key(Generate, &fx, &u, &parent, key, body);
    assert_eq!(child.status, 200, "{}", child.body);
    assert_eq!(
        with_key(Generate, &fx, &u, &parent, key, body).body,
        child.body
    );
    // Past the parent's expiry, within the 24 hours replies are kept.
    fx.clock.advance_ms(5 * HOUR_MS);
    let late = with_key(Generate, &fx, &u, &parent, key, body);
    assert_eq!(late.status, 401, "{}", late.body);
}

// The settings the tests above rely on are the defaults.
#[test]
fn kept_for_24_hours_by_default() {
    assert_eq!(rcpat::model::Settings::default().idempotency_key_hours, 24);
    let fx = Fx::new();
    assert_eq!(fx.clock.now_ms(), T0);
}
