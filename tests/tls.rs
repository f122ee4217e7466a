//! TLS where the server meets the outside: mail through a relay that speaks
//! STARTTLS (or implicit TLS) and demands AUTH, with a certificate from a
//! CA made in the test; nothing sent when the certificate, the password or
//! the upgrade is missing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::*;
use host_example::admin::{self, UserSpec};
use host_example::config::{Options, StorageKind};
use host_example::mail::SmtpTls;
use host_example::startup::{RunningServer, services_from};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throw-away CA and a server certificate for 127.0.0.1 and localhost.
pub struct TestPki {
    pub ca_pem: PathBuf,
    pub ca_der: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    pub key: Vec<u8>,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Names of their own: a leaf named like its issuer looks self-signed to OpenSSL.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rcpat test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        TestPki {
            ca_pem,
            ca_der: ca_cert.der().clone(),
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// How the test relay secures a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// Offers STARTTLS (and AUTH only after it).
    Starttls,
    /// TLS from the first byte.
    Implicit,
    /// Plain text only: no STARTTLS offered.
    PlainOnly,
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

fn wrap(tcp: TcpStream, config: &Arc<rustls::ServerConfig>) -> Conn {
    let server = rustls::ServerConnection::new(config.clone()).unwrap();
    Conn::Tls(Box::new(rustls::StreamOwned::new(server, tcp)))
}

/// What the relay saw on one connection.
#[derive(Debug, Default)]
struct Session {
    /// Whether the message (if any) arrived over TLS.
    tls: bool,
    /// The user that authenticated, if one did.
    user: Option<String>,
    /// The message's DATA, if one was accepted.
    data: Option<String>,
}

/// A relay on loopback for one connection; AUTH PLAIN/LOGIN required when
/// `login` is given, MAIL refused before it.
fn relay(mode: Relay, pki: &TestPki, login: Option<(&str, &str)>) -> (String, JoinHandle<Session>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = pki.server_config(&[]);
    let login = login.map(|(u, p)| (u.to_string(), p.to_string()));
    let handle = std::thread::spawn(move || {
        let mut session = Session::default();
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut conn = if mode == Relay::Implicit {
            session.tls = true;
            wrap(tcp, &config)
        } else {
            Conn::Plain(tcp)
        };
        let say = |conn: &mut Conn, text: &str| {
            let _ = conn.write_all(text.as_bytes());
            let _ = conn.flush();
        };
        say(&mut conn, "220 relay.test ESMTP\r\n");
        while let Some(line) = read_line(&mut conn) {
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("EHLO") {
                let mut reply = String::from("250-relay.test\r\n");
                if mode == Relay::Starttls && !session.tls {
                    reply.push_str("250-STARTTLS\r\n");
                }
                if session.tls && login.is_some() {
                    reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                reply.push_str("250 8BITMIME\r\n");
                say(&mut conn, &reply);
            } else if upper == "STARTTLS" && mode == Relay::Starttls && !session.tls {
                say(&mut conn, "220 go ahead\r\n");
                let Conn::Plain(tcp) = conn else {
                    unreachable!()
                };
                conn = wrap(tcp, &config);
                session.tls = true;
            } else if upper.starts_with("AUTH PLAIN ") {
                let b64 = &line["AUTH PLAIN ".len()..];
                let decoded = data_encoding::BASE64
                    .decode(b64.trim().as_bytes())
                    .unwrap_or_default();
                let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
                let ok = login.as_ref().is_some_and(|(u, p)| {
                    parts.len() == 3 && parts[1] == u.as_bytes() && parts[2] == p.as_bytes()
                });
                if ok {
                    session.user = login.as_ref().map(|(u, _)| u.clone());
                    say(&mut conn, "235 2.7.0 Authentication successful\r\n");
                } else {
                    say(
                        &mut conn,
                        "535 5.7.8 Authentication credentials invalid\r\n",
                    );
                }
            } else if upper.starts_with("MAIL FROM") {
                if login.is_some() && session.user.is_none() {
                    say(&mut conn, "530 5.7.0 Authentication required\r\n");
                } else {
                    say(&mut conn, "250 OK\r\n");
                }
            } else if upper == "DATA" {
                say(&mut conn, "354 go ahead\r\n");
                let mut data = String::new();
                while let Some(l) = read_line(&mut conn) {
                    if l == "." {
                        break;
                    }
                    data.push_str(&l);
                    data.push('\n');
                }
                session.data = Some(data);
                say(&mut conn, "250 queued\r\n");
            } else if upper == "QUIT" {
                say(&mut conn, "221 bye\r\n");
                break;
            } else {
                say(&mut conn, "250 OK\r\n");
            }
        }
        session
    });
    (addr, handle)
}

/// One CRLF-terminated line (without it), or None at the end.
fn read_line(conn: &mut Conn) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(1) => {
                if byte[0] == b'\n' {
                    break;
                }
                line.push(byte[0]);
            }
            _ => return None,
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

fn options(dir: &Path, smtp: &str) -> Options {
    Options {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        storage: Some(StorageKind::Sqlite),
        db: Some(dir.join("rcpat.sqlite")),
        cache_dir: Some(shared_cache_dir()),
        smtp: Some(smtp.to_string()),
        ..Options::default()
    }
}

/// Regenerates once for a user on emailed codes: the reply's status and body.
fn challenge(opts: &Options) -> (u16, String) {
    let services = services_from(opts).unwrap();
    let spec = UserSpec {
        username: "emma",
        email: Some("emma@example.org"),
        password: None,
        roles: &["user"],
    };
    let id = admin::create_user(&services, &spec, 4).unwrap();
    services.storage().set_email_two_factor(&id, true).unwrap();
    let pat = admin::issue_personal_access_token(&services, &id, "ci", false).unwrap();
    drop(services);
    let server = RunningServer::start(opts).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&server.url("/api/v1/users.regeneratePersonalAccessToken"))
        .header("Content-Type", "application/json")
        .header("X-User-Id", &id)
        .header("X-Auth-Token", &pat)
        .send(r#"{"tokenName":"ci"}"#)
        .unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap()
}

fn password_file(dir: &Path, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("smtp-password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn a_code_goes_out_through_a_starttls_relay_that_demands_auth() {
    let dir = temp_dir("smtp-starttls");
    let pki = TestPki::new(&dir);
    let (addr, relay) = relay(Relay::Starttls, &pki, Some(("rcpat", "s3cret pass")));
    let mut opts = options(&dir, &addr);
    // STARTTLS is the default; the CA file replaces the system's roots.
    opts.smtp_ca_file = Some(pki.ca_pem.clone());
    opts.smtp_user = Some("rcpat".into());
    opts.smtp_password_file = Some(password_file(&dir, "s3cret pass"));
    let (status, body) = challenge(&opts);
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["details"]["codeGenerated"], true, "{body}");
    let session = relay.join().unwrap();
    assert!(session.tls, "the message went out in plain text");
    assert_eq!(session.user.as_deref(), Some("rcpat"));
    let data = session.data.expect("a message");
    assert!(data.contains("Subject: Authentication code"), "{data}");
    assert!(host_example::mail::code_in(&data).is_some(), "{data}");
    eprintln!(
        "relay: STARTTLS {}, AUTH as {:?}, {} bytes of DATA with a code",
        session.tls,
        session.user.as_deref().unwrap_or(""),
        data.len()
    );
}

#[test]
fn implicit_tls_delivers_too() {
    let dir = temp_dir("smtp-implicit");
    let pki = TestPki::new(&dir);
    let (addr, relay) = relay(Relay::Implicit, &pki, None);
    let mut opts = options(&dir, &addr);
    opts.smtp_tls = Some(SmtpTls::Tls);
    opts.smtp_ca_file = Some(pki.ca_pem.clone());
    let (status, body) = challenge(&opts);
    assert_eq!(
        (status, json(&body)["details"]["codeGenerated"].as_bool()),
        (400, Some(true)),
        "{body}"
    );
    let session = relay.join().unwrap();
    assert!(session.tls && session.data.is_some());
}

/// What must not deliver: each answers Rocket.Chat's mail-failure reply and
/// stores no code (the next challenge generates one again).
#[test]
fn no_delivery_without_a_verified_certificate_the_upgrade_or_the_password() {
    let expected = r#"{"success":false,"error":"The authentication code email could not be sent [error-email-send-failed]","errorType":"error-email-send-failed"}"#;
    let cases: [(&str, Relay, bool, Option<&str>); 3] = [
        // The relay's certificate is not under the system's roots.
        ("untrusted-cert", Relay::Starttls, false, None),
        // A relay that does not offer STARTTLS: no fallback to plain text.
        ("no-starttls", Relay::PlainOnly, true, None),
        // The wrong password.
        ("wrong-password", Relay::Starttls, true, Some("wrong")),
    ];
    for (name, mode, trust_ca, password) in cases {
        let dir = temp_dir(&format!("smtp-{name}"));
        let pki = TestPki::new(&dir);
        let login = password.map(|_| ("rcpat", "right"));
        let (addr, relay) = relay(mode, &pki, login);
        let mut opts = options(&dir, &addr);
        if trust_ca {
            opts.smtp_ca_file = Some(pki.ca_pem.clone());
        }
        if let Some(p) = password {
            opts.smtp_user = Some("rcpat".into());
            opts.smtp_password_file = Some(password_file(&dir, p));
        }
        let (status, body) = challenge(&opts);
        assert_eq!(
            (status, body.to_string()),
            (500, expected.to_string()),
            "{name}"
        );
        let session = relay.join().unwrap();
        assert!(session.data.is_none(), "{name}: a message was delivered");
        // The code was not stored: nothing is outstanding for the user.
        let services = services_from(&opts).unwrap();
        let user = services
            .storage()
            .find_user_for_login(&rcpat::model::LoginIdentifier::Username("emma".into()))
            .unwrap()
            .unwrap();
        assert!(user.email_code.is_none(), "{name}: a code was stored");
    }
}

/// `serve` over HTTPS: HTTP/2 and HTTP/1.1 chosen by ALPN, checked with curl
/// (an independent client) trusting only the test CA; plain HTTP refused.
#[test]
fn serves_https_with_http2_and_http1_by_alpn() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("https");
    let pki = TestPki::new(&dir);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, pem("CERTIFICATE", &pki.cert)).unwrap();
    std::fs::write(&key, pem("PRIVATE KEY", &pki.key)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut opts = options(&dir, "unused:25");
    opts.smtp = None;
    opts.outbox = Some(dir.join("outbox"));
    opts.tls_cert = Some(cert.clone());
    opts.tls_key = Some(key.clone());
    let services = services_from(&opts).unwrap();
    let spec = UserSpec {
        username: "alice",
        email: None,
        password: None,
        roles: &["user"],
    };
    let id = admin::create_user(&services, &spec, 4).unwrap();
    let mut token = admin::issue_personal_access_token(&services, &id, "ci", false).unwrap();
    drop(services);
    let server = RunningServer::start(&opts).unwrap();
    assert!(server.https);
    let url = server.url("/api/v1/users.regeneratePersonalAccessToken");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = Command::new("curl")
            .args(["-sS", flag, "--cacert"])
            .arg(&pki.ca_pem)
            .args([
                "-w",
                "\n%{http_version} %{http_code}",
                "-H",
                "Content-Type: application/json",
            ])
            .args([
                "-H",
                &format!("X-User-Id: {id}"),
                "-H",
                &format!("X-Auth-Token: {token}"),
            ])
            .args(["--data", r#"{"tokenName":"ci"}"#, &url])
            .output()
            .expect("curl is on the test machine");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap();
        assert_eq!(
            last,
            format!("{version} 200"),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        token = json(body)["token"].as_str().unwrap().to_string();
    }
    // Without the CA, curl refuses the certificate; plain HTTP gets no reply.
    let untrusted = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", &url])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let plain = Command::new("curl")
        .args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(url.replace("https://", "http://"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");
    drop(server);
    // A key file others can read is refused at start.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = RunningServer::start(&opts)
        .err()
        .expect("an exposed key is refused");
    assert!(format!("{err:#}").contains("key.pem"), "{err:#}");
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
