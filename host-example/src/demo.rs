//! The `demo` command: the whole regenerate flow on a fresh SQLite file,
//! through the real component, printed request by request.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rcpat::model::{Request, Settings, TotpAlgorithm};

use crate::admin::{self, UserSpec};
use crate::mail::{Outbox, code_in};
use crate::runtime::{Endpoint, Runtime, RuntimeConfig};
use crate::services::Services;
use crate::storage::{Admin, SqliteStorage};

use wasmtime::error::Context;
use wasmtime::{Result, bail};

struct Demo<'a, W: Write> {
    runtime: Runtime,
    services: Services,
    settings: Settings,
    out: &'a mut W,
}

impl<W: Write> Demo<'_, W> {
    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "\n== {text}");
    }

    /// Sends one request through the component and prints both sides.
    fn call(
        &mut self,
        endpoint: Endpoint,
        user_id: &str,
        auth: &str,
        two_fa: Option<(&str, &str)>,
        body: &str,
    ) -> Result<(u16, serde_json::Value)> {
        let mut headers = vec![("X-User-Id", user_id), ("X-Auth-Token", auth)];
        if let Some((method, code)) = two_fa {
            headers.push(("x-2fa-method", method));
            headers.push(("x-2fa-code", code));
        }
        let path = format!(
            "{} {}",
            if endpoint.is_post() { "POST" } else { "GET " },
            endpoint.path()
        );
        let shown_2fa = two_fa
            .map(|(m, c)| format!("  x-2fa-method: {m}  x-2fa-code: {c}"))
            .unwrap_or_default();
        let _ = writeln!(
            self.out,
            "-> {path}  X-Auth-Token: {}...{shown_2fa}  {body}",
            &auth[..6.min(auth.len())]
        );
        let req = Request::new(&headers, body.as_bytes());
        let resp = self
            .runtime
            .call(&self.services, endpoint, &self.settings, &req)
            .context("component call failed")?;
        let _ = writeln!(self.out, "<- {} {}", resp.status, resp.body);
        let json = serde_json::from_str(&resp.body).context("reply is not JSON")?;
        Ok((resp.status, json))
    }
}

fn expect(cond: bool, what: &str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        bail!("demo check failed: {what}")
    }
}

