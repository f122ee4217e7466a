//! Several `serve` processes on one PostgreSQL database, as an operator
//! runs them behind a load balancer: a regeneration raced across hosts has
//! one winner, a TOTP code is spent once, a login block is shared; and the
//! database restarted under load loses nothing acknowledged, with service
//! back within a second of it returning.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::common::*;
use host_example::admin::{self, UserSpec};
use host_example::keys::Keys;
use host_example::mail::MemoryMailer;
use host_example::services::Services;
use host_example::storage::{Admin, PostgresConfig, PostgresStorage};
use rcpat::model::TotpAlgorithm;

/// `serve` on the database at `url`, listening on `listen`; the caller says
/// where stderr goes.
fn host_command(listen: &str, url: &str, key_file: &Path, dir: &Path) -> Command {
    let mut command = serve_command(dir);
    command
        .args(["--listen", listen, "--storage", "postgres"])
        .args(["--admin-listen", "off"])
        .args(["--database-url", url])
        .arg("--secret-key-file")
        .arg(key_file);
    command
}

/// One `host-example serve` process.
struct Host {
    child: Child,
    base: String,
}

impl Host {
    fn start(url: &str, key_file: &Path, dir: &Path) -> Host {
        Self::start_on("127.0.0.1:0", url, key_file, dir)
    }

    fn start_on(listen: &str, url: &str, key_file: &Path, dir: &Path) -> Host {
        Self::start_with(listen, url, key_file, dir, &[])
    }

