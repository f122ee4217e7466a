//! The `host-example` binary: admin commands' output and errors, and the
//! server's request log (one line per request, never a secret).

use crate::common::temp_dir;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_host-example"))
}

fn run(db: &Path, args: &[&str]) -> Output {
    bin()
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("RCPAT_CONFIG")
        .output()
        .unwrap()
}

/// Runs with `input` on standard input.
fn run_with_stdin(db: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = bin()
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("RCPAT_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn admin_commands() {
    let dir = temp_dir("admin");
    let db = dir.join("admin.sqlite");
    let o = run_with_stdin(
        &db,
        &[
            "users",
            "add",
            "--username",
            "ann",
            "--email",
            "ann@example.org",
            "--password-stdin",
            "--roles",
            "user,admin",
        ],
        "pw\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("created ann with id "));

    // Errors are one clear line and a non-zero exit.
    let o = run(&db, &["users", "add", "--username", "ann"]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o), "error: a user named ann already exists\n");
    let o = run(&db, &["users", "grant", "ghost"]);
    assert_eq!(
        (o.status.code(), stderr(&o).as_str()),
        (Some(1), "error: no user named ghost\n")
    );
    let o = run(&db, &["tokens", "list", "ghost"]);
    assert_eq!(stderr(&o), "error: no user named ghost\n");

    let o = run(&db, &["users", "enable-totp", "ann"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("otpauth://totp/Rocket.Chat:ann?secret="),
        "{out}"
    );
    assert!(out.contains('█') || out.contains('▀'), "a QR code is drawn");
    assert_eq!(
        out.lines()
            .skip_while(|l| !l.starts_with("backup codes"))
            .skip(1)
            .flat_map(|l| l.split_whitespace())
            .count(),
        12
    );

    assert!(
        run(&db, &["users", "enable-email2fa", "ann"])
            .status
            .success()
    );
    assert!(run(&db, &["users", "revoke", "ann"]).status.success());
    let list = stdout(&run(&db, &["users", "list"]));
    assert!(
        list.contains("ann")
            && list.contains("totp=true")
            && list.contains("email-2fa=true")
            && list.contains("tokens=denied"),
        "{list}"
    );
    assert!(run(&db, &["users", "grant", "ann"]).status.success());
    assert!(stdout(&run(&db, &["users", "list"])).contains("tokens=allowed"));
    assert_eq!(
        stdout(&run(&db, &["tokens", "list", "ann"])),
        "ann has no personal access tokens\n"
    );

    // --help documents the options, including the component's settings.
    let help = stdout(&bin().args(["serve", "--help"]).output().unwrap());
    for option in [
        "--listen",
        "--db",
        "--smtp",
        "--cache-dir",
        "--totp-max-delta",
        "--email-code-expiration",
        "--max-failed-attempts",
        "--remember-for",
        "--config",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Each command shows and takes its own options; `--version` names the
/// wasmtime and the component inside.
#[test]
fn each_command_has_its_own_options_and_version_names_the_component() {
    let help = |args: &[&str]| stdout(&bin().args(args).arg("--help").output().unwrap());
    let add = help(&["users", "add"]);
    for option in [
        "--username",
        "--password-stdin",
        "--db",
        "--database-url",
        "--config",
    ] {
        assert!(add.contains(option), "users add --help lacks {option}");
    }
    for option in [
        "--listen",
        "--smtp",
        "--totp-max-delta",
        "--max-instances",
        "--tls-cert",
    ] {
        assert!(!add.contains(option), "users add --help shows {option}");
    }
    let serve = help(&["serve"]);
    for option in [
        "--listen",
        "--tls-key",
        "--admin-listen",
        "--smtp-tls",
        "--db",
        "--remember-for",
    ] {
        assert!(serve.contains(option), "serve --help lacks {option}");
    }
    assert!(!help(&["wit"]).contains("--db"));
    let o = bin()
        .args(["users", "add", "--username", "x", "--listen", "127.0.0.1:1"])
        .env_remove("RCPAT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--listen is not an option of `users add`"),
        "{}",
        stderr(&o)
    );
    // --compare starts a server per mode; a server at --url has one mode.
    let o = bin()
        .args(["bench", "--compare", "--url", "http://127.0.0.1:1"])
        .env_remove("RCPAT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let version = stdout(&bin().arg("--version").output().unwrap());
    use sha2::Digest;
    let digest = sha2::Sha256::digest(host_example::COMPONENT);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        version.trim(),
        format!(
            "host-example {} (wasmtime 48.0.8; component sha256 {hex})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// `bench` against a server that is not there: no check of a token can be
/// made, which is neither a pass nor a loss. It used to print "lost data: 0"
/// and exit 0; and where some regenerations had succeeded, it counted each
/// failed check of a replaced token as lost data.
#[test]
fn bench_whose_checks_get_no_answer_fails_without_claiming_loss() {
    let dir = temp_dir("bench-unreachable");
    // A port that was free a moment ago: connections to it are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let o = run(
        &dir.join("rcpat.sqlite"),
        &[
            "bench",
            "--url",
            &url,
            "--users",
            "3",
            "--connections",
            "1",
            "--seconds",
            "1",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("lost data: 0"), "{}", stdout(&o));
    assert!(stdout(&o).contains("unverified      3"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("3 checks could not be made"),
        "{}",
        stderr(&o)
    );
}

/// `host-example wit | head -1`: the reader is gone before the command
/// writes, and the command ends quietly (SIGPIPE, as coreutils do) rather
/// than with `println!`'s panic and a backtrace on stderr.
#[test]
fn printing_into_a_closed_pipe_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    for command in ["wit", "info"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = bin()
            .arg(command)
            .env_remove("RCPAT_CONFIG")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGPIPE),
            "{command}: {:?}, stderr: {}",
            o.status,
            stderr(&o)
        );
        assert!(
            !stderr(&o).contains("panicked"),
            "{command}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn config_file_and_bad_config() {
    let dir = temp_dir("config");
    let file = dir.join("rcpat.toml");
    std::fs::write(&file, format!("db = {:?}\n", dir.join("from-file.sqlite"))).unwrap();
    let o = bin()
        .args(["--config"])
        .arg(&file)
        .args(["users", "add", "--username", "cfg"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        dir.join("from-file.sqlite").exists(),
        "the file's db option was used"
    );
    std::fs::write(&file, "no-such-option = 1\n").unwrap();
    let o = bin()
        .args(["--config"])
        .arg(&file)
        .args(["users", "list"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown field `no-such-option`"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn server_logs_one_line_per_request_without_secrets() {
    let dir = temp_dir("logs");
    let db = dir.join("logs.sqlite");
    let pw = dir.join("pw.txt");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let o = run(
        &db,
        &[
            "users",
            "add",
            "--username",
            "lou",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--db",
        ])
        .arg(&db)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--outbox")
        .arg(dir.join("outbox"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    let addr = listening
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("http://{addr}");
    let login = agent
        .post(format!("{base}/api/v1/login"))
        .header("Content-Type", "application/json")
        .send(r#"{"user":"lou","password":"hunter2"}"#)
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&login).unwrap();
    let (id, token) = (
        json["data"]["userId"].as_str().unwrap(),
        json["data"]["authToken"].as_str().unwrap(),
    );
    let secret_code = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let _ = agent
        .post(format!("{base}/api/v1/users.regeneratePersonalAccessToken"))
        .header("X-User-Id", id)
        .header("X-Auth-Token", token)
        .header("x-2fa-code", secret_code)
        .header("Content-Type", "application/json")
        .send(r#"{"tokenName":"secret-name"}"#)
        .unwrap();
    let _ = agent.get(format!("{base}/nope")).call().unwrap();

    // Request lines, and the wrong code as a security event of its own.
    let mut log = Vec::new();
    for _ in 0..4 {
        log.push(lines.next().unwrap().unwrap());
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        log[0].contains("route=/api/v1/login")
            && log[0].contains("status=200")
            && log[0].contains("client=127.0.0.1")
            && log[0].contains("latency_us="),
        "{log:?}"
    );
    assert!(
        log[1].contains("route=/api/v1/users.regeneratePersonalAccessToken")
            && log[1].contains("status=400"),
        "{log:?}"
    );
    assert!(
        log[2].contains("security")
            && log[2].contains("wrong_code")
            && log[2].contains(id)
            && log[2].contains("client=127.0.0.1"),
        "{log:?}"
    );
    assert!(log[3].contains("status=404"), "{log:?}");
    // Not a terminal: no colour escapes.
    assert!(log.iter().all(|l| !l.contains('\u{1b}')), "{log:?}");
    for line in log.iter().chain([&listening]) {
        for secret in [token, secret_code, "hunter2", "secret-name"] {
            assert!(!line.contains(secret), "log line leaks a secret: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn passwords_are_never_flags_and_addresses_cannot_inject_headers() {
    let dir = temp_dir("input");
    let db = dir.join("input.sqlite");
    // A password flag does not exist (it would sit in `ps` and shell history).
    let o = run(
        &db,
        &["users", "add", "--username", "eve", "--password", "pw"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--password"), "{}", stderr(&o));
    // From standard input; the trailing newline is not part of it.
    let o = run_with_stdin(
        &db,
        &["users", "add", "--username", "sam", "--password-stdin"],
        "open sesame\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // An empty password is refused rather than stored.
    let o = run_with_stdin(
        &db,
        &["users", "add", "--username", "nil", "--password-stdin"],
        "\n",
    );
    assert_eq!(stderr(&o), "error: the password must not be empty\n");
    // Header injection through the address: refused, and no user created.
    let o = run(
        &db,
        &[
            "users",
            "add",
            "--username",
            "mallory",
            "--email",
            "m@example.org\r\nBcc: all@example.org",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("control characters"), "{}", stderr(&o));
    let o = run(
        &db,
        &[
            "users",
            "add",
            "--username",
            "mallory",
            "--email",
            "not an address",
        ],
    );
    assert!(
        stderr(&o).contains("not a valid email address"),
        "{}",
        stderr(&o)
    );
    let o = run(&db, &["users", "list"]);
    assert!(!stdout(&o).contains("mallory"));
    // The stored password works: sam logs in over HTTP.
    let services = host_example::startup::services_from(&host_example::config::Options {
        db: Some(db.clone()),
        outbox: Some(dir.join("outbox")),
        ..Default::default()
    })
    .unwrap();
    let sam = services
        .storage()
        .find_user_for_login(&rcpat::model::LoginIdentifier::Username("sam".into()))
        .unwrap()
        .unwrap();
    let hash = sam.password_bcrypt.unwrap();
    assert!(bcrypt::verify(rcpat::token::password_digest("open sesame"), &hash).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `needle` occurs anywhere in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_at_rest_are_encrypted_owner_only_and_survive_rotation() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("rest");
    let db = dir.join("rest.sqlite");
    let mut secrets = Vec::new();
    for name in ["amy", "ben", "cat"] {
        let o = run(
            &db,
            &[
                "users",
                "add",
                "--username",
                name,
                "--email",
                &format!("{name}@example.org"),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run(&db, &["users", "enable-totp", name]);
        let out = stdout(&o);
        let secret = out
            .split("secret=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .expect("the otpauth URI")
            .to_string();
        secrets.push((name, secret));
    }
    let files: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .chain([dir.join("rest.key")])
        .collect();
    // Every file the database consists of, and the key, is owner-only.
    for f in &files {
        if f.exists() {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    let scan = || {
        let mut all = Vec::new();
        for f in &files[..3] {
            if let Ok(bytes) = std::fs::read(f) {
                all.extend(bytes);
            }
        }
        assert!(all.len() > 4096, "the database was read");
        for (name, secret) in &secrets {
            let raw = data_encoding::BASE32_NOPAD
                .decode(secret.as_bytes())
                .unwrap();
            assert!(
                !contains(&all, secret.as_bytes()),
                "{name}'s secret in base32"
            );
            assert!(
                !contains(&all, secret.to_lowercase().as_bytes()),
                "{name}'s secret in lower case"
            );
            assert!(!contains(&all, &raw), "{name}'s raw secret");
        }
    };
    scan();

    // Rotation: a new key, every secret re-encrypted under it, all still right.
    let o = run(&db, &["keys", "rotate"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("added key 2") && stdout(&o).contains("re-encrypted 3"),
        "{}",
        stdout(&o)
    );
    scan();
    let services = host_example::startup::services_from(&host_example::config::Options {
        db: Some(db.clone()),
        outbox: Some(dir.join("outbox")),
        ..Default::default()
    })
    .unwrap();
    for (name, secret) in &secrets {
        let user = services
            .storage()
            .find_user_for_login(&rcpat::model::LoginIdentifier::Username(name.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(
            &user.totp.unwrap().secret,
            secret,
            "{name}'s TOTP after rotation"
        );
    }
    drop(services);
    // With another key file the database is not opened at all: storage
    // knows key 1's fingerprint, and this file's key 1 is another key.
    std::fs::write(dir.join("rest.key"), format!("1 {}\n", "00".repeat(32))).unwrap();
    let refused = host_example::startup::services_from(&host_example::config::Options {
        db: Some(db.clone()),
        outbox: Some(dir.join("outbox")),
        ..Default::default()
    })
    .map(drop)
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("is not the key 1 that storage's secrets are under"),
        "{refused}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = temp_dir("json");
    let db = dir.join("json.sqlite");
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--admin-listen",
            "off",
            "--db",
        ])
        .arg(&db)
        .arg("--no-cache")
        .arg("--outbox")
        .arg(dir.join("outbox"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Every line is JSON; the first ones may be start-up notes (a new key file).
    let listening = loop {
        let line: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["message"] == "listening" {
            break line;
        }
    };
    let addr = listening["addr"].as_str().unwrap().to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let _ = agent
        .post(format!("http://{addr}/api/v1/login"))
        .header("Content-Type", "application/json")
        .send(r#"{"user":"nobody","password":"pw"}"#)
        .unwrap();
    let request: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let event: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        (
            request["message"].as_str(),
            request["status"].as_u64(),
            request["client"].as_str()
        ),
        (Some("request"), Some(401), Some("127.0.0.1"))
    );
    assert_eq!(event["event"], "login_failed");
    assert!(
        !event.to_string().contains("nobody"),
        "the identifier is not logged: {event}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The admin commands take the same flags on PostgreSQL.
#[test]
fn admin_commands_work_on_postgres() {
    let dir = temp_dir("cli-pg");
    let url = crate::common::postgres_url();
    let pg = |args: &[&str]| {
        bin()
            .args(args)
            .args(["--storage", "postgres", "--database-url", &url])
            .arg("--secret-key-file")
            .arg(dir.join("rcpat.key"))
            .env_remove("RCPAT_CONFIG")
            .output()
            .unwrap()
    };
    let pw = dir.join("pw");
    std::fs::write(&pw, "open sesame\n").unwrap();
    let o = pg(&[
        "users",
        "add",
        "--username",
        "pat",
        "--email",
        "pat@example.org",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = pg(&["users", "enable-totp", "pat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("otpauth://totp/Rocket.Chat:pat?secret="));
    let list = stdout(&pg(&["users", "list"]));
    assert!(list.contains("pat") && list.contains("totp=true"), "{list}");
    assert_eq!(
        stdout(&pg(&["tokens", "list", "pat"])),
        "pat has no personal access tokens\n"
    );
    let o = pg(&["keys", "rotate"]);
    assert!(
        stdout(&o).contains("re-encrypted 1 TOTP secrets"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = pg(&["users", "add", "--username", "pat"]);
    assert_eq!(stderr(&o), "error: a user named pat already exists\n");
    let _ = std::fs::remove_dir_all(dir);
}
