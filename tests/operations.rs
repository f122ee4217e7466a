//! What an operator watches: `/metrics`, `/health` and `/ready` on the admin
//! listener of a real `serve` process, after real requests.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use host_example::admin::{self, UserSpec};
use host_example::config::Options;
use host_example::server::{App, Backend, Limits};
use host_example::services::Services;
use host_example::startup::services_from;
use host_example::storage::{FaultMode, FaultyStorage, MemoryStorage};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut req = agent().post(url).header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body).unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

/// The value of one sample line `name{labels} value` (0 when absent).
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

struct Serve {
    child: Child,
    base: String,
    admin: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path, db: &std::path::Path) -> Serve {
    let mut child = serve_command(dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(db)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    drain(lines);
    let base = format!("http://{}", log_field(&listening, "addr"));
    let admin = format!("http://{}", log_field(&listening, "admin"));
    Serve { child, base, admin }
}

#[test]
fn metrics_health_and_readiness_after_real_requests() {
    let dir = temp_dir("metrics");
    let db = dir.join("rcpat.sqlite");
    let (alice, alice_pat, paul, paul_login) = {
        let services = services_from(&Options {
            db: Some(db.clone()),
            ..Options::default()
        })
        .unwrap();
        let user = |name: &str, password: Option<&str>| {
            let spec = UserSpec {
                username: name,
                email: None,
                password,
                roles: &["user"],
            };
            admin::create_user(&services, &spec, 4).unwrap()
        };
        let alice = user("alice", None);
        let alice_pat = admin::issue_personal_access_token(&services, &alice, "ci", false).unwrap();
        let paul = user("paul", Some(PASSWORD));
        admin::issue_personal_access_token(&services, &paul, "ci", false).unwrap();
        let paul_login = admin::issue_login_token(&services, &paul).unwrap();
        (alice, alice_pat, paul, paul_login)
    };
    let s = serve(&dir, &db);
    let regenerate = format!("{}/api/v1/users.regeneratePersonalAccessToken", s.base);
    let body = r#"{"tokenName":"ci"}"#;
    // A success, a 401, a challenge, a wrong password, a right one.
    let ok = post(
        &regenerate,
        &[("X-User-Id", &alice), ("X-Auth-Token", &alice_pat)],
        body,
    );
    assert_eq!(ok.0, 200, "{}", ok.1);
    let new_token = serde_json::from_str::<serde_json::Value>(&ok.1).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        post(
            &regenerate,
            &[("X-User-Id", &alice), ("X-Auth-Token", &alice_pat)],
            body
        )
        .0,
        401
    );
    let paul_h = [
        ("X-User-Id", paul.as_str()),
        ("X-Auth-Token", paul_login.as_str()),
    ];
    assert_eq!(post(&regenerate, &paul_h, body).0, 400);
    let wrong = password_code("wrong");
    let right = password_code(PASSWORD);
    let with = |code: &str| {
        let mut h = paul_h.to_vec();
        h.extend([("x-2fa-method", "password"), ("x-2fa-code", code)]);
        post(&regenerate, &h, body).0
    };
    assert_eq!(with(&wrong), 400);
    assert_eq!(with(&right), 200);

    let (status, health) = get(&format!("{}/health", s.admin));
    assert_eq!((status, health.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, ready) = get(&format!("{}/ready", s.admin));
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready,
        r#"{"status":"ready","storage":"ok","component":"loaded"}"#
    );

    let (status, m) = get(&format!("{}/metrics", s.admin));
    assert_eq!(status, 200);
    let route = r#"route="/api/v1/users.regeneratePersonalAccessToken""#;
    assert_eq!(
        sample(
            &m,
            &format!("rcpat_http_requests_total{{{route},status=\"200\"}}")
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("rcpat_http_requests_total{{{route},status=\"401\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            &format!("rcpat_http_requests_total{{{route},status=\"400\"}}")
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            &format!("rcpat_http_request_duration_seconds_count{{{route}}}")
        ),
        5.0
    );
    for (outcome, n) in [("challenged", 1.0), ("rejected", 1.0), ("accepted", 1.0)] {
        let line = format!(r#"rcpat_two_factor_total{{method="password",outcome="{outcome}"}}"#);
        assert_eq!(sample(&m, &line), n, "{line}\n{m}");
    }
    assert!(
        sample(
            &m,
            r#"rcpat_storage_operation_duration_seconds_count{call="authenticate"}"#
        ) >= 5.0
    );
    assert!(
        sample(
            &m,
            r#"rcpat_storage_operation_duration_seconds_count{call="replace-personal-access-token"}"#
        ) >= 2.0
    );
    assert!(sample(&m, "rcpat_sqlite_commit_batch_size_count") >= 2.0);
    assert_eq!(sample(&m, "rcpat_instance_pool_size"), 64.0);
    assert_eq!(sample(&m, "rcpat_instances_in_use"), 0.0);
    assert!(m.contains("rcpat_component_cache_total{outcome="), "{m}");
    // No secret and no user identifier in any label.
    for secret in [&alice, &alice_pat, &new_token, &paul, &paul_login, &right] {
        assert!(!m.contains(secret.as_str()), "{secret} in the metrics");
    }
    let (status, _) = get(&format!("{}/nope", s.admin));
    assert_eq!(status, 404);
}

#[test]
fn ready_answers_503_while_storage_fails_then_200() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    // The first storage call (the first probe) fails; the next ones answer.
    let storage = Arc::new(FaultyStorage::new(
        Arc::new(MemoryStorage::new()),
        1,
        FaultMode::Before,
    ));
    let services = Services::new(
        storage,
        Arc::new(host_example::mail::MemoryMailer::default()),
    );
    let app = App::new(
        Backend::Native,
        services,
        rcpat::model::Settings::default(),
        Limits::default(),
    )
    .unwrap();
    let router = host_example::admin_listener::router(Arc::new(app), handle);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                host_example::admin_listener::serve(
                    listener,
                    router,
                    Limits::default().connections(),
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await;
            });
    });
    let (status, body) = get(&format!("http://{addr}/ready"));
    assert_eq!(status, 503);
    assert_eq!(
        body,
        r#"{"status":"unavailable","storage":"failing","component":"native"}"#
    );
    assert_eq!(get(&format!("http://{addr}/ready")).0, 200);
    assert_eq!(get(&format!("http://{addr}/health")).0, 200);
    stop.send(()).unwrap();
    server.join().unwrap();
}
