//! `host-example`: runs the rcpat component in wasmtime: a Rocket.Chat
//! compatible HTTP server, an admin CLI, and a demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use host_example::admin::{self, UserSpec};
use host_example::config::{Group, Options, StorageKind};
use host_example::error::Error;
use host_example::services::Services;
use host_example::storage::{Backend, PAT_PERMISSION};
use rcpat::model::TotpAlgorithm;
use wasmtime::error::Context;
use wasmtime::{Result, bail};

/// `--version`: this binary, the wasmtime it links and the component's SHA-256.
fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{} (wasmtime {}; component sha256 {})",
            env!("CARGO_PKG_VERSION"),
            env!("RCPAT_WASMTIME_VERSION"),
            rcpat_component::WASM_SHA256
        )
    });
    VERSION.as_str()
}

#[derive(Parser)]
#[command(
    name = "host-example",
    version = version(),
    about = "A wasmtime host for the rcpat personal-access-token component"
)]
struct Cli {
    /// TOML file with any option (kebab-case keys), for every command; flags and RCPAT_* variables win over it
    #[arg(long, global = true, env = "RCPAT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Rocket.Chat's REST API for personal access tokens over HTTP.
    Serve {
        #[command(flatten)]
        opts: Options,
    },
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Inspect tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Read and prune the audit trail (who changed which token, when, from
    /// where, with which second factor).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the secret keys (the key file beside the database).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Walk through generate / challenge / regenerate on a fresh SQLite database
    /// (`--db` must not exist; default: a new file under the temp dir; mail goes
    /// to `--outbox`, default next to the database).
    Demo {
        #[command(flatten)]
        opts: Options,
    },
    /// Load test: self-rotating regenerations against a server (see BENCHMARKS.md).
    Bench {
        /// A running server to drive (seeding writes to its storage: the same --db, or
        /// --storage postgres --database-url); repeat for several hosts on one
        /// database. Default: start one in this process on a fresh database in the temp dir
        #[arg(long)]
        url: Vec<String>,
        /// Users to seed, each with one token rotated again and again
        #[arg(long, default_value_t = 256)]
        users: usize,
        /// Concurrent connections (one worker thread each)
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Duration of the run in seconds
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Write a latency-over-time chart (SVG) here
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Run twice, in the component and natively, and print the throughput ratio
        /// (servers of its own: a server at --url runs one mode)
        #[arg(long, conflicts_with = "url")]
        compare: bool,
        /// Measure start-up to the first served request instead (compiling, then cached)
        #[arg(long)]
        startup: bool,
        /// Measure this many regenerations on one kept instance instead (as hosts that
        /// instantiate once do): time per call and the guest's memory
        #[arg(long, default_value_t = 0)]
        reuse: usize,
        /// Run twice, quiet and then with this many extra connections sending
        /// wrong passwords (login blocks off, as from many addresses), and print
        /// the throughput kept
        #[arg(long, default_value_t = 0)]
        login_flood: usize,
        #[command(flatten)]
        opts: Options,
    },
    /// Print the embedded component's world (its imports and exports) as WIT.
    Wit,
    /// Print the embedded component's size and the toolchain route that built it.
    Info,
    /// Write the embedded component (a `.wasm` component) to FILE, for other
    /// hosts: `host-node/` transpiles it with jco.
    Export {
        #[arg(value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user (email verified). The password is never a flag (it would
    /// sit in the process list and shell history): give a file, standard
    /// input or a prompt; with none of them the user has no password.
    Add {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of this file
        #[arg(long, value_name = "FILE", group = "password_source")]
        password_file: Option<PathBuf>,
        /// Read the password from the first line of standard input
        #[arg(long, group = "password_source")]
        password_stdin: bool,
        /// Ask for the password on the terminal (typed twice, not echoed)
        #[arg(long, group = "password_source")]
        password_prompt: bool,
        /// Comma-separated roles
        #[arg(long, value_delimiter = ',', default_value = "user")]
        roles: Vec<String>,
        #[command(flatten)]
        opts: Options,
    },
    /// List users.
    List {
        #[command(flatten)]
        opts: Options,
    },
    /// Grant the create-personal-access-tokens permission to a user.
    Grant {
        username: String,
        #[command(flatten)]
        opts: Options,
    },
    /// Revoke the create-personal-access-tokens permission from a user.
    Revoke {
        username: String,
        #[command(flatten)]
        opts: Options,
    },
    /// Enrol TOTP: prints the otpauth:// URI, a QR code and the backup codes.
    EnableTotp {
        username: String,
        #[arg(long, value_enum, default_value = "sha1")]
        algorithm: Algorithm,
        #[arg(long, default_value_t = 6)]
        digits: u8,
        #[command(flatten)]
        opts: Options,
    },
    /// Turn on emailed codes for a user.
    EnableEmail2fa {
        username: String,
        #[command(flatten)]
        opts: Options,
    },
}

impl UsersCommand {
    fn take_options(&mut self) -> Options {
        match self {
            UsersCommand::Add { opts, .. }
            | UsersCommand::List { opts }
            | UsersCommand::Grant { opts, .. }
            | UsersCommand::Revoke { opts, .. }
            | UsersCommand::EnableTotp { opts, .. }
            | UsersCommand::EnableEmail2fa { opts, .. } => std::mem::take(opts),
        }
    }
}

#[derive(Subcommand)]
enum TokensCommand {
    /// List a user's personal access tokens.
    List {
        username: String,
        #[command(flatten)]
        opts: Options,
    },
    /// Mail each owner of a personal access token that expires within the
    /// given days, once per token (run it daily from cron or a systemd timer).
    NotifyExpiring {
        /// Tokens that expire within this many days.
        #[arg(long, default_value_t = 7, value_name = "DAYS")]
        within_days: u32,
        #[command(flatten)]
        opts: Options,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The audit events, newest first.
    List {
        /// Only this user's events (a username; else an account as stored)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Only events at or after this date or instant (2026-12-07, 2026-12-07T10:00:00Z)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only events of this type (token-regenerated, login-failed, ...)
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// At most this many events
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line (the REST route's fields)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: Options,
    },
    /// Remove the events older than --audit-retention-days now (`serve`
    /// does it every 10 minutes; this is for hosts that run no server).
    Prune {
        #[command(flatten)]
        opts: Options,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new key to the key file and re-encrypt every TOTP secret under
    /// it (one host; with several, `keys add`, copy the file, `keys reencrypt`).
    Rotate {
        #[command(flatten)]
        opts: Options,
    },
    /// Add a new key to the key file; nothing is encrypted under it until
    /// `keys reencrypt` (or a TOTP enrolment) runs with this file.
    Add {
        #[command(flatten)]
        opts: Options,
    },
    /// Re-encrypt every TOTP secret under the newest key of the key file.
    Reencrypt {
        #[command(flatten)]
        opts: Options,
    },
}

impl Command {
    /// The command's own options (moved out; defaults for commands without).
    fn take_options(&mut self) -> Options {
        match self {
            Command::Serve { opts }
            | Command::Demo { opts }
            | Command::Bench { opts, .. }
            | Command::Keys {
                command:
                    KeysCommand::Rotate { opts }
                    | KeysCommand::Add { opts }
                    | KeysCommand::Reencrypt { opts },
            }
            | Command::Tokens {
                command:
                    TokensCommand::List { opts, .. } | TokensCommand::NotifyExpiring { opts, .. },
            } => std::mem::take(opts),
            Command::Audit {
                command: AuditCommand::List { opts, .. } | AuditCommand::Prune { opts },
            } => std::mem::take(opts),
            Command::Users { command } => command.take_options(),
            Command::Wit | Command::Info | Command::Export { .. } => Options::default(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

fn main() -> ExitCode {
    // Whatever this process creates (database, WAL, outbox, keys, cache) is
    // owner-only, even where a library picks the mode.
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    let mut cli = parse_cli();
    if matches!(
        cli.command,
        Command::Users { .. }
            | Command::Tokens { .. }
            | Command::Audit { .. }
            | Command::Keys { .. }
            | Command::Wit
            | Command::Info
    ) {
        // Commands that only print: a closed pipe (`| head`) ends them
        // quietly, as it does coreutils, instead of a panic from `println!`.
        // Commands with sockets keep Rust's ignored SIGPIPE.
        // SAFETY: restoring a signal's default action has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let options = cli.command.take_options();
    let result = cli
        .config
        .as_deref()
        .map(Options::from_file)
        .transpose()
        .map_err(wasmtime::Error::from)
        .map(|file| options.over(file.unwrap_or_default()))
        .and_then(|opts| run(cli.command, opts));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the error and its causes on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The option groups a command takes, by its path of subcommand names.
fn groups(path: &[&str]) -> &'static [Group] {
    use Group::*;
    match path {
        ["serve"] | ["bench"] => &[Storage, Mail, Server, Component, Settings],
        ["demo"] => &[Storage, Mail],
        ["tokens", "notify-expiring"] => &[Storage, Mail],
        ["users", ..] | ["tokens", ..] | ["keys", ..] | ["audit", ..] => &[Storage],
        _ => &[],
    }
}

/// The command line as clap sees it: every command that uses options
/// carries them all (one `Options` for flags, `RCPAT_*` and the TOML file),
/// and its `--help` shows only the groups it takes.
fn cli_command() -> clap::Command {
    fn restrict(cmd: clap::Command, path: &mut Vec<String>) -> clap::Command {
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        let allowed = groups(&names);
        let ids: Vec<String> = cmd
            .get_arguments()
            .filter(|a| Group::of(a.get_id().as_str()).is_some_and(|g| !allowed.contains(&g)))
            .map(|a| a.get_id().to_string())
            .collect();
        let mut cmd = ids
            .into_iter()
            .fold(cmd, |cmd, id| cmd.mut_arg(id, |a| a.hide(true)));
        let subs: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        for name in subs {
            path.push(name.clone());
            cmd = cmd.mut_subcommand(&name, |sub| restrict(sub, path));
            path.pop();
        }
        cmd
    }
    restrict(<Cli as clap::CommandFactory>::command(), &mut Vec::new())
}

/// Parses the command line; an option given to a command that does not
/// take it (`users add --listen ...`) is an error, not silently ignored.
fn parse_cli() -> Cli {
    use clap::FromArgMatches;
    use clap::parser::ValueSource;
    let mut cmd = cli_command();
    let matches = cmd.get_matches_mut();
    let mut path = Vec::new();
    let mut leaf = &matches;
    while let Some((name, sub)) = leaf.subcommand() {
        path.push(name);
        leaf = sub;
    }
    let allowed = groups(&path);
    for id in leaf.ids() {
        let id = id.as_str();
        if Group::of(id).is_some_and(|g| !allowed.contains(&g))
            && leaf.value_source(id) == Some(ValueSource::CommandLine)
        {
            cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--{} is not an option of `{}` (see `host-example {} --help`)",
                    id.replace('_', "-"),
                    path.join(" "),
                    path.join(" ")
                ),
            )
            .exit();
        }
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn run(command: Command, opts: Options) -> Result<()> {
    match command {
        Command::Serve { .. } => serve(opts),
        Command::Users { command } => users(command, &admin_services(&opts)?),
        Command::Tokens {
            command: TokensCommand::List { username, .. },
        } => {
            let services = admin_services(&opts)?;
            let id = admin::user_id(&**services.storage(), &username)?;
            let tokens = services
                .storage()
                .list_personal_access_tokens(&id)
                .map_err(Error::from)?;
            if tokens.is_empty() {
                println!("{username} has no personal access tokens");
            }
            for t in tokens {
                println!(
                    "{:<24} created {}  ends …{}  bypass-2fa {}  last used {}",
                    admin::printable(&t.name),
                    rcpat::time::iso8601(t.created_at),
                    t.last_token_part,
                    t.bypass_two_factor,
                    t.last_used_at
                        .map_or_else(|| "never".into(), rcpat::time::iso8601)
                );
                if let Some(at) = t.expires_at {
                    println!("{:<24} expires {}", "", rcpat::time::iso8601(at));
                }
            }
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::List {
                    user,
                    since,
                    kind,
                    limit,
                    json,
                    ..
                },
        } => {
            let services = admin_services(&opts)?;
            let storage = &**services.storage();
            let filter = host_example::audit::filter(
                storage,
                user.as_deref(),
                since.as_deref(),
                kind.as_deref(),
            )?;
            let page = storage
                .list_audit_events(&filter, 0, limit)
                .map_err(Error::from)?;
            let names: std::collections::HashMap<String, String> = if json {
                Default::default()
            } else {
                storage
                    .list_users()?
                    .into_iter()
                    .map(|u| (u.id, u.username))
                    .collect()
            };
            for e in &page.events {
                if json {
                    println!("{}", host_example::audit::json(e));
                } else {
                    println!("{}", host_example::audit::line(e, &names));
                }
            }
            if !json {
                eprintln!("{} of {} events", page.events.len(), page.total);
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Prune { .. },
        } => {
            let services = admin_services(&opts)?;
            let Some(keep) = opts.audit_retention() else {
                println!("--audit-retention-days is 0: events are kept forever");
                return Ok(());
            };
            let now = services.clock().now_ms();
            let removed = host_example::audit::prune(&**services.storage(), now, keep)?;
            println!(
                "{removed} audit events older than {} days removed",
                keep.as_secs() / 86_400
            );
            Ok(())
        }
        Command::Tokens {
            command: TokensCommand::NotifyExpiring { within_days, .. },
        } => {
            let notices = admin::notify_expiring(&admin_services(&opts)?, within_days)?;
            for (user, name) in &notices.sent {
                println!("notified {user}: \"{name}\" expires within {within_days} days");
            }
            for (user, name) in &notices.no_address {
                println!("not notified {user} (no verified address): \"{name}\"");
            }
            for (user, name) in &notices.failed {
                println!("mail failed for {user}: \"{name}\" (retried next run)");
            }
            println!(
                "{} notices sent, {} owners without an address, {} failed",
                notices.sent.len(),
                notices.no_address.len(),
                notices.failed.len()
            );
            if notices.failed.is_empty() {
                Ok(())
            } else {
                bail!("{} expiry notices could not be sent", notices.failed.len())
            }
        }
        Command::Keys { command } => {
            if opts.storage() == StorageKind::Memory {
                bail!("keys commands need a durable storage (sqlite or postgres)");
            }
            let path = opts.secret_key_file();
            let (add, reencrypt) = match command {
                KeysCommand::Rotate { .. } => (true, true),
                KeysCommand::Add { .. } => (true, false),
                KeysCommand::Reencrypt { .. } => (false, true),
            };
            use host_example::keys::Keys;
            // The whole command runs under the key file's lock: concurrent
            // rotations serialize, each re-encrypting under its own key.
            // (`RCPAT_SECRET_KEY` has no file: `add` refuses it, `load` reads it.)
            let held = match std::env::var_os(host_example::keys::KEY_ENV) {
                Some(_) => None,
                None => Some(Keys::lock_file(&path)?),
            };
            let keys = Arc::new(match (&held, add) {
                (Some(held), true) => Keys::add_locked(&path, held)?,
                (Some(held), false) => Keys::load_locked(&path, held)?,
                // The key comes from the environment: `add` refuses it.
                (None, true) => Keys::add(&path)?,
                (None, false) => Keys::load(&path)?,
            });
            if add {
                println!("added key {} to {}", keys.current_id(), path.display());
            }
            if reencrypt {
                let storage = host_example::startup::open_backend(&opts, keys.clone())?;
                let n = storage.reencrypt_secrets()?;
                println!(
                    "re-encrypted {n} TOTP secrets under key {}",
                    keys.current_id()
                );
            }
            Ok(())
        }
        Command::Demo { .. } => {
            let dir = std::env::temp_dir().join(format!(
                "rcpat-demo-{}-{}",
                std::process::id(),
                admin::random_id(6)
            ));
            let db = opts.db.clone().unwrap_or_else(|| dir.join("demo.sqlite"));
            if let Some(parent) = db.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let outbox = opts
                .outbox
                .clone()
                .unwrap_or_else(|| db.with_extension("outbox"));
            host_example::demo::run(&db, &outbox, &mut std::io::stdout())
        }
        Command::Bench {
            url,
            users,
            connections,
            seconds,
            chart,
            compare,
            startup,
            login_flood,
            reuse,
            ..
        } => {
            if startup {
                return bench_startup();
            }
            if reuse > 0 {
                return bench_reuse(reuse);
            }
            if login_flood > 0 {
                let mut opts = opts.clone();
                opts.max_failed_logins_per_user = Some(0);
                opts.max_failed_logins_per_address = Some(0);
                let mut kept = Vec::new();
                for flood in [0, login_flood] {
                    let report =
                        bench_once(&opts, url.clone(), users, connections, seconds, flood)?;
                    report.print(&format!(
                        "{users} users, {connections} connections, {seconds} s, {flood} flooding logins"
                    ));
                    kept.push(report.ok as f64 / report.elapsed.as_secs_f64());
                    report.verdict().map_err(wasmtime::Error::msg)?;
                }
                println!("throughput kept under the flood: {:.2}", kept[1] / kept[0]);
                return Ok(());
            }
            let runs: Vec<bool> = if compare {
                vec![false, true]
            } else {
                vec![opts.native()]
            };
            let mut throughput = Vec::new();
            let mut cpu = Vec::new();
            for native in runs {
                let mut opts = opts.clone();
                opts.native = Some(native);
                // A server given by --url runs whichever mode it was started in.
                let label = if !url.is_empty() {
                    "the server(s) at --url"
                } else if native {
                    "native (logic linked into the host)"
                } else {
                    "component (wasmtime, instance per request)"
                };
                let report = bench_once(&opts, url.clone(), users, connections, seconds, 0)?;
                report.print(&format!(
                    "{label}: {users} users, {connections} connections, {seconds} s"
                ));
                throughput.push(report.ok as f64 / report.elapsed.as_secs_f64());
                cpu.push(report.server_cpu_per_request_us());
                if let Some(path) = &chart {
                    let path = if compare {
                        path.with_extension(if native { "native.svg" } else { "wasm.svg" })
                    } else {
                        path.clone()
                    };
                    std::fs::write(
                        &path,
                        report.svg(&format!("Self-rotation latency, {label}")),
                    )?;
                    println!("  chart           {}", path.display());
                }
                report.verdict().map_err(wasmtime::Error::msg)?;
            }
            if let [wasm, native] = throughput[..] {
                println!("component / native throughput: {:.2}", wasm / native);
            }
            if let [Some(wasm), Some(native)] = cpu[..] {
                println!(
                    "native / component server CPU per request (load generator excluded): {:.2}",
                    native / wasm
                );
            }
            Ok(())
        }
        Command::Wit => {
            print!("{}", host_example::component_wit()?);
            Ok(())
        }
        Command::Info => {
            println!("component size: {} bytes", host_example::COMPONENT.len());
            println!("built by the {} route", rcpat_component::BUILT_BY.0);
            println!("core module optimised by: {}", rcpat_component::BUILT_BY.1);
            Ok(())
        }
        Command::Export { out } => {
            std::fs::write(&out, host_example::COMPONENT)
                .with_context(|| format!("writing the component to {}", out.display()))?;
            Ok(())
        }
    }
}

fn serve(opts: Options) -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour escapes only for a person at a terminal, never in a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match opts.log_format() {
        host_example::config::LogFormat::Text => builder.init(),
        host_example::config::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    let descriptors = host_example::startup::raise_descriptor_limit();
    let admin = match opts.admin_listen().map_err(wasmtime::Error::msg)? {
        None => None,
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).with_context(|| {
                format!("bind the admin listener {addr} (--admin-listen; off turns it off)")
            })?;
            let handle =
                host_example::telemetry::install().context("installing the metrics recorder")?;
            Some((listener, handle))
        }
    };
    let admin_addr = admin.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
    let server = host_example::startup::RunningServer::start_with_admin(&opts, admin)?;
    tracing::info!(
        addr = %server.addr,
        https = server.https,
        admin = %admin_addr.map_or("off".to_string(), |a| a.to_string()),
        backend = if opts.native() { "native" } else { "wasm" },
        cache = ?server.cache,
        startup_ms = server.startup.as_secs_f64() * 1000.0,
        descriptors,
        "listening"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signal = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok::<_, std::io::Error>("SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    })?;
    let timeout = opts.limits().shutdown_timeout;
    tracing::info!(
        signal,
        timeout_secs = timeout.as_secs(),
        "shutting down: refusing new connections, finishing requests in flight"
    );
    match server.shutdown() {
        host_example::server::Stopped::Drained => {
            tracing::info!("stopped: every request in flight answered, storage closed");
            Ok(())
        }
        host_example::server::Stopped::TimedOut => {
            bail!("stopped after {timeout:?} with requests still in flight (--shutdown-timeout)")
        }
    }
}

fn admin_services(opts: &Options) -> Result<Services> {
    if opts.storage() == StorageKind::Memory {
        bail!(
            "admin commands need a durable storage, sqlite or postgres (an in-memory store is gone when they exit)"
        );
    }
    Ok(host_example::startup::services_from(opts)?)
}

fn users(command: UsersCommand, services: &Services) -> Result<()> {
    let storage: &Arc<dyn Backend> = services.storage();
    match command {
        UsersCommand::Add {
            username,
            email,
            password_file,
            password_stdin,
            password_prompt,
            roles,
            ..
        } => {
            let password = read_password(password_file, password_stdin, password_prompt)?;
            let roles: Vec<&str> = roles
                .iter()
                .map(String::as_str)
                .filter(|r| !r.is_empty())
                .collect();
            let spec = UserSpec {
                username: &username,
                email: email.as_deref(),
                password: password.as_deref(),
                roles: &roles,
            };
            let id = admin::create_user(services, &spec, admin::BCRYPT_COST)?;
            println!("created {username} with id {id}");
        }
        UsersCommand::List { .. } => {
            let users = storage.list_users()?;
            if users.is_empty() {
                println!("no users");
            }
            for u in users {
                let can = storage.has_permission(&u.id, PAT_PERMISSION)?;
                println!(
                    "{:<20} {:<17} {:<28} roles={:<12} totp={} email-2fa={} tokens={}",
                    u.username,
                    u.id,
                    u.email.as_deref().unwrap_or("-"),
                    u.roles.join(","),
                    u.totp,
                    u.email_two_factor,
                    if can { "allowed" } else { "denied" }
                );
            }
        }
        UsersCommand::Grant { username, .. } => {
            storage.set_user_permission(
                &admin::user_id(&**storage, &username)?,
                PAT_PERMISSION,
                Some(true),
            )?;
            println!("{username} may create personal access tokens");
        }
        UsersCommand::Revoke { username, .. } => {
            storage.set_user_permission(
                &admin::user_id(&**storage, &username)?,
                PAT_PERMISSION,
                Some(false),
            )?;
            println!("{username} may no longer create personal access tokens");
        }
        UsersCommand::EnableTotp {
            username,
            algorithm,
            digits,
            ..
        } => {
            let id = admin::user_id(&**storage, &username)?;
            let algorithm = match algorithm {
                Algorithm::Sha1 => TotpAlgorithm::Sha1,
                Algorithm::Sha256 => TotpAlgorithm::Sha256,
                Algorithm::Sha512 => TotpAlgorithm::Sha512,
            };
            let setup = admin::enable_totp(services, &id, &username, algorithm, digits)?;
            println!("{}", admin::qr_code(&setup.uri)?);
            println!("{}\n", setup.uri);
            println!("backup codes (each works once):");
            for pair in setup.backup_codes.chunks(2) {
                println!("  {}", pair.join("   "));
            }
        }
        UsersCommand::EnableEmail2fa { username, .. } => {
            let id = admin::user_id(&**storage, &username)?;
            storage.set_email_two_factor(&id, true)?;
            println!("{username} now receives emailed codes");
        }
    }
    Ok(())
}

/// The new user's password from the one source given, if any.
fn read_password(file: Option<PathBuf>, stdin: bool, prompt: bool) -> Result<Option<String>> {
    let first_line = |text: String| -> Result<String> {
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            bail!("the password must not be empty");
        }
        Ok(line)
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return first_line(text).map(Some);
    }
    if stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return first_line(line).map(Some);
    }
    if prompt {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        return first_line(first).map(Some);
    }
    Ok(None)
}

/// One load-test run: seeds users, then drives `urls` (or an in-process server).
fn bench_once(
    opts: &Options,
    urls: Vec<String>,
    users: usize,
    connections: usize,
    seconds: u64,
    login_flood: usize,
) -> Result<host_example::loadgen::Report> {
    let dir = std::env::temp_dir().join(format!(
        "rcpat-bench-{}-{}",
        std::process::id(),
        admin::random_id(6)
    ));
    let mut opts = opts.clone();
    if urls.is_empty() {
        std::fs::create_dir_all(&dir)?;
        opts.listen = Some("127.0.0.1:0".parse().unwrap());
        opts.db = opts.db.clone().or_else(|| Some(dir.join("bench.sqlite")));
        opts.outbox = Some(dir.join("outbox"));
    }
    let seeded = {
        let services = host_example::startup::services_from(&opts)?;
        host_example::loadgen::seed(&services, users.max(connections))?
    };
    let server = match urls.is_empty() {
        false => None,
        true => Some(host_example::startup::RunningServer::start(&opts)?),
    };
    let mut urls = urls;
    if let Some(s) = &server {
        urls.push(s.url(""));
    }
    let config = host_example::loadgen::LoadConfig {
        url: urls[0].clone(),
        more_urls: urls[1..].to_vec(),
        users,
        connections,
        duration: std::time::Duration::from_secs(seconds),
        show_progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        login_flood,
    };
    let report = host_example::loadgen::run(&config, seeded);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// `calls` self-rotations on one instance kept for all of them, on in-memory
/// storage: time per call, and the guest's memory after 1,000 calls and at
/// the end.
fn bench_reuse(calls: usize) -> Result<()> {
    use host_example::runtime::{Endpoint, Runtime, RuntimeConfig};
    let services = Services::new(
        Arc::new(host_example::storage::MemoryStorage::new()),
        Arc::new(host_example::mail::MemoryMailer::default()),
    );
    let spec = UserSpec {
        username: "reuse",
        email: None,
        password: None,
        roles: &["user"],
    };
    let id = admin::create_user(&services, &spec, 4)?;
    let mut token = admin::issue_personal_access_token(&services, &id, "bot", true)?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let settings = runtime.default_settings(&services)?;
    let mut instance = runtime.reused_instance(&services)?;
    let (mut after_1000, started) = (0, std::time::Instant::now());
    for i in 1..=calls {
        let req = rcpat::model::Request::new(
            &[("X-User-Id", &id), ("X-Auth-Token", &token)],
            br#"{"tokenName":"bot"}"#,
        );
        let r = instance.call(Endpoint::Regenerate, &settings, &req)?;
        if r.status != 200 {
            bail!("call {i}: {} {}", r.status, r.body);
        }
        let json: serde_json::Value = serde_json::from_str(&r.body)?;
        token = json["token"].as_str().context("a token")?.to_string();
        if i == 1000 {
            after_1000 = instance.memory_size();
        }
    }
    let elapsed = started.elapsed();
    println!("one instance, {calls} regenerations (in-memory storage)");
    println!(
        "  per call        {:.2} µs",
        elapsed.as_secs_f64() * 1e6 / calls as f64
    );
    println!(
        "  guest memory    {} bytes after 1,000 calls, {} bytes after {calls}",
        after_1000,
        instance.memory_size()
    );
    Ok(())
}

/// Start-up to the first served request, as a separate `serve` process:
/// compiling the component (empty cache), then with the cached artifact.
fn bench_startup() -> Result<()> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("rcpat-startup-{}", admin::random_id(6)));
    std::fs::create_dir_all(&dir)?;
    let measure = |cache: &std::path::Path| -> Result<f64> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())?
            .port();
        let started = std::time::Instant::now();
        let mut child = std::process::Command::new(&exe)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                "off",
                "--db",
            ])
            .arg(dir.join("startup.sqlite"))
            .arg("--cache-dir")
            .arg(cache)
            .arg("--outbox")
            .arg(dir.join("outbox"))
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("http://127.0.0.1:{port}/api/v1/me");
        let elapsed = loop {
            if let Ok(r) = agent.get(&url).call()
                && r.status().as_u16() == 401
            {
                break started.elapsed();
            }
            if started.elapsed() > std::time::Duration::from_secs(30) {
                let _ = child.kill();
                bail!("the server did not answer within 30 s");
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        };
        let _ = child.kill();
        let _ = child.wait();
        Ok(elapsed.as_secs_f64() * 1000.0)
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut compiling = Vec::new();
    let mut cached = Vec::new();
    for i in 0..5 {
        let cache = dir.join(format!("cache{i}"));
        compiling.push(measure(&cache)?);
        cached.push(measure(&cache)?);
    }
    println!("start-up to the first served request (median of 5, separate process):");
    println!("  compiling the component   {:.1} ms", median(compiling));
    println!("  cached precompiled        {:.1} ms", median(cached));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
