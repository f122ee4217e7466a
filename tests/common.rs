//! The shared fixture: the real component in wasmtime, one runtime for the
//! whole test binary (compiled once, through the compiled-component cache
//! under the target dir), fresh in-memory services per test, temp folders.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use host_example::admin::{self, UserSpec};
use host_example::clock::{Clock, ManualClock};
use host_example::mail::MemoryMailer;
use host_example::runtime::{Endpoint, Runtime, RuntimeConfig};
use host_example::services::Services;
use host_example::storage::{
    Backend, MemoryStorage, PostgresConfig, PostgresStorage, SqliteStorage,
};
use rcpat::model::{Request, Settings, TotpAlgorithm};
use serde_json::Value;

pub use Endpoint::*;

/// 2027-01-15T08:00:00Z, mid TOTP step.
pub const T0: u64 = 1_800_000_015_000;
/// bcrypt cost for test users (the minimum; the demo uses Rocket.Chat's 10).
pub const COST: u32 = 4;
pub const PASSWORD: &str = "correct horse battery staple";

/// The compiled-component cache every test shares (kept between runs, so
/// only the first run after a change compiles the component).
pub fn shared_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rcpat-component-cache")
}

/// `host-example serve` with what every test server shares: the shared
/// component cache, an outbox in `dir`, info logs on a piped stdout (for
/// `wait_listening`), no config file from the environment. Callers add the
/// listen addresses, the storage and what to do with stderr.
pub fn serve_command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_host-example"));
    c.arg("serve")
        .arg("--cache-dir")
        .arg(shared_cache_dir())
        .arg("--outbox")
        .arg(dir.join("outbox"))
        .env("RUST_LOG", "info")
        .env_remove("RCPAT_CONFIG")
        .stdout(Stdio::piped());
    c
}

/// Waits for a server's "listening" log line and returns it with the rest
/// of its stdout, which the caller must keep reading (`drain`) or the
/// server blocks on a full pipe.
pub fn wait_listening(child: &mut Child) -> (String, Lines<BufReader<ChildStdout>>) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening"))
        .expect("the server starts");
    (listening, lines)
}

