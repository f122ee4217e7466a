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
use host_example::server::services_from;
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
    let u = fx.user("rotor", None);
    let a = fx.pat(&u, "ci", true);
    let body = r#"{"tokenName":"ci"}"#;

    // The first request commits; its reply is "lost". The retry (same
    // token, key and body) gets the same reply byte for byte, and nothing
    // more is written: exactly one token of that name, the new one.
    let first = with_key(Regenerate, &fx, &u, &a, "rot-1", body);
    let b = first.token();
    let retry = with_key(Regenerate, &fx, &u, &a, "rot-1", body);
    assert_eq!((retry.status, &retry.body), (200, &first.body));
    let again = with_key(Regenerate, &fx, &u, &a, "rot-1", body);
    assert_eq!(again.body, first.body);
    assert!(!fx.authenticates(&u, &a) && fx.authenticates(&u, &b));
    assert_eq!(fx.storage.token_hashes_named(&u.id, "ci").unwrap().len(), 1);

    // The same key with another body: refused, nothing changed.
    let other = with_key(Regenerate, &fx, &u, &a, "rot-1", r#"{"tokenName":"other"}"#);
    assert_eq!(
        (other.status, other.error_type()),
        (400, "error-idempotency-key-reused"),
        "{}",
        other.body
    );
    assert!(fx.authenticates(&u, &b));
    // The key belongs to a route too: the same body sent to generate is
    // another request, not a retry.
    let elsewhere = with_key(Generate, &fx, &u, &a, "rot-1", body);
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
    let theirs = with_key(Regenerate, &fx, &v, &v_pat, "rot-1", body);
    assert_ne!(theirs.token(), b);
    let forged = with_key(Regenerate, &fx, &u, "not-the-token", "rot-1", body);
    assert_eq!(forged.status, 401);

    // A key is a request, not a token: the next rotation uses a new one.
    let c = with_key(Regenerate, &fx, &u, &b, "rot-2", body).token();
    assert!(fx.authenticates(&u, &c) && !fx.authenticates(&u, &b));

    // Generate: the retry returns the same token and creates nothing more.
    let g_body = r#"{"tokenName":"deploy"}"#;
    let g1 = with_key(Generate, &fx, &u, &u.login, "gen-1", g_body);
    let g2 = with_key(Generate, &fx, &u, &u.login, "gen-1", g_body);
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
    assert_eq!(with_key(Regenerate, &fx, &u, &b, "rot-2", body).body, {
        // still kept at the last millisecond
        let kept = with_key(Regenerate, &fx, &u, &b, "rot-2", body);
        assert_eq!(kept.status, 200);
        kept.body
    });
    fx.clock.advance_ms(2);
    assert_eq!(with_key(Regenerate, &fx, &u, &b, "rot-2", body).status, 401);

    // Bad keys are refused before anything runs.
    for bad in [" ", "a b", &"k".repeat(256)] {
        let r = with_key(Regenerate, &fx, &u, &c, bad, body);
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
    }
    assert!(fx.authenticates(&u, &c));

    // Off (0 hours): the header is ignored, as Rocket.Chat ignores it.
    fx.settings.idempotency_key_hours = 0;
    let d = with_key(Regenerate, &fx, &u, &c, "rot-3", body).token();
    let r = with_key(Regenerate, &fx, &u, &c, "rot-3", body);
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
        let first = with_key(Regenerate, &fx, &u, &a, "k", body);
        assert_eq!(first.status, 200, "{name}: {}", first.body);
        assert!(!setup.authenticates(&u, &a), "{name}: the write committed");
        let b = first.token();
        assert!(setup.authenticates(&u, &b), "{name}: the committed token");
        let retry = with_key(Regenerate, &fx, &u, &a, "k", body);
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
/// restarted, again and again; a request without an answer is retried
/// (with its key, when `keys`) until answered. Returns (rotations,
/// clients left without a working token).
fn kill_run(keys: bool) -> (u64, Vec<String>) {
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
                'rotate: while !stop.load(Ordering::SeqCst) {
                    let key = format!("{id}-{rotations}");
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
                (id, token, rotations)
            })
        })
        .collect();
    let started = Instant::now();
    for _ in 0..6 {
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
    for (id, token, rotations) in results {
        total += rotations;
        let works = services
            .storage
            .authenticate(&id, &rcpat::token::hash_token(&token), None)
            .unwrap()
            .is_some();
        if !works {
            stranded.push(id);
        }
    }
    (total, stranded)
}

#[test]
fn sigkill_under_load_with_retries_leaves_every_client_a_working_token() {
    let (plain_rotations, plain_stranded) = kill_run(false);
    let (rotations, stranded) = kill_run(true);
    eprintln!(
        "kill test, 6 SIGKILLs, 16 clients: without Idempotency-Key {plain_rotations} rotations, {} clients \
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

/// `serve` on `storage` (extra arguments), listening on a free port: the
/// process and its base URL.
fn serve_on(dir: &std::path::Path, storage: &[&str]) -> (Child, String) {
    let mut child = serve_command(dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(storage)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    drain(lines);
    (child, format!("http://{}", log_field(&listening, "addr")))
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
            .header("Idempotency-Key", "f3b1c2d4-dup-0001")
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
        services.storage.token_hashes_named(&id, "ci").unwrap(),
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

// The settings the tests above rely on are the defaults.
#[test]
fn kept_for_24_hours_by_default() {
    assert_eq!(rcpat::model::Settings::default().idempotency_key_hours, 24);
    let fx = Fx::new();
    assert_eq!(fx.clock.now_ms(), T0);
}