    fn start_with(listen: &str, url: &str, key_file: &Path, dir: &Path, args: &[&str]) -> Host {
        let mut child = host_command(listen, url, key_file, dir)
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (listening, lines) = wait_listening(&mut child);
        drain(lines);
        Host {
            child,
            base: format!("http://{}", log_field(&listening, "addr")),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// (status, JSON) of one request.
fn send(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let url = format!("{base}{path}");
    let response = match body {
        Some(body) => {
            let mut req = agent.post(&url).header("Content-Type", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body)
        }
        None => {
            let mut req = agent.get(&url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
    };
    match response {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or_default())
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

fn me(agent: &ureq::Agent, base: &str, user: &str, token: &str) -> u16 {
    send(
        agent,
        base,
        "/api/v1/me",
        &[("X-User-Id", user), ("X-Auth-Token", token)],
        None,
    )
    .0
}

/// A database, its key file (made once, as an operator distributes it),
/// and services on them for seeding.
fn shared_database(dir: &Path) -> (String, PathBuf, Services) {
    let url = postgres_url();
    let key_file = dir.join("rcpat.key");
    let keys = Arc::new(Keys::load(&key_file).unwrap());
    let storage =
        Arc::new(PostgresStorage::open(&PostgresConfig::new(&url), keys.clone()).unwrap());
    let services = Services::new(storage, Arc::new(MemoryMailer::default())).with_keys(keys);
    (url, key_file, services)
}

fn user(services: &Services, name: &str, password: Option<&str>) -> String {
    admin::create_user(
        services,
        &UserSpec {
            username: name,
            email: None,
            password,
            roles: &["user"],
        },
        4,
    )
    .unwrap()
}

/// Reuse detection between hosts: a value replaced through one host and
/// presented to another revokes the token everywhere.
#[test]
fn a_value_replaced_on_one_host_and_reused_on_another_revokes_the_token() {
    let dir = temp_dir("multi-reuse");
    let (url, key_file, services) = shared_database(&dir);
    let rae = user(&services, "rae", None);
    let old = admin::issue_personal_access_token(&services, &rae, "ci", false).unwrap();
    let no_grace = ["--superseded-token-grace-seconds", "0"];
    let hosts: Vec<Host> = (0..2)
        .map(|_| Host::start_with("127.0.0.1:0", &url, &key_file, &dir, &no_grace))
        .collect();
    let client = agent();
    let (status, json) = send(
        &client,
        &hosts[0].base,
        "/api/v1/users.regeneratePersonalAccessToken",
        &[("X-User-Id", &rae), ("X-Auth-Token", &old)],
        Some(r#"{"tokenName":"ci"}"#),
    );
    assert_eq!(status, 200, "{json}");
    let current = json["token"].as_str().unwrap().to_string();
    assert_eq!(me(&client, &hosts[0].base, &rae, &current), 200);
    assert_eq!(me(&client, &hosts[1].base, &rae, &old), 401);
    for host in &hosts {
        assert_eq!(
            me(&client, &host.base, &rae, &current),
            401,
            "{}: revoked",
            host.base
        );
    }
    assert!(
        services
            .storage()
            .find_personal_access_token(&rae, "ci")
            .unwrap()
            .is_none()
    );
}

#[test]
fn three_hosts_share_one_database() {
    let dir = temp_dir("multi");
    let (url, key_file, services) = shared_database(&dir);
    let bob = user(&services, "bob", None);
    let bot = admin::issue_personal_access_token(&services, &bob, "bot", true).unwrap();
    let tina = user(&services, "tina", None);
    let totp = admin::enable_totp(&services, &tina, "tina", TotpAlgorithm::Sha1, 6).unwrap();
    let tina_login = admin::issue_login_token(&services, &tina).unwrap();
    for i in 0..12 {
        admin::issue_personal_access_token(&services, &tina, &format!("t{i}"), false).unwrap();
    }
    let lou = user(&services, "lou", Some(PASSWORD));
    let hosts: Vec<Host> = (0..3).map(|_| Host::start(&url, &key_file, &dir)).collect();
    let bases: Vec<String> = hosts.iter().map(|h| h.base.clone()).collect();

    // 64 self-rotations of one PAT, spread over the three hosts at once.
    let barrier = Arc::new(Barrier::new(64));
    let replies: Vec<(u16, serde_json::Value)> = (0..64)
        .map(|i| {
            let (base, bob, bot, barrier) = (
                bases[i % 3].clone(),
                bob.clone(),
                bot.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let agent = agent();
                barrier.wait();
                send(
                    &agent,
                    &base,
                    "/api/v1/users.regeneratePersonalAccessToken",
                    &[("X-User-Id", &bob), ("X-Auth-Token", &bot)],
                    Some(r#"{"tokenName":"bot"}"#),
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let winners: Vec<&str> = replies
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, j)| j["token"].as_str().unwrap())
        .collect();
    assert_eq!(winners.len(), 1, "one winner across the hosts");
    for (status, json) in &replies {
        assert!(
            *status == 200
                || *status == 401
                || (*status == 409 && json["errorType"] == "error-token-regenerated-concurrently"),
            "a defined reply: {status} {json}"
        );
    }
    let client = agent();
    for base in &bases {
        assert_eq!(
            me(&client, base, &bob, winners[0]),
            200,
            "{base}: the winner works"
        );
        assert_eq!(
            me(&client, base, &bob, &bot),
            401,
            "{base}: the old value is gone"
        );
    }

    // One TOTP code sent to all three hosts at once: accepted once.
    let code = admin::totp_code(&totp.secret, TotpAlgorithm::Sha1, 6, now_ms(), 0);
    let barrier = Arc::new(Barrier::new(12));
    let statuses: Vec<u16> = (0..12)
        .map(|i| {
            let (base, tina, login, code, barrier) = (
                bases[i % 3].clone(),
                tina.clone(),
                tina_login.clone(),
                code.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let agent = agent();
                barrier.wait();
                send(
                    &agent,
                    &base,
                    "/api/v1/users.regeneratePersonalAccessToken",
                    &[
                        ("X-User-Id", &tina),
                        ("X-Auth-Token", &login),
                        ("x-2fa-method", "totp"),
                        ("x-2fa-code", &code),
                    ],
                    Some(&format!(r#"{{"tokenName":"t{i}"}}"#)),
                )
                .0
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "the code is spent once across hosts: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );

    // Ten wrong passwords spread over the hosts block the account on all.
    let login = |base: &str, password: &str| {
        send(
            &client,
            base,
            "/api/v1/login",
            &[],
            Some(&format!(r#"{{"user":"lou","password":"{password}"}}"#)),
        )
    };
    for i in 0..10 {
        assert_eq!(login(&bases[i % 3], "wrong").0, 401);
    }
    for base in &bases {
        let (status, json) = login(base, PASSWORD);
        assert_eq!(
            (status, json["error"].as_str()),
            (401, Some("error-login-blocked-for-user")),
            "{base}: {json}"
        );
    }
    let _ = lou;
    drop(hosts);
    let _ = std::fs::remove_dir_all(dir);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The restartable cluster (`./dev test` starts it beside the shared one).
fn restart_cluster() -> (String, String) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests with ./dev test, which starts the clusters")
        })
    };
    (
        var("RCPAT_TEST_RESTART_DATABASE_URL"),
        var("RCPAT_TEST_RESTART_PG_CTL"),
    )
}

#[test]
fn database_and_host_restarts_under_load_lose_nothing_acknowledged() {
    let dir = temp_dir("restart-pg");
    let (admin_url, pg_ctl) = restart_cluster();
    let name = format!("r_{}", admin::random_id(10).to_lowercase());
    postgres::Client::connect(&admin_url, postgres::NoTls)
        .unwrap()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let url = admin_url.replacen("/postgres", &format!("/{name}"), 1);
    let key_file = dir.join("rcpat.key");
    let keys = Arc::new(Keys::load(&key_file).unwrap());
    let services = Services::new(
        Arc::new(PostgresStorage::open(&PostgresConfig::new(&url), keys.clone()).unwrap()),
        Arc::new(MemoryMailer::default()),
    )
    .with_keys(keys);
    let seeded = host_example::loadgen::seed(&services, 16).unwrap();
    let mut hosts: Vec<Host> = (0..2).map(|_| Host::start(&url, &key_file, &dir)).collect();
    let config = host_example::loadgen::LoadConfig {
        url: hosts[0].base.clone(),
        more_urls: vec![hosts[1].base.clone()],
        users: 16,
        connections: 8,
        duration: Duration::from_secs(7),
        show_progress: false,
        login_flood: 0,
    };
    let probe = (seeded[0].0.clone(), hosts[1].base.clone());
    let load = std::thread::spawn(move || host_example::loadgen::run(&config, seeded));

    // Restart the database at 2 s; measure how soon a host serves again.
    std::thread::sleep(Duration::from_secs(2));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{pg_ctl} -m fast restart >/dev/null"))
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl restart");
    let back = Instant::now();
    let agent = agent();
    // A wrong token still needs the database: 401 means storage answered.
    let recovered = loop {
        if me(&agent, &probe.1, &probe.0, "not-a-token") == 401 {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the host never recovered"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Restart one host at 4 s (its clients see refused connections meanwhile).
    std::thread::sleep(Duration::from_secs(2).saturating_sub(back.elapsed()));
    let old = hosts.remove(0);
    let listen = old.base.trim_start_matches("http://").to_string();
    drop(old);
    hosts.insert(0, Host::start_on(&listen, &url, &key_file, &dir));

    let report = load.join().unwrap();
    println!(
        "restart under load: {} regenerations, {} ok, errors {:?}, service back {} ms after the database, lost {}, in doubt {}",
        report.requests,
        report.ok,
        report.errors,
        recovered.as_millis(),
        report.lost.len(),
        report.in_doubt.len()
    );
    assert!(report.ok > 100, "the load ran: {}", report.ok);
    assert!(
        report.lost.is_empty(),
        "acknowledged tokens lost: {:?}",
        report.lost
    );
    assert!(
        report.unverified.is_empty(),
        "checks that could not be made: {:?}",
        report.unverified
    );
    assert!(
        recovered < Duration::from_secs(1),
        "served again {} ms after the database returned",
        recovered.as_millis()
    );
    drop(hosts);
    let _ = std::fs::remove_dir_all(dir);
}

/// Hosts starting together on a new database migrate it once (an advisory
/// lock): every one opens, and the schema is at the latest version.
#[test]
fn hosts_starting_together_migrate_once() {
    let url = postgres_url();
    let barrier = Arc::new(Barrier::new(6));
    let opened: Vec<bool> = (0..6)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStorage::open(&PostgresConfig::new(&url), Arc::new(Keys::random())).is_ok()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(opened.iter().all(|ok| *ok), "{opened:?}");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let versions: Vec<i32> = c
        .query("SELECT version FROM rcpat_schema", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        [host_example::storage::SCHEMA_VERSION as i32],
        "one row, the latest version"
    );
}

/// A database that is not there fails at once, with a clear error; a URL
/// that asks for TLS from a server without it is refused, not downgraded.
#[test]
fn unreachable_database_and_tls_fail_fast_and_clearly() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = PostgresStorage::open(
        &PostgresConfig::new(format!(
            "postgres://rcpat@127.0.0.1:{closed}/x?sslmode=disable"
        )),
        Arc::new(Keys::random()),
    )
    .err()
    .expect("no database there");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().starts_with("postgres"), "{err}");
    // The restartable cluster speaks no TLS: a URL that requires it fails.
    let plain = restart_cluster()
        .0
        .replace("sslmode=disable", "sslmode=require");
    let err = PostgresStorage::open(&PostgresConfig::new(plain), Arc::new(Keys::random()))
        .err()
        .expect("that cluster has no TLS");
    assert!(err.to_string().to_lowercase().contains("tls"), "{err}");
}

/// TLS to the database: verified against `sslrootcert` (the test cluster's
/// own CA), and refused, not downgraded, when the certificate is not trusted.
#[test]
fn tls_to_the_database_verifies_the_server() {
    let ca = std::env::var("RCPAT_TEST_CA")
        .expect("RCPAT_TEST_CA is not set: run the tests with ./dev test");
    let url = postgres_url();
    let with = |mode: &str| url.replace("sslmode=disable", mode);
    let open =
        |url: String| PostgresStorage::open(&PostgresConfig::new(url), Arc::new(Keys::random()));
    let storage = open(with(&format!("sslmode=require&sslrootcert={ca}"))).expect("verified TLS");
    assert!(storage.find_user_id("nobody").unwrap().is_none());
    let err = open(with("sslmode=require")).err().expect("an unknown CA");
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = open(with("sslmode=prefer"))
        .err()
        .expect("prefer verifies too");
    assert!(err.to_string().contains("certificate"), "{err}");
}

/// SIGTERM to a host on PostgreSQL: it drains and exits 0 like one on
/// SQLite (`shutdown.rs`), its pooled sessions closed, without a panic. The
/// sessions' close used to run where the server drops its last reference to
/// storage, on a thread driving tokio, and `postgres` panicked there
/// ("Cannot start a runtime from within a runtime"), aborting the process.
#[test]
fn a_host_on_postgres_stops_cleanly_on_sigterm() {
    let dir = temp_dir("pg-sigterm");
    let (url, key_file, services) = shared_database(&dir);
    let bob = user(&services, "bob", None);
    let bot = admin::issue_personal_access_token(&services, &bob, "bot", true).unwrap();
    let mut child = host_command("127.0.0.1:0", &url, &key_file, &dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    drain(lines);
    let base = format!("http://{}", log_field(&listening, "addr"));
    // A request, so the pool holds an open session when the signal comes.
    let (status, body) = send(
        &agent(),
        &base,
        "/api/v1/users.regeneratePersonalAccessToken",
        &[("X-User-Id", &bob), ("X-Auth-Token", &bot)],
        Some(r#"{"tokenName":"bot"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = terminate(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
