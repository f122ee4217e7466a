//! Outgoing mail for the component's `mail` import: an outbox directory of
//! `.eml` files (the default), or an in-memory recorder for tests.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rcpat::model::MailMessage;

pub trait Mailer: Send + Sync {
    fn send(&self, message: &MailMessage) -> Result<(), String>;
}

/// Writes each message as an RFC 5322 `.eml` file into a directory.
pub struct Outbox {
    dir: PathBuf,
    from: String,
    sequence: AtomicU64,
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Outbox {
            dir,
            from: "Rocket.Chat <no-reply@localhost>".into(),
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
    fn send(&self, m: &MailMessage) -> Result<(), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let n = self.sequence.fetch_add(1, Ordering::SeqCst);
        let id = format!("{:020}-{:06}-{:05}", now.as_nanos(), n, std::process::id());
        let text = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nMessage-ID: <{id}@rcpat.localhost>\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
            self.from,
            m.to.join(", "),
            m.subject,
            m.text.replace('\n', "\r\n")
        );
        // Write then rename, so a reader never sees half a message.
        let tmp = self.dir.join(format!("{id}.tmp"));
        std::fs::write(&tmp, text).map_err(|e| format!("outbox write failed: {e}"))?;
        std::fs::rename(&tmp, self.dir.join(format!("{id}.eml")))
            .map_err(|e| format!("outbox rename failed: {e}"))
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
    fn send(&self, m: &MailMessage) -> Result<(), String> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("injected mail failure".into());
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
pub struct SmtpMailer {
    transport: lettre::SmtpTransport,
    from: lettre::message::Mailbox,
}

impl SmtpMailer {
    /// `server` is `host:port` (port 25 when omitted).
    pub fn new(server: &str, from: &str) -> Result<Self, String> {
        let (host, port) = match server.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad SMTP port in {server}"))?,
            ),
            None => (server, 25),
        };
        let transport = lettre::SmtpTransport::builder_dangerous(host)
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("bad sender address {from}: {e}"))?;
        Ok(SmtpMailer { transport, from })
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, m: &MailMessage) -> Result<(), String> {
        use lettre::Transport;
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(m.subject.clone());
        for to in &m.to {
            builder = builder.to(to.parse().map_err(|e| format!("bad recipient: {e}"))?);
        }
        let message = builder
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(m.text.clone())
            .map_err(|e| format!("building the message: {e}"))?;
        self.transport
            .send(&message)
            .map(drop)
            .map_err(|e| format!("smtp: {e}"))
    }
}

/// The default sender of mailed codes.
pub const DEFAULT_FROM: &str = "Rocket.Chat <no-reply@localhost>";
