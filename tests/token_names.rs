//! Issue 26, item 10: control characters in token names. New names with
//! them are refused over HTTP (400 `error-invalid-params`); names stored
//! before are escaped wherever they are printed or mailed (`tokens list`,
//! `tokens notify-expiring`, the expiry mail's Subject).

use std::process::{Command, Stdio};

use crate::common::*;
use host_example::admin;
use host_example::storage::TokenRecord;
use rcpat::model::PersonalAccessToken;

const EVIL: &str = "evil\u{1b}[2J\r\nBcc: attacker@example.org\u{7f}";

#[test]
fn control_characters_are_refused_in_new_names_over_http() {
    let dir = temp_dir("names-http");
    let db = dir.join("names.sqlite");
    let (id, token) = seed_pat_users(&db, "n", 1).remove(0);
    let mut child = serve_command(&dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .arg("--db")
        .arg(&db)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    drain(lines);
    let base = format!("http://{}", log_field(&listening, "addr"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let generate = |name: &str| {
        let body = serde_json::json!({ "tokenName": name }).to_string();
        let mut reply = agent
            .post(format!("{base}/api/v1/users.generatePersonalAccessToken"))
            .header("Content-Type", "application/json")
            .header("X-User-Id", &id)
            .header("X-Auth-Token", &token)
            .send(body)
            .unwrap();
        (
            reply.status().as_u16(),
            reply.body_mut().read_to_string().unwrap(),
        )
    };
    for bad in [
        EVIL,
        "a\u{1b}b",
        "line\nbreak",
        "cr\r",
        "tab\there",
        "nul\u{0}",
        "c1\u{85}",
    ] {
        let (status, body) = generate(bad);
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(
            body.contains("must not contain control characters")
                && body.contains("error-invalid-params"),
            "{body}"
        );
    }
    let (status, body) = generate("deploy ✓ (prod)");
    assert_eq!(status, 200, "{body}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn names_stored_before_are_escaped_in_the_cli_and_the_expiry_mail() {
    let dir = temp_dir("names-cli");
    let db = dir.join("names.sqlite");
    let opts = host_example::config::Options {
        db: Some(db.clone()),
        outbox: Some(dir.join("outbox")),
        ..Default::default()
    };
    let services = host_example::startup::services_from(&opts).unwrap();
    let id = admin::create_user(
        &services,
        &admin::UserSpec {
            username: "mallory",
            email: Some("mallory@example.org"),
            password: None,
            roles: &["user"],
        },
        COST,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Stored as an older version (or Rocket.Chat) would have: with the name.
    let pat = PersonalAccessToken {
        name: EVIL.into(),
        hashed_token: rcpat::token::hash_token("a-token-from-before"),
        last_token_part: "before".into(),
        created_at: now,
        bypass_two_factor: false,
        last_used_at: None,
        expires_at: Some(now + 2 * 86_400_000),
    };
    services
        .storage()
        .add_token(&id, &TokenRecord::personal_access_token(&pat))
        .unwrap();
    drop(services);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_host-example"))
            .args(args)
            .arg("--db")
            .arg(&db)
            .env_remove("RCPAT_CONFIG")
            .output()
            .unwrap()
    };
    let raw = |bytes: &[u8]| bytes.iter().any(|b| matches!(b, 0x1b | b'\r' | 0x7f));
    let list = run(&["tokens", "list", "mallory"]);
    assert!(list.status.success());
    assert!(
        !raw(&list.stdout),
        "{:?}",
        String::from_utf8_lossy(&list.stdout)
    );
    let shown = String::from_utf8_lossy(&list.stdout);
    assert!(shown.contains(r"evil\u{1b}[2J\u{d}\u{a}Bcc"), "{shown}");
    let notify = Command::new(env!("CARGO_BIN_EXE_host-example"))
        .args(["tokens", "notify-expiring", "--db"])
        .arg(&db)
        .arg("--outbox")
        .arg(dir.join("outbox"))
        .env_remove("RCPAT_CONFIG")
        .output()
        .unwrap();
    assert!(
        notify.status.success(),
        "{}",
        String::from_utf8_lossy(&notify.stderr)
    );
    assert!(
        !raw(&notify.stdout),
        "{:?}",
        String::from_utf8_lossy(&notify.stdout)
    );
    let mails: Vec<_> = std::fs::read_dir(dir.join("outbox"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 1);
    let mail = String::from_utf8_lossy(&mails[0]);
    let subject = mail
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .expect("a Subject header");
    assert!(!subject.contains('\u{1b}'), "{subject:?}");
    assert!(
        !mail.lines().any(|l| l.starts_with("Bcc:")),
        "a header was injected: {mail}"
    );
    assert!(!mail.contains('\u{1b}'), "ESC in the mail: {mail:?}");
    let _ = std::fs::remove_dir_all(dir);
}
