//! Issue 26, item 9, over real sockets from distinct loopback addresses:
//! strangers' wrong passwords block an account, but not for its owner at an
//! address that logged in successfully for it; an address the account has
//! never logged in from stays blocked. (Counts decaying with their window
//! is checked on every backend in `storage_conformance`.)

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;

use crate::common::*;
use host_example::admin::{self, UserSpec};

#[test]
fn strangers_cannot_lock_the_owner_out_from_a_known_address() {
    let dir = temp_dir("lockout");
    let db = dir.join("lockout.sqlite");
    let services = host_example::startup::services_from(&host_example::config::Options {
        db: Some(db.clone()),
        ..Default::default()
    })
    .unwrap();
    admin::create_user(
        &services,
        &UserSpec {
            username: "victim",
            email: None,
            password: Some(PASSWORD),
            roles: &["user"],
        },
        COST,
    )
    .unwrap();
    drop(services);
    let mut child = serve_command(&dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .arg("--db")
        .arg(&db)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    drain(lines);
    let server: SocketAddrV4 = log_field(&listening, "addr").parse().unwrap();
    let login = |from: [u8; 4], password: &str| {
        let body = serde_json::json!({ "user": "victim", "password": password }).to_string();
        post_from(Ipv4Addr::from(from), server, "/api/v1/login", &[], &body)
    };
    let (home, attacker, elsewhere) = ([127, 0, 0, 21], [127, 0, 0, 22], [127, 0, 0, 23]);

    // The owner logs in from home: home is now known for the account.
    assert_eq!(login(home, PASSWORD).0, 200);
    // A stranger fails 10 times (the account limit) and is then refused.
    for _ in 0..10 {
        assert_eq!(login(attacker, "wrong").0, 401);
    }
    let (status, body) = login(attacker, PASSWORD);
    assert_eq!(status, 401);
    assert!(body.contains("error-login-blocked-for-user"), "{body}");
    // An address the account never logged in from is blocked too...
    let (_, body) = login(elsewhere, PASSWORD);
    assert!(body.contains("error-login-blocked-for-user"), "{body}");
    // ...but the owner at home logs in, as often as the block is renewed.
    for round in 0..3 {
        let (status, body) = login(home, PASSWORD);
        assert_eq!(status, 200, "round {round}: {body}");
        for _ in 0..10 {
            login(attacker, "wrong");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
