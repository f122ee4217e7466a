//! Server and storage options, from flags, environment (`RCPAT_*`) and an
//! optional TOML file, in that order of precedence. One struct serves all
//! three sources, so an option cannot exist in one and be missing in another.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

use rcpat::model::Settings;

use crate::runtime::RuntimeConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    /// One SQLite file (durable, the default).
    Sqlite,
    /// In memory, lost on exit (tests, trials).
    Memory,
    /// A PostgreSQL database (`--database-url`), shared by any number of hosts.
    Postgres,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per line, for machines.
    Json,
}

/// Every option; `None` means "not given here". Defaults are in the accessors.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Options {
    /// Address to listen on [default: 127.0.0.1:3000]
    #[arg(long, env = "RCPAT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with this PEM certificate chain; needs --tls-key
    #[arg(long, env = "RCPAT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (yours, unreadable by others)
    #[arg(long, env = "RCPAT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Address for /metrics, /health and /ready (Prometheus, probes), or "off" [default: 127.0.0.1:9464]
    #[arg(long, env = "RCPAT_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Storage backend [default: sqlite]
    #[arg(long, env = "RCPAT_STORAGE", value_enum)]
    pub storage: Option<StorageKind>,
    /// SQLite database file [default: rcpat.sqlite]
    #[arg(long, env = "RCPAT_DB")]
    pub db: Option<PathBuf>,
    /// PostgreSQL URL for --storage postgres (postgres://user:password@host:port/db?sslmode=require&sslrootcert=/path/ca.pem; TLS verifies the server against sslrootcert or the system's roots)
    #[arg(long, env = "RCPAT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL connections this host keeps at most [default: 16]
    #[arg(long, env = "RCPAT_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<u32>,
    /// Longest wait for a PostgreSQL connection, in milliseconds; past it a request gets the storage-failure reply [default: 1000]
    #[arg(long, env = "RCPAT_DATABASE_TIMEOUT_MS")]
    pub database_timeout_ms: Option<u64>,
    /// Directory where mail is written as .eml files when no SMTP server is set [default: outbox]
    #[arg(long, env = "RCPAT_OUTBOX")]
    pub outbox: Option<PathBuf>,
    /// SMTP server (host or host:port) for real mail delivery; secured as --smtp-tls says
    #[arg(long, env = "RCPAT_SMTP")]
    pub smtp: Option<String>,
    /// How to secure SMTP: starttls (port 587 by default), tls (implicit, 465) or none (plain text, 25; only for a relay on the same machine) [default: starttls]
    #[arg(long, env = "RCPAT_SMTP_TLS", value_enum)]
    pub smtp_tls: Option<crate::mail::SmtpTls>,
    /// Trust only the CA certificates in this PEM file for SMTP, instead of the system's roots
    #[arg(long, env = "RCPAT_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// User name for SMTP AUTH; the password comes from --smtp-password-file or RCPAT_SMTP_PASSWORD, never a flag
    #[arg(long, env = "RCPAT_SMTP_USER")]
    pub smtp_user: Option<String>,
    /// File whose first line is the SMTP password (yours, unreadable by others)
    #[arg(long, env = "RCPAT_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// Sender address of mailed codes [default: Rocket.Chat's no-reply sender at localhost]
    #[arg(long, env = "RCPAT_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// File holding the secret key that hashes second-factor codes (created owner-only if absent; RCPAT_SECRET_KEY, 64 hex digits, overrides it) [default: the database path with extension .key]
    #[arg(long, env = "RCPAT_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Directory for the precompiled component, which must be yours and writable by no one else [default: $XDG_CACHE_HOME/rcpat, else ~/.cache/rcpat]
    #[arg(long, env = "RCPAT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the component at every start instead of caching it
    #[arg(long, env = "RCPAT_NO_CACHE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub no_cache: Option<bool>,
    /// Run this component file instead of the embedded one
    #[arg(long, env = "RCPAT_COMPONENT")]
    pub component: Option<PathBuf>,
    /// Run the logic linked natively instead of in the component (baseline)
    #[arg(long, env = "RCPAT_NATIVE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub native: Option<bool>,
    /// Component instances at once (the pool size) [default: 64]
    #[arg(long, env = "RCPAT_MAX_INSTANCES")]
    pub max_instances: Option<u32>,
    /// Linear memory cap per instance, in MiB [default: 16]
    #[arg(long, env = "RCPAT_MEMORY_LIMIT_MB")]
    pub memory_limit_mb: Option<usize>,
    /// Time limit per request inside the component, in milliseconds [default: 5000]
    #[arg(long, env = "RCPAT_TIMEOUT_MS")]
    pub timeout_ms: Option<u64>,
    /// Largest accepted request body, in bytes [default: 65536]
    #[arg(long, env = "RCPAT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Threads that check passwords (bcrypt), at a lower priority [default: 1]
    #[arg(long, env = "RCPAT_PASSWORD_WORKERS")]
    pub password_workers: Option<usize>,
    /// How long a login waits for a password worker before a 429, in milliseconds [default: 100]
    #[arg(long, env = "RCPAT_PASSWORD_WAIT_MS")]
    pub password_wait_ms: Option<u64>,
    /// Seconds a client has to send a request's headers (also the idle keep-alive limit), then its body [default: 10]
    #[arg(long, env = "RCPAT_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Open connections at most; more are answered 503 and closed [default: 4096, within the descriptor limit]
    #[arg(long, env = "RCPAT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one client address at most; more are answered 503 and closed (behind a reverse proxy, every client shares its address: raise it) [default: 256]
    #[arg(long, env = "RCPAT_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Reverse proxies whose forwarding header is believed: CIDR blocks or addresses, comma-separated (10.0.0.0/8,::1). The client is the right-most untrusted hop of --proxy-header; without this option, the socket's peer [default: none]
    #[arg(
        long,
        env = "RCPAT_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Which header trusted proxies write the client into: x-forwarded-for or forwarded (RFC 7239); the other is ignored [default: x-forwarded-for]
    #[arg(long, env = "RCPAT_PROXY_HEADER", value_enum)]
    pub proxy_header: Option<crate::client_address::ProxyHeader>,
    /// Seconds a shutdown (SIGTERM, SIGINT) waits for the requests in flight before cutting them [default: 30]
    #[arg(long, env = "RCPAT_SHUTDOWN_TIMEOUT_SECS", alias = "shutdown-timeout")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Log format: text (coloured only on a terminal) or json [default: text]
    #[arg(long, env = "RCPAT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve the token page at / (the JSON API is the same either way) [default: true]
    #[arg(long, env = "RCPAT_WEB", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub web: Option<bool>,

    /// Two-factor checks on or off (Accounts_TwoFactorAuthentication_Enabled) [default: true]
    #[arg(long, env = "RCPAT_TWO_FACTOR", value_name = "BOOL")]
    pub two_factor: Option<bool>,
    /// TOTP as a method (..._By_TOTP_Enabled) [default: true]
    #[arg(long, env = "RCPAT_TOTP", value_name = "BOOL")]
    pub totp: Option<bool>,
    /// Emailed codes as a method (..._By_Email_Enabled) [default: true]
    #[arg(long, env = "RCPAT_EMAIL_2FA", value_name = "BOOL")]
    pub email_2fa: Option<bool>,
    /// TOTP steps accepted either side of now (..._MaxDelta) [default: 1]
    #[arg(long, env = "RCPAT_TOTP_MAX_DELTA")]
    pub totp_max_delta: Option<u32>,
    /// Emailed code lifetime in seconds (..._Email_Code_Expiration) [default: 3600]
    #[arg(long, env = "RCPAT_EMAIL_CODE_EXPIRATION")]
    pub email_code_expiration: Option<u32>,
    /// Wrong tries per emailed code (..._Max_Invalid_Email_Code_Attempts) [default: 5]
    #[arg(long, env = "RCPAT_EMAIL_CODE_MAX_ATTEMPTS")]
    pub email_code_max_attempts: Option<u32>,
    /// Password as the second factor for users without TOTP/email (..._Enforce_Password_Fallback) [default: true]
    #[arg(long, env = "RCPAT_PASSWORD_FALLBACK", value_name = "BOOL")]
    pub password_fallback: Option<bool>,
    /// Remember a client that passed 2FA for this many seconds; 0 = off (..._RememberFor) [default: 0]
    #[arg(long, env = "RCPAT_REMEMBER_FOR")]
    pub remember_for: Option<u32>,
    /// Wrong codes (any method) per user within the window before lockout [default: 10]
    #[arg(long, env = "RCPAT_MAX_FAILED_ATTEMPTS")]
    pub max_failed_attempts: Option<u32>,
    /// The lockout window in seconds, from the last wrong code [default: 900]
    #[arg(long, env = "RCPAT_FAILED_ATTEMPTS_WINDOW")]
    pub failed_attempts_window: Option<u32>,
    /// Session (login) token lifetime in days; 0 = never expire (Accounts_LoginExpiration) [default: 90]
    #[arg(long, env = "RCPAT_LOGIN_EXPIRATION_DAYS")]
    pub login_expiration_days: Option<u32>,
    /// Failed logins for one account before its logins are blocked; 0 = off (Block_Multiple_Failed_Logins_By_User) [default: 10]
    #[arg(long, env = "RCPAT_MAX_FAILED_LOGINS_PER_USER")]
    pub max_failed_logins_per_user: Option<u32>,
    /// Minutes an account stays blocked (..._Time_To_Unblock_By_User_In_Minutes) [default: 5]
    #[arg(long, env = "RCPAT_USER_LOGIN_BLOCK_MINUTES")]
    pub user_login_block_minutes: Option<u32>,
    /// Failed logins from one client address before its logins are blocked; 0 = off (Block_Multiple_Failed_Logins_By_Ip) [default: 50]
    #[arg(long, env = "RCPAT_MAX_FAILED_LOGINS_PER_ADDRESS")]
    pub max_failed_logins_per_address: Option<u32>,
    /// Minutes an address stays blocked (..._Time_To_Unblock_By_Ip_In_Minutes) [default: 5]
    #[arg(long, env = "RCPAT_ADDRESS_LOGIN_BLOCK_MINUTES")]
    pub address_login_block_minutes: Option<u32>,
    /// Let bypassTwoFactor tokens mint bypass tokens and regenerate or remove other tokens without a second factor, as Rocket.Chat does [default: false]
    #[arg(long, env = "RCPAT_BYPASS_TOKENS_UNRESTRICTED", value_name = "BOOL")]
    pub bypass_tokens_unrestricted: Option<bool>,
    /// Add lastUsedAt to each used token in users.getPersonalAccessTokens (not a Rocket.Chat field; the last use is recorded either way) [default: false]
    #[arg(long, env = "RCPAT_SHOW_TOKEN_LAST_USE", value_name = "BOOL")]
    pub show_token_last_use: Option<bool>,
    /// Prefix of new personal access tokens for secret scanners (4-16 of [A-Za-z0-9_], e.g. rcpat_); such tokens end with a CRC32 checksum in base62. Empty: Rocket.Chat's plain tokens [default: empty]
    #[arg(long, env = "RCPAT_TOKEN_PREFIX")]
    pub token_prefix: Option<String>,
    /// Longest lifetime of a personal access token, in days: generate without expiresAt gives this, a later expiresAt is refused, regenerate renews within it. 0: tokens never expire unless asked, as in Rocket.Chat [default: 0]
    #[arg(long, env = "RCPAT_MAX_TOKEN_LIFETIME_DAYS", value_name = "DAYS")]
    pub max_token_lifetime_days: Option<u32>,
    /// Hours a generate or regenerate reply is kept for retries with the same Idempotency-Key header (sealed for the presented token's holder); 0 ignores the header, as Rocket.Chat does [default: 24]
    #[arg(long, env = "RCPAT_IDEMPOTENCY_KEY_HOURS", value_name = "HOURS")]
    pub idempotency_key_hours: Option<u32>,
    /// Reuse detection: a regeneration keeps the value it replaced, and that value presented again revokes the token (401 as for an unknown token, the owner mailed, a security log line) [default: true]
    #[arg(long, env = "RCPAT_REUSE_DETECTION", value_name = "BOOL")]
    pub reuse_detection: Option<bool>,
    /// Days a regenerated token's old value counts for reuse detection (a token keeps its newest 32) [default: 30]
    #[arg(
        long,
        env = "RCPAT_SUPERSEDED_TOKEN_RETENTION_DAYS",
        value_name = "DAYS"
    )]
    pub superseded_token_retention_days: Option<u32>,
    /// Seconds after a regeneration during which its old value is only an unknown token, not reuse (requests already on their way with it); 0 revokes at once [default: 10]
    #[arg(
        long,
        env = "RCPAT_SUPERSEDED_TOKEN_GRACE_SECONDS",
        value_name = "SECONDS"
    )]
    pub superseded_token_grace_seconds: Option<u32>,
    /// This host's name on the audit events it stores (1-64 of [A-Za-z0-9._-]) [default: the machine's hostname]
    #[arg(long, env = "RCPAT_HOST_ID")]
    pub host_id: Option<String>,
    /// Days audit events are kept; `serve` prunes older ones in the background every 10 minutes. 0 keeps them forever [default: 365]
    #[arg(long, env = "RCPAT_AUDIT_RETENTION_DAYS", value_name = "DAYS")]
    pub audit_retention_days: Option<u32>,
}

