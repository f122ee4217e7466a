//! Graceful shutdown: SIGTERM in the middle of a load run. The server stops
//! accepting, answers every request it had read, closes storage and exits 0;
//! so no regeneration commits without its reply reaching the client (the
//! client would be left holding a dead token): every client's last
//! acknowledged token still authenticates afterwards.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use host_example::config::Options;
use host_example::startup::services_from;

const CLIENTS: usize = 16;

#[test]
fn sigterm_under_load_answers_every_request_in_flight() {
    let dir = temp_dir("shutdown");
    let db = dir.join("rcpat.sqlite");
    let clients = seed_pat_users(&db, "u", CLIENTS);
    let opts = Options {
        db: Some(db.clone()),
        ..Options::default()
    };

    let mut child = serve_command(&dir)
        .args(["--listen", "127.0.0.1:0", "--shutdown-timeout-secs", "30"])
        .args(["--admin-listen", "off"])
        .arg("--db")
        .arg(&db)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    let addr = log_field(&listening, "addr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        })
    };

    // Self-rotation on every client until its connection is refused or cut.
    let signalled = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = clients
        .into_iter()
        .map(|(id, mut token)| {
            let (url, signalled) = (
                format!("http://{addr}/api/v1/users.regeneratePersonalAccessToken"),
                signalled.clone(),
            );
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(40)))
                    .build()
                    .into();
                let (mut acked, mut after_signal, mut unexpected) = (0u32, 0u32, Vec::new());
                loop {
                    let sent = agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header("X-User-Id", &id)
                        .header("X-Auth-Token", &token)
                        .send(r#"{"tokenName":"ci"}"#);
                    let Ok(mut reply) = sent else { break };
                    let status = reply.status().as_u16();
                    let body = reply.body_mut().read_to_string().unwrap_or_default();
                    if status != 200 {
                        unexpected.push(format!("{status} {body}"));
                        break;
                    }
                    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                    token = json["token"].as_str().unwrap().to_string();
                    acked += 1;
                    if signalled.load(Ordering::SeqCst) {
                        after_signal += 1;
                    }
                }
                (id, token, acked, after_signal, unexpected)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1500));
    signalled.store(true, Ordering::SeqCst);
    let (status, stopped_in) = terminate(&mut child, Duration::from_secs(35));
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    reader.join().unwrap();
    let log = log.lock().unwrap().join("\n");
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        log.contains("stopped: every request in flight answered"),
        "{log}"
    );

    // Every reply was a success, and each client's last acknowledged token
    // works: nothing was committed without its reply.
    let services = services_from(&opts).unwrap();
    let (mut total, mut after) = (0, 0);
    for (id, token, acked, after_signal, unexpected) in &results {
        assert!(unexpected.is_empty(), "{id}: {unexpected:?}");
        assert!(*acked > 0, "{id} was never served");
        let hashed = rcpat::token::hash_token(token);
        assert!(
            services
                .storage()
                .authenticate(id, &hashed, None)
                .unwrap()
                .is_some(),
            "{id}: its last acknowledged token was lost (a regeneration committed without its reply)"
        );
        total += acked;
        after += after_signal;
    }
    eprintln!(
        "shutdown: {total} regenerations acknowledged, {after} of them answered after SIGTERM; \
         stopped {stopped_in:?} after the signal; every client's last token authenticates"
    );
}
