//! Outgoing mail for the component's `mail` import: an outbox directory of
//! `.eml` files (the default), SMTP, or an in-memory recorder for tests.
//! Outbox and SMTP build each message with the same builder (lettre's), so
//! addresses and headers are validated the same way for both.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rcpat::model::MailMessage;

use crate::error::{Error, Result};

/// Outgoing mail: the embedding crate's trait (its errors are `HostError`s).
pub use rcpat_wasmtime::Mail as Mailer;

/// An email address as users and mail may carry it: one RFC 5322
/// addr-spec (no display name, no CR/LF or other control characters), so a
/// stored address can never inject a header.
pub fn validate_address(address: &str) -> Result<()> {
    if address.chars().any(char::is_control) {
        return Err(Error::Address("control characters".into()));
    }
    address
        .parse::<lettre::Address>()
        .map(drop)
        .map_err(|e| Error::Address(e.to_string()))
}

/// The sender as a mailbox (`Name <addr>` or `addr`).
fn parse_sender(from: &str) -> Result<lettre::message::Mailbox> {
    if from.chars().any(char::is_control) {
        return Err(Error::Address("control characters in the sender".into()));
    }
    from.parse()
        .map_err(|e| Error::Address(format!("sender {from}: {e}")))
}

/// One message, built and validated by lettre (both the outbox and SMTP).
fn build(from: &lettre::message::Mailbox, m: &MailMessage) -> Result<lettre::Message> {
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .subject(m.subject.clone());
    for to in &m.to {
        validate_address(to)?;
        builder = builder.to(to
            .parse()
            .map_err(|e: lettre::address::AddressError| Error::Address(e.to_string()))?);
    }
    builder
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(m.text.clone())
        .map_err(Error::from)
}

/// Writes each message as an RFC 5322 `.eml` file into a directory.
/// The folder is 0700 and each file 0600: they hold second-factor codes.
pub struct Outbox {
    dir: PathBuf,
    from: lettre::message::Mailbox,
    sequence: AtomicU64,
}

impl Outbox {
    /// An outbox in `dir` (created owner-only) sending as [`DEFAULT_FROM`].
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::with_sender(dir, DEFAULT_FROM)
    }

    /// An outbox sending as `from`.
    pub fn with_sender(dir: impl Into<PathBuf>, from: &str) -> Result<Self> {
        let dir = dir.into();
        crate::files::create_private_dir(&dir)?;
        Ok(Outbox {
            dir,
            from: parse_sender(from)?,
            sequence: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The outbox's messages, oldest first, as (path, full text).
    pub fn messages(&self) -> Vec<(PathBuf, String)> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
            .collect()
    }
}

impl Mailer for Outbox {
    fn send(&self, m: &MailMessage) -> rcpat::storage::HostResult<()> {
        Ok(self.write(m)?)
    }
}

impl Outbox {
    fn write(&self, m: &MailMessage) -> Result<()> {
        let message = build(&self.from, m)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let n = self.sequence.fetch_add(1, Ordering::SeqCst);
        let id = format!("{:020}-{:06}-{:05}", now.as_nanos(), n, std::process::id());
        // Write then rename, so a reader never sees half a message; the
        // temporary file is created exclusively, owner-only, never through a
        // symlink.
        let tmp = self.dir.join(format!("{id}.tmp"));
        crate::files::create_private_file(&tmp, &message.formatted())?;
        let eml = self.dir.join(format!("{id}.eml"));
        std::fs::rename(&tmp, &eml).map_err(|e| Error::io("rename into", eml, e))
    }
}

/// Keeps messages in memory; `fail` makes every send fail (fault injection).
#[derive(Default)]
pub struct MemoryMailer {
    pub sent: Mutex<Vec<MailMessage>>,
    pub fail: AtomicBool,
}

impl MemoryMailer {
    pub fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
    pub fn last(&self) -> Option<MailMessage> {
        self.sent.lock().unwrap().last().cloned()
    }
}

impl Mailer for MemoryMailer {
    fn send(&self, m: &MailMessage) -> rcpat::storage::HostResult<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(rcpat_store::Error::Injected(0).into());
        }
        self.sent.lock().unwrap().push(m.clone());
        Ok(())
    }
}