/// Which commands an option belongs to: each command shows (in `--help`)
/// and accepts (on its command line) only the groups it uses; `RCPAT_*`
/// variables and the TOML file may set any option for every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Where data lives: wherever storage is opened.
    Storage,
    /// How mail goes out: where mail is sent.
    Mail,
    /// The HTTP server: `serve`, `bench`.
    Server,
    /// Loading and bounding the component.
    Component,
    /// The component's settings (Rocket.Chat's).
    Settings,
}

impl Group {
    /// The group of the option whose clap id (its field name) is `id`.
    pub fn of(id: &str) -> Option<Group> {
        Some(match id {
            "storage"
            | "db"
            | "database_url"
            | "database_pool_size"
            | "database_timeout_ms"
            | "secret_key_file"
            | "host_id"
            | "audit_retention_days" => Group::Storage,
            "outbox" | "smtp" | "smtp_tls" | "smtp_ca_file" | "smtp_user"
            | "smtp_password_file" | "mail_from" => Group::Mail,
            "listen"
            | "tls_cert"
            | "tls_key"
            | "admin_listen"
            | "max_body_bytes"
            | "password_workers"
            | "password_wait_ms"
            | "request_timeout_secs"
            | "max_connections"
            | "max_connections_per_address"
            | "trusted_proxies"
            | "proxy_header"
            | "shutdown_timeout_secs"
            | "log_format"
            | "web" => Group::Server,
            "cache_dir" | "no_cache" | "component" | "native" | "max_instances"
            | "memory_limit_mb" | "timeout_ms" => Group::Component,
            "two_factor"
            | "totp"
            | "email_2fa"
            | "totp_max_delta"
            | "email_code_expiration"
            | "email_code_max_attempts"
            | "password_fallback"
            | "remember_for"
            | "max_failed_attempts"
            | "failed_attempts_window"
            | "login_expiration_days"
            | "max_failed_logins_per_user"
            | "user_login_block_minutes"
            | "max_failed_logins_per_address"
            | "address_login_block_minutes"
            | "bypass_tokens_unrestricted"
            | "show_token_last_use"
            | "token_prefix"
            | "max_token_lifetime_days"
            | "idempotency_key_hours"
            | "reuse_detection"
            | "superseded_token_retention_days"
            | "superseded_token_grace_seconds" => Group::Settings,
            _ => return None,
        })
    }
}