/// Sends SIGTERM (what an operator's supervisor sends to stop `serve`) and
/// waits at most `within` for the process to end: its exit status, and how
/// long it took after the signal.
pub fn terminate(child: &mut Child, within: Duration) -> (ExitStatus, Duration) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let signalled = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, signalled.elapsed());
        }
        assert!(
            signalled.elapsed() < within,
            "the server did not stop within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collects a server's remaining log lines, as they arrive, on a thread of
/// their own.
pub fn collect(lines: Lines<BufReader<ChildStdout>>) -> Arc<std::sync::Mutex<Vec<String>>> {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    log
}

/// `serve` with `args` (its storage, and anything else), listening on a
/// free port, no admin listener: the process and its base URL.
pub fn serve_on(dir: &Path, args: &[&str]) -> (Child, String) {
    let mut child = serve_command(dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (listening, lines) = wait_listening(&mut child);
    drain(lines);
    (child, format!("http://{}", log_field(&listening, "addr")))
}

/// An HTTP client that hands every status back instead of failing on it.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Reads a server's remaining log lines on a thread of their own.
pub fn drain(lines: Lines<BufReader<ChildStdout>>) {
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
}

/// The value of `name=` in a log line (`addr`, `admin`).
pub fn log_field(line: &str, name: &str) -> String {
    line.split(&format!("{name}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `n` users (`{prefix}0`...) in the SQLite database `db`, each with a PAT
/// called "ci": their (user id, token) pairs, for a server started on it.
pub fn seed_pat_users(db: &Path, prefix: &str, n: usize) -> Vec<(String, String)> {
    let opts = host_example::config::Options {
        db: Some(db.to_path_buf()),
        ..Default::default()
    };
    let services = host_example::startup::services_from(&opts).unwrap();
    (0..n)
        .map(|i| {
            let spec = UserSpec {
                username: &format!("{prefix}{i}"),
                email: None,
                password: None,
                roles: &["user"],
            };
            let id = admin::create_user(&services, &spec, COST).unwrap();
            let token = admin::issue_personal_access_token(&services, &id, "ci", false).unwrap();
            (id, token)
        })
        .collect()
}

/// A fresh folder under the system's temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rcpat-test-{name}-{}-{}",
        std::process::id(),
        admin::random_id(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The URL of a fresh, empty database on the test cluster (`./dev test`
/// starts one): the PostgreSQL store crate's helper, shared with its
/// conformance run.
pub use rcpat_store_postgres::testing::fresh_database_url as postgres_url;

/// A PostgreSQL store on a fresh database.
pub fn postgres() -> Arc<PostgresStorage> {
    Arc::new(
        PostgresStorage::open(
            &PostgresConfig::new(postgres_url()),
            Arc::new(host_example::keys::Keys::random()),
        )
        .unwrap(),
    )
}

/// One of each backend, fresh: what every storage-level test runs against.
pub fn backends() -> Vec<(&'static str, Arc<dyn Backend>)> {
    vec![
        ("memory", Arc::new(MemoryStorage::new())),
        ("sqlite", Arc::new(SqliteStorage::open_in_memory().unwrap())),
        ("postgres", postgres()),
    ]
}

/// One runtime for the test binary. Its pool is larger than the server's
/// default: tests run in parallel, and some send 64 requests at once while
/// others run (the server bounds requests to its pool instead).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let config = RuntimeConfig {
            max_instances: 256,
            ..RuntimeConfig::default()
        };
        Runtime::cached(host_example::COMPONENT, config, Some(&shared_cache_dir()))
            .expect("the component loads")
            .0
    })
}

pub struct Fx {
    pub storage: Arc<dyn Backend>,
    pub mailer: Arc<MemoryMailer>,
    pub clock: Arc<ManualClock>,
    pub services: Services,
    pub settings: Settings,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub name: String,
    /// A login (session) token.
    pub login: String,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub json: Value,
    /// What the component told the host beside the reply.
    pub events: Vec<rcpat::model::SecurityEvent>,
}

impl Fx {
    pub fn new() -> Self {
        Self::with_storage(Arc::new(MemoryStorage::new()))
    }

    pub fn with_storage(storage: Arc<dyn Backend>) -> Self {
        let mailer = Arc::new(MemoryMailer::default());
        let clock = Arc::new(ManualClock::new(T0));
        let services = Services::new(storage.clone(), mailer.clone()).with_clock(clock.clone());
        Fx {
            storage,
            mailer,
            clock,
            services,
            settings: Settings::default(),
        }
    }

    /// A user with the `user` role, a verified email, optionally a password,
    /// and a login token.
    pub fn user(&self, name: &str, password: Option<&str>) -> User {
        self.user_with_roles(name, password, &["user"])
    }

    pub fn user_with_roles(&self, name: &str, password: Option<&str>, roles: &[&str]) -> User {
        let email = format!("{name}@example.org");
        let id = admin::create_user(
            &self.services,
            &UserSpec {
                username: name,
                email: Some(&email),
                password,
                roles,
            },
            COST,
        )
        .unwrap();
        let login = admin::issue_login_token(&self.services, &id).unwrap();
        User {
            id,
            name: name.into(),
            login,
        }
    }

    pub fn pat(&self, user: &User, name: &str, bypass: bool) -> String {
        admin::issue_personal_access_token(&self.services, &user.id, name, bypass).unwrap()
    }

    pub fn enable_totp(&self, user: &User) -> admin::TotpSetup {
        admin::enable_totp(&self.services, &user.id, &user.name, TotpAlgorithm::Sha1, 6).unwrap()
    }

    /// The TOTP code `offset` steps from now.
    pub fn totp(&self, setup: &admin::TotpSetup, offset: i64) -> String {
        admin::totp_code(
            &setup.secret,
            TotpAlgorithm::Sha1,
            6,
            self.clock.now_ms(),
            offset,
        )
    }

    /// Sends a request with the usual headers through the component.
    pub fn call(
        &self,
        ep: Endpoint,
        user: &User,
        token: &str,
        two_fa: Option<(&str, &str)>,
        body: &str,
    ) -> Reply {
        let mut headers = vec![("X-User-Id", user.id.as_str()), ("X-Auth-Token", token)];
        if let Some((method, code)) = two_fa {
            headers.push(("x-2fa-method", method));
            headers.push(("x-2fa-code", code));
        }
        self.send(ep, &Request::new(&headers, body.as_bytes()))
    }

    pub fn send(&self, ep: Endpoint, req: &Request) -> Reply {
        let r = runtime()
            .call(&self.services, ep, &self.settings, req)
            .expect("the component never traps on input");
        let json = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", r.body));
        Reply {
            status: r.status,
            body: r.body,
            json,
            events: r.events,
        }
    }

    pub fn regenerate(
        &self,
        user: &User,
        token: &str,
        two_fa: Option<(&str, &str)>,
        name: &str,
    ) -> Reply {
        self.call(
            Regenerate,
            user,
            token,
            two_fa,
            &format!(r#"{{"tokenName":"{name}"}}"#),
        )
    }

    /// Whether `token` authenticates as `user` (what every endpoint checks first).
    pub fn authenticates(&self, user: &User, token: &str) -> bool {
        self.storage
            .authenticate(&user.id, &rcpat::token::hash_token(token), None)
            .unwrap()
            .is_some()
    }
}

impl Reply {
    pub fn error_type(&self) -> &str {
        self.json["errorType"].as_str().unwrap_or("")
    }

    pub fn token(&self) -> String {
        assert_eq!(self.status, 200, "expected success, got {}", self.body);
        self.json["token"].as_str().expect("a token").to_string()
    }
}

/// The SHA-256 hex of the password: the `password` method's code.
pub fn password_code(password: &str) -> String {
    rcpat::token::password_digest(password)
}

/// A TCP connection to `server` from the loopback address `from` (all of
/// 127.0.0.0/8 reaches the loopback interface): a test's stand-in for a
/// client on another machine.
pub fn connect_from(
    from: std::net::Ipv4Addr,
    server: std::net::SocketAddrV4,
) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let addr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (local, remote) = (addr(from, 0), addr(*server.ip(), server.port()));
    // SAFETY: plain socket calls on a descriptor this function owns; it is
    // handed to the TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        assert_eq!(
            libc::bind(fd, (&raw const local).cast(), len),
            0,
            "bind {from}"
        );
        assert_eq!(
            libc::connect(fd, (&raw const remote).cast(), len),
            0,
            "connect {server}"
        );
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// One HTTP/1.1 POST to `server` from the loopback address `from`, with
/// `extra` headers: (status, body).
pub fn post_from(
    from: std::net::Ipv4Addr,
    server: std::net::SocketAddrV4,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = connect_from(from, server);
    let extra: String = extra.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