/// The 6-digit code in a message body (mailed as `123-456`), without the dash.
pub fn code_in(text: &str) -> Option<String> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(6)).find_map(|i| {
        let w = &b[i..i + 7];
        let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        let boundary_ok = (i == 0 || !b[i - 1].is_ascii_digit())
            && b.get(i + 7).is_none_or(|c| !c.is_ascii_digit());
        (w[3] == b'-' && digits(&w[..3]) && digits(&w[4..]) && boundary_ok).then(|| {
            format!(
                "{}{}",
                std::str::from_utf8(&w[..3]).unwrap(),
                std::str::from_utf8(&w[4..]).unwrap()
            )
        })
    })
}

/// Real delivery through an SMTP server (plain SMTP, for a local relay).
/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer
    /// (no fallback to plain text); port 587 by default.
    Starttls,
    /// TLS from the first byte (implicit TLS, "SMTPS"); port 465 by default.
    Tls,
    /// Plain text, for a relay on the same machine; port 25 by default.
    None,
}

/// Where and how to deliver over SMTP.
#[derive(Clone)]
pub struct SmtpConfig {
    /// `host` or `host:port`.
    pub server: String,
    pub tls: SmtpTls,
    /// Trust only the CA certificates (PEM) in this file instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// User name and password for AUTH (PLAIN or LOGIN, only over TLS
    /// unless `tls` is `none`).
    pub credentials: Option<(String, String)>,
}

// The password stays out of any debug output (and so out of every log).
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

pub struct SmtpMailer {
    transport: lettre::SmtpTransport,
    from: lettre::message::Mailbox,
}

impl SmtpMailer {
    pub fn new(config: &SmtpConfig, from: &str) -> Result<Self> {
        use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
        let default_port = match config.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        };
        let server = config.server.as_str();
        let (host, port) = match server.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| Error::invalid(format!("bad SMTP port in {server}")))?,
            ),
            None => (server, default_port),
        };
        let tls = if config.tls == SmtpTls::None {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(host.to_string());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
                let ca = Certificate::from_pem(&pem).map_err(|e| {
                    Error::invalid(format!("{}: not a PEM certificate ({e})", path.display()))
                })?;
                params = params
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(ca);
            }
            let params = params.build_rustls().map_err(Error::from)?;
            match config.tls {
                SmtpTls::Starttls => Tls::Required(params),
                _ => Tls::Wrapper(params),
            }
        };
        let mut builder = lettre::SmtpTransport::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(std::time::Duration::from_secs(10)));
        if let Some((user, password)) = &config.credentials {
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    password.clone(),
                ));
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            from: parse_sender(from)?,
        })
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, m: &MailMessage) -> rcpat::storage::HostResult<()> {
        use lettre::Transport;
        let message = build(&self.from, m)?;
        Ok(self
            .transport
            .send(&message)
            .map(drop)
            .map_err(Error::from)?)
    }
}

/// The default sender of mailed codes.
pub const DEFAULT_FROM: &str = "Rocket.Chat <no-reply@localhost>";

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn message(to: &str) -> MailMessage {
        MailMessage {
            to: vec![to.to_string()],
            subject: "Authentication code".into(),
            text: "Here is your authentication code:\n\n123-456\n".into(),
        }
    }

    #[test]
    fn outbox_honours_the_sender_and_refuses_injected_headers() {
        let dir =
            std::env::temp_dir().join(format!("rcpat-outbox-{}", crate::random::random_id(8)));
        let outbox = Outbox::with_sender(&dir, "Ops <ops@example.org>").unwrap();
        outbox.send(&message("ann@example.org")).unwrap();
        let (path, text) = outbox.messages().pop().unwrap();
        assert!(text.contains("From: Ops <ops@example.org>\r\n"), "{text}");
        assert!(text.contains("To: ann@example.org\r\n"), "{text}");
        assert_eq!(code_in(&text).as_deref(), Some("123456"));
        // Owner-only: the message holds a code.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);

        // A recipient carrying a header is refused; nothing is written.
        let before = outbox.messages().len();
        let err = outbox
            .send(&message("ann@example.org\r\nBcc: all@example.org"))
            .unwrap_err();
        assert!(
            matches!(err.source_error().downcast_ref(), Some(Error::Address(_))),
            "{err}"
        );
        assert!(outbox.send(&message("not an address")).is_err());
        assert_eq!(outbox.messages().len(), before);
        assert!(Outbox::with_sender(&dir, "x@example.org\r\nBcc: y@example.org").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn addresses_are_validated() {
        assert!(validate_address("ann@example.org").is_ok());
        for bad in [
            "ann@example.org\r\nBcc: x@example.org",
            "ann@example.org\n",
            "Ann <ann@example.org>",
            "no-at-sign",
            "",
        ] {
            assert!(validate_address(bad).is_err(), "{bad:?}");
        }
    }
}