macro_rules! merge_fields {
    ($a:ident, $b:ident; $($f:ident),*) => { Options { $($f: $a.$f.or($b.$f)),* } };
}

impl Options {
    /// Reads a TOML file of the same options (kebab-case keys).
    pub fn from_file(path: &Path) -> crate::error::Result<Self> {
        use crate::error::Error;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        toml::from_str(&text).map_err(|source| Error::Config {
            path: path.into(),
            source,
        })
    }

    /// `self` (flags and environment) over `file`.
    pub fn over(self, file: Options) -> Options {
        let (a, b) = (self, file);
        merge_fields!(a, b; listen, tls_cert, tls_key, admin_listen, storage, db, database_url, database_pool_size, database_timeout_ms, outbox, smtp, smtp_tls, smtp_ca_file, smtp_user, smtp_password_file, mail_from, secret_key_file, cache_dir, no_cache, component, native,
            max_instances, memory_limit_mb, timeout_ms, max_body_bytes, password_workers, password_wait_ms,
            request_timeout_secs, max_connections, max_connections_per_address, trusted_proxies, proxy_header, shutdown_timeout_secs, log_format, web, two_factor, totp, email_2fa, totp_max_delta,
            email_code_expiration, email_code_max_attempts, password_fallback, remember_for, max_failed_attempts,
            failed_attempts_window, login_expiration_days, max_failed_logins_per_user, user_login_block_minutes,
            max_failed_logins_per_address, address_login_block_minutes, bypass_tokens_unrestricted,
            show_token_last_use, token_prefix, max_token_lifetime_days, idempotency_key_hours, reuse_detection,
            superseded_token_retention_days, superseded_token_grace_seconds, host_id, audit_retention_days)
    }