/// Runs the demo against a new database at `db` with mail going to `outbox`.
pub fn run(db: &Path, outbox: &Path, out: &mut impl Write) -> Result<()> {
    if db.exists() {
        bail!(
            "{} exists; the demo starts from a fresh database",
            db.display()
        );
    }
    // The key beside the database, as `serve` would use it on this file.
    let keys = Arc::new(crate::keys::Keys::load(&db.with_extension("key"))?);
    let storage = Arc::new(SqliteStorage::open_with_keys(db, keys.clone())?);
    let outbox = Arc::new(Outbox::new(outbox).context("outbox")?);
    let services = Services::new(storage.clone(), outbox.clone()).with_keys(keys);
    let started = std::time::Instant::now();
    let runtime = Runtime::new(RuntimeConfig::default()).context("loading the component")?;
    let settings = runtime.default_settings(&services)?;
    let mut d = Demo {
        runtime,
        services: services.clone(),
        settings,
        out,
    };
    let _ = writeln!(
        d.out,
        "component compiled and pre-instantiated in {:.0?}; database {}",
        started.elapsed(),
        db.display()
    );

    d.say("alice: a password, TOTP enrolled, one login session");
    let alice = admin::create_user(
        &services,
        &UserSpec {
            username: "alice",
            email: Some("alice@example.org"),
            password: Some("correct horse"),
            roles: &["user"],
        },
        admin::BCRYPT_COST,
    )?;
    let totp = admin::enable_totp(&services, &alice, "alice", TotpAlgorithm::Sha1, 6)?;
    let session = admin::issue_login_token(&services, &alice)?;
    let _ = writeln!(
        d.out,
        "user id {alice}\notpauth URI {}\nbackup codes {}",
        totp.uri,
        totp.backup_codes.join(" ")
    );

    d.say("generate a PAT named ci-bot (2FA with a backup code)");
    let (status, reply) = d.call(
        Endpoint::Generate,
        &alice,
        &session,
        Some(("totp", &totp.backup_codes[0])),
        r#"{"tokenName":"ci-bot"}"#,
    )?;
    expect(status == 200, "generate succeeds")?;
    let old_pat = reply["token"].as_str().unwrap_or_default().to_string();

    d.say("regenerate without a 2FA code: the challenge");
    let (status, reply) = d.call(
        Endpoint::Regenerate,
        &alice,
        &session,
        None,
        r#"{"tokenName":"ci-bot"}"#,
    )?;
    expect(
        status == 400 && reply["errorType"] == "totp-required",
        "challenge",
    )?;

    d.say("regenerate with a wrong code");
    let now = services.clock().now_ms();
    let right = admin::totp_code(&totp.secret, TotpAlgorithm::Sha1, 6, now, 0);
    let wrong = if right == "000000" {
        "000001".to_string()
    } else {
        "000000".to_string()
    };
    let (status, reply) = d.call(
        Endpoint::Regenerate,
        &alice,
        &session,
        Some(("totp", &wrong)),
        r#"{"tokenName":"ci-bot"}"#,
    )?;
    expect(
        status == 400 && reply["errorType"] == "totp-invalid",
        "wrong code refused",
    )?;

    d.say("regenerate with the right code");
    let (status, reply) = d.call(
        Endpoint::Regenerate,
        &alice,
        &session,
        Some(("totp", &right)),
        r#"{"tokenName":"ci-bot"}"#,
    )?;
    expect(status == 200, "regenerate succeeds")?;
    let new_pat = reply["token"].as_str().unwrap_or_default().to_string();

    d.say("the same code again: refused (a TOTP code is accepted once)");
    let (status, reply) = d.call(
        Endpoint::Regenerate,
        &alice,
        &session,
        Some(("totp", &right)),
        r#"{"tokenName":"ci-bot"}"#,
    )?;
    expect(
        status == 400 && reply["errorType"] == "totp-invalid",
        "replay refused",
    )?;

    d.say("the old PAT no longer authenticates; the new one does");
    let (status, _) = d.call(Endpoint::List, &alice, &old_pat, None, "")?;
    expect(status == 401, "old token is dead")?;
    let (status, _) = d.call(Endpoint::List, &alice, &new_pat, None, "")?;
    expect(status == 200, "new token works")?;

    d.say("bob: email 2FA only; the code arrives in the outbox");
    let bob = admin::create_user(
        &services,
        &UserSpec {
            username: "bob",
            email: Some("bob@example.org"),
            password: Some("hunter2"),
            roles: &["user"],
        },
        admin::BCRYPT_COST,
    )?;
    storage.set_email_two_factor(&bob, true)?;
    let bob_session = admin::issue_login_token(&services, &bob)?;
    let bob_pat = admin::issue_personal_access_token(&services, &bob, "deploy", false)?;
    let (status, reply) = d.call(
        Endpoint::Regenerate,
        &bob,
        &bob_session,
        None,
        r#"{"tokenName":"deploy"}"#,
    )?;
    expect(
        status == 400 && reply["details"]["codeGenerated"] == true,
        "email challenge sends a code",
    )?;
    let (path, text) = outbox
        .messages()
        .pop()
        .context("no message in the outbox")?;
    let code = code_in(&text).context("no code in the message")?;
    let _ = writeln!(
        d.out,
        "outbox: {} (code {}-{})",
        path.display(),
        &code[..3],
        &code[3..]
    );
    let (status, _) = d.call(
        Endpoint::Regenerate,
        &bob,
        &bob_session,
        Some(("email", &code)),
        r#"{"tokenName":"deploy"}"#,
    )?;
    expect(status == 200, "email code accepted")?;
    let (status, _) = d.call(Endpoint::List, &bob, &bob_pat, None, "")?;
    expect(status == 401, "bob's old token is dead")?;

    d.say("reuse detection: a regenerated token's old value comes back (grace period 0 here)");
    expect(
        storage.token_hashes_named(&bob, "deploy")?.len() == 1,
        "bob holds his new deploy token",
    )?;
    let (status, _) = d.call(Endpoint::Me, &bob, &bob_session, None, "")?;
    expect(status == 200, "bob's session works")?;
    d.settings.superseded_token_grace_seconds = 0;
    let (status, _) = d.call(Endpoint::List, &bob, &bob_pat, None, "")?;
    expect(status == 401, "the old value gets the unknown token's 401")?;
    expect(
        storage.token_hashes_named(&bob, "deploy")?.is_empty(),
        "the token's current value is revoked",
    )?;
    let (path, _) = outbox
        .messages()
        .into_iter()
        .find(|(_, text)| text.contains("\"deploy\" was revoked"))
        .context("bob is told: no notice in the outbox")?;
    let _ = writeln!(d.out, "outbox: {} (\"deploy\" revoked)", path.display());

    let _ = writeln!(
        d.out,
        "\ndemo complete: every step behaved as Rocket.Chat documents"
    );
    Ok(())
}
