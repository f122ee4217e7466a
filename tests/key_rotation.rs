//! `keys rotate`, `keys add` and `keys reencrypt` against each other and
//! against running hosts (issue 26, items 1 and 2): concurrent rotations
//! never leave a TOTP secret that no key in the file decrypts, two machines
//! with their own "key 2" cannot both write, and a running host picks up a
//! new key without a restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use host_example::admin::{self, UserSpec};
use host_example::keys::Keys;
use host_example::mail::MemoryMailer;
use host_example::services::Services;
use host_example::storage::Backend;
use rcpat::model::{LoginIdentifier, TotpAlgorithm};

fn keys_command(args: &[&str], storage: &[&str], key_file: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_host-example"));
    c.arg("keys")
        .args(args)
        .args(storage)
        .arg("--secret-key-file")
        .arg(key_file)
        .env_remove("RCPAT_CONFIG")
        .env_remove("RCPAT_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `n` users with TOTP on `storage` (keys from `key_file`): (name, secret).
fn seed_totp_users(storage: Arc<dyn Backend>, keys: Arc<Keys>, n: usize) -> Vec<(String, String)> {
    let services = Services::new(storage, Arc::new(MemoryMailer::default())).with_keys(keys);
    (0..n)
        .map(|i| {
            let name = format!("t{i}");
            let spec = UserSpec {
                username: &name,
                email: None,
                password: None,
                roles: &["user"],
            };
            let id = admin::create_user(&services, &spec, COST).unwrap();
            let setup = admin::enable_totp(&services, &id, &name, TotpAlgorithm::Sha1, 6).unwrap();
            (name, setup.secret)
        })
        .collect()
}

/// Every user's TOTP secret as the store opens it with `key_file`'s keys.
fn assert_secrets_open(storage: &dyn Backend, users: &[(String, String)], context: &str) {
    for (name, secret) in users {
        let user = storage
            .find_user_for_login(&LoginIdentifier::Username(name.clone()))
            .unwrap_or_else(|e| panic!("{context}: {name}'s secret does not open: {e}"))
            .unwrap();
        assert_eq!(&user.totp.unwrap().secret, secret, "{context}: {name}");
    }
}

fn sqlite_opts(db: &Path, key_file: &Path) -> host_example::config::Options {
    host_example::config::Options {
        db: Some(db.to_path_buf()),
        secret_key_file: Some(key_file.to_path_buf()),
        ..Default::default()
    }
}

/// The attack of item 1: two `keys rotate` at once, again and again. Before
/// the key file was locked, both wrote their own key 2 and the loser's
/// secrets were sealed under a key no file held.
#[test]
fn concurrent_rotations_leave_every_secret_readable() {
    let dir = temp_dir("keys-race");
    let (db, key_file) = (dir.join("race.sqlite"), dir.join("race.key"));
    let users = {
        let keys = Arc::new(Keys::load(&key_file).unwrap());
        let storage =
            host_example::startup::open_backend(&sqlite_opts(&db, &key_file), keys.clone())
                .unwrap();
        seed_totp_users(storage, keys, 40)
    };
    let db_arg = db.to_str().unwrap().to_string();
    let storage = ["--db", db_arg.as_str()];
    for trial in 0..6 {
        let racers: Vec<_> = (0..3)
            .map(|_| {
                keys_command(&["rotate"], &storage, &key_file)
                    .spawn()
                    .unwrap()
            })
            .collect();
        for racer in racers {
            let o = racer.wait_with_output().unwrap();
            assert!(o.status.success(), "trial {trial}: {}", text(&o));
            assert!(
                text(&o).contains("re-encrypted 40 TOTP secrets"),
                "{}",
                text(&o)
            );
        }
    }
    // Every rotation added its own key: 1 + 6 × 3.
    let keys = Arc::new(Keys::load(&key_file).unwrap());
    assert_eq!(keys.current_id(), 19);
    let backend = host_example::startup::open_backend(&sqlite_opts(&db, &key_file), keys).unwrap();
    assert_secrets_open(backend.as_ref(), &users, "after 18 racing rotations");
    drop(backend);
    // And one more rotation still decrypts everything.
    let o = keys_command(&["rotate"], &storage, &key_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let _ = std::fs::remove_dir_all(dir);
}

/// A running host (SQLite) keeps serving TOTP users through `keys rotate`:
/// it re-reads its key file when it meets a key id it lacks.
#[test]
fn a_running_host_picks_up_a_rotated_key() {
    let dir = temp_dir("keys-live");
    let (db, key_file) = (dir.join("live.sqlite"), dir.join("live.key"));
    let (id, token) = {
        let services = host_example::startup::services_from(&sqlite_opts(&db, &key_file)).unwrap();
        let spec = UserSpec {
            username: "alice",
            email: None,
            password: None,
            roles: &["user"],
        };
        let id = admin::create_user(&services, &spec, COST).unwrap();
        admin::enable_totp(&services, &id, "alice", TotpAlgorithm::Sha1, 6).unwrap();
        let token = admin::issue_personal_access_token(&services, &id, "ci", false).unwrap();
        (id, token)
    };
    let mut child = serve_command(&dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .arg("--db")
        .arg(&db)
        .arg("--secret-key-file")
        .arg(&key_file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    drain(lines);
    let base = format!("http://{}", log_field(&listening, "addr"));
    let me = || {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .get(format!("{base}/api/v1/me"))
            .header("X-User-Id", &id)
            .header("X-Auth-Token", &token)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(me(), 200);
    let db_arg = db.to_str().unwrap().to_string();
    for round in 0..2 {
        let o = keys_command(&["rotate"], &["--db", &db_arg], &key_file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        // (Past the host's once-a-second limit on re-reading the file.)
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            me(),
            200,
            "after rotation {round}: the host lacks the new key"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// One PostgreSQL database, hosts on two machines (two copies of the key
/// file). The documented procedure (`keys add` on one, copy the file,
/// `keys reencrypt`) keeps both hosts serving TOTP users throughout; two
/// machines that each add their own key 2 and re-encrypt at once cannot
/// both write, and a host given the loser's file refuses to start.
#[test]
fn hosts_on_postgres_share_a_rotation_and_refuse_a_conflicting_key() {
    let dir = temp_dir("keys-pg");
    let url = postgres_url();
    let (file_a, file_b) = (
        dir.join("a").join("rcpat.key"),
        dir.join("b").join("rcpat.key"),
    );
    let keys = Arc::new(Keys::load(&file_a).unwrap());
    let storage: Arc<dyn Backend> = Arc::new(
        host_example::storage::PostgresStorage::open(
            &host_example::storage::PostgresConfig::new(&url),
            keys.clone(),
        )
        .unwrap(),
    );
    let users = seed_totp_users(storage.clone(), keys, 20);
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(to);
        host_example::files::create_private_file(to, &std::fs::read(from).unwrap()).unwrap();
    };
    copy(&file_a, &file_b);
    let pg = ["--storage", "postgres", "--database-url", url.as_str()];
    let start = |key_file: &Path| -> (std::process::Child, String) {
        let mut child = serve_command(&dir)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
            .args(pg)
            .arg("--secret-key-file")
            .arg(key_file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (listening, lines) = wait_listening(&mut child);
        drain(lines);
        (child, format!("http://{}", log_field(&listening, "addr")))
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    // A login for a TOTP user decrypts its secret (the challenge needs it).
    let login = |base: &str, name: &str| {
        agent
            .post(format!("{base}/api/v1/login"))
            .header("Content-Type", "application/json")
            .send(format!(r#"{{"user":"{name}","password":"x"}}"#))
            .unwrap()
            .status()
            .as_u16()
    };
    let (mut host_a, base_a) = start(&file_a);
    let (mut host_b, base_b) = start(&file_b);
    // (No password: 401 whatever the secret; the point is no 500.)
    let serving = |base: &str| users.iter().take(3).all(|(n, _)| login(base, n) == 401);
    assert!(serving(&base_a) && serving(&base_b));

    // The procedure: add on A, copy to B, re-encrypt.
    let o = keys_command(&["add"], &pg, &file_a).output().unwrap();
    assert!(text(&o).contains("added key 2"), "{}", text(&o));
    copy(&file_a, &file_b);
    let o = keys_command(&["reencrypt"], &pg, &file_a).output().unwrap();
    assert!(
        text(&o).contains("re-encrypted 20 TOTP secrets under key 2"),
        "{}",
        text(&o)
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        serving(&base_a) && serving(&base_b),
        "a host failed after the rotation"
    );

    // The hazard: both machines rotate on their own at once.
    let racers: Vec<_> = [&file_a, &file_b]
        .iter()
        .map(|f| keys_command(&["rotate"], &pg, f).spawn().unwrap())
        .collect();
    let outcomes: Vec<Output> = racers
        .into_iter()
        .map(|r| r.wait_with_output().unwrap())
        .collect();
    let winners: Vec<usize> = (0..2).filter(|i| outcomes[*i].status.success()).collect();
    assert_eq!(
        winners.len(),
        1,
        "{}\n{}",
        text(&outcomes[0]),
        text(&outcomes[1])
    );
    let loser = 1 - winners[0];
    assert!(
        text(&outcomes[loser]).contains("is not the key 3 that storage's secrets are under"),
        "{}",
        text(&outcomes[loser])
    );
    let (winner_file, loser_file) = if winners[0] == 0 {
        (&file_a, &file_b)
    } else {
        (&file_b, &file_a)
    };
    let winner_keys = Arc::new(Keys::load(winner_file).unwrap());
    let check = host_example::storage::PostgresStorage::open(
        &host_example::storage::PostgresConfig::new(&url),
        winner_keys,
    )
    .unwrap();
    assert_secrets_open(&check, &users, "after two machines rotated at once");
    // A host with the loser's file would seal under its own key 3 and
    // cannot read the winner's: it refuses to start, saying why.
    let o = serve_command(&dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(pg)
        .arg("--secret-key-file")
        .arg(loser_file)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("another `keys add` or `keys rotate` made its own key 3"),
        "{}",
        text(&o)
    );
    for child in [&mut host_a, &mut host_b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _: PathBuf = dir.clone();
    let _ = std::fs::remove_dir_all(dir);
}