    /// The trusted reverse proxies (`client_address.rs`).
    pub fn proxies(&self) -> crate::error::Result<crate::client_address::Proxies> {
        crate::client_address::Proxies::parse(
            self.trusted_proxies.as_deref().unwrap_or_default(),
            self.proxy_header.unwrap_or_default(),
        )
        .map_err(crate::error::Error::invalid)
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)))
    }
    /// The TLS server settings, when --tls-cert and --tls-key are given.
    pub fn tls(&self) -> crate::error::Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
        use crate::error::Error;
        use crate::files::{Exposure, read_trusted};
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            _ => return Err(Error::invalid("--tls-cert and --tls-key go together")),
        };
        let read = |path: &PathBuf, exposure| {
            read_trusted(path, exposure)?
                .ok_or_else(|| Error::invalid(format!("{}: no such file", path.display())))
        };
        let chain = CertificateDer::pem_slice_iter(&read(cert, Exposure::NotWritable)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(format!("{}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(Error::invalid(format!(
                "{}: no certificate",
                cert.display()
            )));
        }
        let private = PrivateKeyDer::from_pem_slice(&read(key, Exposure::Private)?)
            .map_err(|e| Error::invalid(format!("{}: {e}", key.display())))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
            .map_err(|e| Error::invalid(format!("TLS: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(std::sync::Arc::new(config)))
    }
    /// Where to serve metrics and probes; `None` when turned off.
    pub fn admin_listen(&self) -> Result<Option<SocketAddr>, String> {
        match self.admin_listen.as_deref().map(str::trim) {
            None => Ok(Some(SocketAddr::from(([127, 0, 0, 1], 9464)))),
            Some("off") => Ok(None),
            Some(a) => a
                .parse()
                .map(Some)
                .map_err(|_| format!("--admin-listen must be HOST:PORT or off, not {a:?}")),
        }
    }
    pub fn storage(&self) -> StorageKind {
        self.storage.unwrap_or(StorageKind::Sqlite)
    }
    /// The id stamped on stored audit events: `--host-id`, else the
    /// machine's hostname, checked (it is shown to administrators).
    pub fn host_id(&self) -> crate::error::Result<String> {
        let id = match &self.host_id {
            Some(id) => id.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| is_host_id(h))
                .unwrap_or_else(|| "host-example".into()),
        };
        if !is_host_id(&id) {
            return Err(crate::error::Error::invalid(
                "--host-id must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'",
            ));
        }
        Ok(id)
    }

    /// How long audit events are kept (`None`: forever).
    pub fn audit_retention(&self) -> Option<std::time::Duration> {
        match self.audit_retention_days.unwrap_or(365) {
            0 => None,
            days => Some(std::time::Duration::from_secs(u64::from(days) * 86_400)),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| "rcpat.sqlite".into())
    }
    /// The PostgreSQL settings, if a URL is given.
    pub fn postgres(&self) -> Option<crate::storage::PostgresConfig> {
        let mut c = crate::storage::PostgresConfig::new(self.database_url.clone()?);
        if let Some(n) = self.database_pool_size {
            c.pool_size = n;
        }
        if let Some(ms) = self.database_timeout_ms {
            c.timeout = std::time::Duration::from_millis(ms);
        }
        Some(c)
    }
    pub fn secret_key_file(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.db().with_extension("key"))
    }
    pub fn mail_from(&self) -> String {
        self.mail_from
            .clone()
            .unwrap_or_else(|| crate::mail::DEFAULT_FROM.into())
    }
    /// The SMTP settings, if a server is given. The password is read here,
    /// from the file or `RCPAT_SMTP_PASSWORD`.
    pub fn smtp(&self) -> crate::error::Result<Option<crate::mail::SmtpConfig>> {
        use crate::error::Error;
        let Some(server) = &self.smtp else {
            return Ok(None);
        };
        let password = match (
            &self.smtp_password_file,
            std::env::var("RCPAT_SMTP_PASSWORD"),
        ) {
            (Some(path), _) => {
                let bytes = crate::files::read_trusted(path, crate::files::Exposure::Private)?
                    .ok_or_else(|| Error::invalid(format!("{}: no such file", path.display())))?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::invalid(format!("{}: the password is not UTF-8", path.display()))
                })?;
                Some(text.lines().next().unwrap_or("").to_string())
            }
            (None, Ok(p)) => Some(p),
            (None, Err(_)) => None,
        };
        let credentials = match (&self.smtp_user, password) {
            (Some(user), Some(password)) => Some((user.clone(), password)),
            (Some(_), None) => {
                return Err(Error::invalid(
                    "--smtp-user needs a password: --smtp-password-file or RCPAT_SMTP_PASSWORD",
                ));
            }
            (None, _) => None,
        };
        Ok(Some(crate::mail::SmtpConfig {
            server: server.clone(),
            tls: self.smtp_tls.unwrap_or(crate::mail::SmtpTls::Starttls),
            ca_file: self.smtp_ca_file.clone(),
            credentials,
        }))
    }
    pub fn outbox(&self) -> PathBuf {
        self.outbox.clone().unwrap_or_else(|| "outbox".into())
    }
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache.unwrap_or(false) {
            return None;
        }
        self.cache_dir.clone().or_else(crate::cache::default_dir)
    }
    pub fn web(&self) -> bool {
        self.web.unwrap_or(true)
    }

    pub fn native(&self) -> bool {
        self.native.unwrap_or(false)
    }
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(LogFormat::Text)
    }

    /// The server's limits; `concurrency` follows the instance pool.
    pub fn limits(&self) -> crate::server::Limits {
        let d = crate::server::Limits::default();
        crate::server::Limits {
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            concurrency: self.runtime().max_instances as usize,
            password_workers: self.password_workers.unwrap_or(d.password_workers).max(1),
            password_wait: self
                .password_wait_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(d.password_wait),
            request_timeout: self
                .request_timeout_secs
                .map(std::time::Duration::from_secs)
                .unwrap_or(d.request_timeout),
            max_connections: self.max_connections.unwrap_or(d.max_connections).max(1),
            max_connections_per_address: self
                .max_connections_per_address
                .unwrap_or(d.max_connections_per_address)
                .max(1),
            drain_grace: d.drain_grace,
            shutdown_timeout: self
                .shutdown_timeout_secs
                .map(std::time::Duration::from_secs)
                .unwrap_or(d.shutdown_timeout),
        }
    }

    pub fn runtime(&self) -> RuntimeConfig {
        let d = RuntimeConfig::default();
        RuntimeConfig {
            max_instances: self.max_instances.unwrap_or(d.max_instances).max(1),
            memory_limit_bytes: self
                .memory_limit_mb
                .map(|m| m << 20)
                .unwrap_or(d.memory_limit_bytes),
            timeout: self
                .timeout_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(d.timeout),
        }
    }

    /// The component's settings: Rocket.Chat's defaults, overridden.
    pub fn settings(&self) -> Settings {
        let d = Settings::default();
        Settings {
            two_factor_enabled: self.two_factor.unwrap_or(d.two_factor_enabled),
            totp_enabled: self.totp.unwrap_or(d.totp_enabled),
            email_enabled: self.email_2fa.unwrap_or(d.email_enabled),
            totp_max_delta: self.totp_max_delta.unwrap_or(d.totp_max_delta),
            email_code_expiration_seconds: self
                .email_code_expiration
                .unwrap_or(d.email_code_expiration_seconds),
            email_code_max_attempts: self
                .email_code_max_attempts
                .unwrap_or(d.email_code_max_attempts),
            enforce_password_fallback: self
                .password_fallback
                .unwrap_or(d.enforce_password_fallback),
            remember_for_seconds: self.remember_for.unwrap_or(d.remember_for_seconds),
            max_failed_attempts: self.max_failed_attempts.unwrap_or(d.max_failed_attempts),
            failed_attempts_window_seconds: self
                .failed_attempts_window
                .unwrap_or(d.failed_attempts_window_seconds),
            login_expiration_days: self
                .login_expiration_days
                .unwrap_or(d.login_expiration_days),
            max_failed_logins_per_user: self
                .max_failed_logins_per_user
                .unwrap_or(d.max_failed_logins_per_user),
            user_login_block_minutes: self
                .user_login_block_minutes
                .unwrap_or(d.user_login_block_minutes),
            max_failed_logins_per_address: self
                .max_failed_logins_per_address
                .unwrap_or(d.max_failed_logins_per_address),
            address_login_block_minutes: self
                .address_login_block_minutes
                .unwrap_or(d.address_login_block_minutes),
            bypass_tokens_unrestricted: self
                .bypass_tokens_unrestricted
                .unwrap_or(d.bypass_tokens_unrestricted),
            show_token_last_use: self.show_token_last_use.unwrap_or(d.show_token_last_use),
            token_prefix: self
                .token_prefix
                .clone()
                .map_or(d.token_prefix, rcpat::token::TokenPrefix::from),
            max_token_lifetime_days: self
                .max_token_lifetime_days
                .unwrap_or(d.max_token_lifetime_days),
            idempotency_key_hours: self
                .idempotency_key_hours
                .unwrap_or(d.idempotency_key_hours),
            reuse_detection: self.reuse_detection.unwrap_or(d.reuse_detection),
            superseded_token_retention_days: self
                .superseded_token_retention_days
                .unwrap_or(d.superseded_token_retention_days),
            superseded_token_grace_seconds: self
                .superseded_token_grace_seconds
                .unwrap_or(d.superseded_token_grace_seconds),
        }
    }
}

fn is_host_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod group_tests {
    use super::*;

    /// A new option must say which commands it belongs to.
    #[test]
    fn every_option_has_a_group() {
        let cmd = Options::augment_args(clap::Command::new("t"));
        let ids: Vec<String> = cmd
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        assert_eq!(ids.len(), 60);
        for id in ids {
            assert!(Group::of(&id).is_some(), "{id} has no group");
        }
    }
}
