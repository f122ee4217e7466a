//! Shared by the fuzz targets: an in-memory `Env` with one user (password,
//! TOTP with backup codes, emailed codes) and three tokens (a session, a
//! bypass PAT, a plain PAT), deterministic randomness, and the reply check.
//! Its storage keeps the same rules as the host's memory storage, in brief.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use rcpat::env::Env;
use rcpat::model::*;
use rcpat::storage::rules::{
    KeyLease, LoginCount, admit_login, factor_available, keep_reply, kept_reply, known_since,
    release_key, remember_address, reply_already_kept, reserve_attempt, reserve_key, spend_factor,
};
use rcpat::storage::{HostResult, Storage};

pub const USER_ID: &str = "FuzzUser000000001";
const T0: u64 = 1_800_000_015_000;
const CODE_KEY: &[u8] = b"fuzzing code key, 32 bytes long!";
const TOKENS: [&str; 3] = [
    "SessionTokenSessionTokenSessionTokenSessio",
    "BypassTokenBypassTokenBypassTokenBypassTok",
    "PlainTokenPlainTokenPlainTokenPlainTokenPl",
];

/// A cheap bcrypt (cost 4) of the password "fuzz", made once.
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash(rcpat::token::sha256_hex(b"fuzz"), 4).unwrap())
}

struct Stored {
    token: LoginToken,
    pat: Option<PersonalAccessToken>,
}

/// The one user's data; behind a mutex, as the storage contract takes `&self`.
struct State {
    user: User,
    tokens: Vec<Stored>,
    /// Failed logins by account and by address.
    logins: HashMap<String, LoginCount>,
    /// Addresses that logged in successfully (the one user's; newest last).
    known: Vec<(String, TimestampMs)>,
    /// Replies kept for `Idempotency-Key` retries, and keys reserved.
    replies: Vec<IdempotentWrite>,
    leases: Vec<KeyLease>,
    backup: BackupCodes,
}

pub struct FuzzStore(Mutex<State>);

pub struct FuzzEnv {
    now: u64,
    seed: u64,
    store: FuzzStore,
    pub mails: usize,
}

impl FuzzEnv {
    pub fn new(offset_s: u64) -> Self {
        let totp = TotpEnrolment {
            secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into(),
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            period: 30,
            last_used_step: 0,
            has_backup_codes: true,
        };
        let backup = BackupCodes {
            unused: vec![rcpat::codes::backup_code_hash(
                CODE_KEY, USER_ID, "ABCDEFGH",
            )],
            spent: vec![rcpat::codes::backup_code_hash(
                CODE_KEY, USER_ID, "HGFEDCBA",
            )],
        };
        let user = User {
            id: USER_ID.into(),
            username: "fuzz".into(),
            name: "fuzz".into(),
            roles: vec!["user".into()],
            created_at: T0,
            verified_emails: vec!["fuzz@example.org".into()],
            password_bcrypt: Some(password_hash().to_string()),
            totp: Some(totp),
            email_two_factor: true,
            email_code: None,
            failures: FailureCount::default(),
        };
        let token = |i: usize, kind, name: Option<&str>, bypass| {
            let hashed = rcpat::token::hash_token(TOKENS[i]);
            Stored {
                token: LoginToken {
                    hashed_token: hashed.clone(),
                    kind,
                    name: name.map(String::from),
                    created_at: T0,
                    bypass_two_factor: bypass,
                    two_factor_authorized_hash: None,
                    two_factor_authorized_until: None,
                    last_used_at: None,
                    expires_at: None,
                },
                pat: name.map(|n| PersonalAccessToken {
                    name: n.into(),
                    hashed_token: hashed,
                    last_token_part: rcpat::token::last_part(TOKENS[i]).into(),
                    created_at: T0,
                    bypass_two_factor: bypass,
                    last_used_at: None,
                    expires_at: None,
                }),
            }
        };
        FuzzEnv {
            now: T0 + offset_s * 1000,
            seed: 0x9e37_79b9_7f4a_7c15,
            store: FuzzStore(Mutex::new(State {
                user,
                tokens: vec![
                    token(0, TokenKind::Login, None, false),
                    token(1, TokenKind::PersonalAccessToken, Some("robot"), true),
                    token(2, TokenKind::PersonalAccessToken, Some("ci"), false),
                ],
                logins: HashMap::new(),
                known: Vec::new(),
                replies: Vec::new(),
                leases: Vec::new(),
                backup,
            })),
            mails: 0,
        }
    }

    /// A valid token to present, chosen by `n` (or none).
    pub fn credential(&self, n: u8) -> Option<&'static str> {
        match n % 4 {
            0 => None,
            i => Some(TOKENS[usize::from(i) - 1]),
        }
    }
}

impl FuzzStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn refusal(&self, proof: &FactorProof) -> Option<WriteOutcome> {
        if let Some(r) = &proof.reply
            && reply_already_kept(&self.replies, r)
        {
            return Some(WriteOutcome::ReplyKept);
        }
        if let Some(s) = &proof.session
            && !self.tokens.iter().any(|t| &t.token.hashed_token == s)
        {
            return Some(WriteOutcome::CredentialsRevoked);
        }
        (!factor_available(&self.user, &self.backup, &proof.used))
            .then_some(WriteOutcome::FactorAlreadyUsed)
    }

    fn spend(&mut self, proof: &FactorProof) {
        spend_factor(&mut self.user, &mut self.backup, &proof.used);
        if let Some(r) = &proof.reply {
            keep_reply(&mut self.replies, r);
            release_key(&mut self.leases, &r.presented_hashed_token, &r.key);
        }
    }

    fn pat_index(&self, name: &str) -> Option<usize> {
        self.tokens
            .iter()
            .position(|t| t.pat.as_ref().is_some_and(|p| p.name == name))
    }
}

impl Env for FuzzEnv {
    fn storage(&self) -> &dyn Storage {
        &self.store
    }
    fn now_ms(&mut self) -> TimestampMs {
        self.now
    }
    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.seed ^= self.seed << 13;
                self.seed ^= self.seed >> 7;
                self.seed ^= self.seed << 17;
                self.seed as u8
            })
            .collect()
    }
    fn code_key(&self) -> &[u8] {
        CODE_KEY
    }
    fn send_mail(&mut self, _: &MailMessage) -> HostResult<()> {
        self.mails += 1;
        Ok(())
    }
}

impl Storage for FuzzStore {
    fn authenticate(
        &self,
        user_id: &str,
        hashed: &str,
        permission: Option<&str>,
    ) -> HostResult<Option<Session>> {
        let s = &mut *self.lock();
        Ok((user_id == USER_ID)
            .then(|| s.tokens.iter().find(|t| t.token.hashed_token == hashed))
            .flatten()
            .map(|t| Session {
                user: s.user.clone(),
                token: t.token.clone(),
                // The fuzzed user holds every permission.
                permitted: permission.is_some(),
            }))
    }
    fn find_user_for_login(&self, id: &LoginIdentifier) -> HostResult<Option<User>> {
        let s = &mut *self.lock();
        let hit = match id {
            LoginIdentifier::Username(u) => u == "fuzz",
            LoginIdentifier::Email(e) => e.eq_ignore_ascii_case("fuzz@example.org"),
        };
        Ok(hit.then(|| s.user.clone()))
    }
    fn insert_login_token(
        &self,
        user_id: &str,
        hashed: &str,
        at: TimestampMs,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        let s = &mut *self.lock();
        if user_id != USER_ID {
            return Ok(WriteOutcome::NotFound);
        }
        if let Some(r) = s.refusal(proof) {
            return Ok(r);
        }
        s.spend(proof);
        s.tokens.push(Stored {
            token: LoginToken {
                hashed_token: hashed.into(),
                kind: TokenKind::Login,
                name: None,
                created_at: at,
                bypass_two_factor: false,
                two_factor_authorized_hash: None,
                two_factor_authorized_until: None,
                last_used_at: None,
                expires_at: None,
            },
            pat: None,
        });
        Ok(WriteOutcome::Done)
    }
    fn find_backup_code(&self, user_id: &str, hashed: &str) -> HostResult<BackupCodeState> {
        let s = &mut *self.lock();
        Ok(if user_id == USER_ID {
            s.backup.state(hashed)
        } else {
            BackupCodeState::Unknown
        })
    }
    fn list_personal_access_tokens(&self, _: &str) -> HostResult<Vec<PersonalAccessToken>> {
        let s = &mut *self.lock();
        Ok(s.tokens.iter().filter_map(|t| t.pat.clone()).collect())
    }
    fn find_personal_access_token(
        &self,
        _: &str,
        name: &str,
    ) -> HostResult<Option<PersonalAccessToken>> {
        let s = &mut *self.lock();
        Ok(s.pat_index(name).and_then(|i| s.tokens[i].pat.clone()))
    }
    fn insert_personal_access_token(
        &self,
        _: &str,
        t: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        let s = &mut *self.lock();
        if s.pat_index(&t.name).is_some() {
            return Ok(WriteOutcome::NameTaken);
        }
        if let Some(r) = s.refusal(proof) {
            return Ok(r);
        }
        s.spend(proof);
        s.tokens.push(Stored {
            token: LoginToken {
                hashed_token: t.hashed_token.clone(),
                kind: TokenKind::PersonalAccessToken,
                name: Some(t.name.clone()),
                created_at: t.created_at,
                bypass_two_factor: t.bypass_two_factor,
                two_factor_authorized_hash: None,
                two_factor_authorized_until: None,
                last_used_at: t.last_used_at,
                expires_at: t.expires_at,
            },
            pat: Some(t.clone()),
        });
        Ok(WriteOutcome::Done)
    }
    fn replace_personal_access_token(
        &self,
        _: &str,
        expected: &str,
        r: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        let s = &mut *self.lock();
        let Some(i) = s
            .pat_index(&r.name)
            .filter(|&i| s.tokens[i].token.hashed_token == expected)
        else {
            return Ok(WriteOutcome::NotFound);
        };
        if let Some(refused) = s.refusal(proof) {
            return Ok(refused);
        }
        s.spend(proof);
        s.tokens[i].token.hashed_token = r.hashed_token.clone();
        s.tokens[i].token.last_used_at = r.last_used_at;
        s.tokens[i].token.expires_at = r.expires_at;
        s.tokens[i].pat = Some(r.clone());
        Ok(WriteOutcome::Done)
    }
    fn remove_personal_access_token(
        &self,
        _: &str,
        name: &str,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        let s = &mut *self.lock();
        let Some(i) = s.pat_index(name) else {
            return Ok(WriteOutcome::NotFound);
        };
        if let Some(r) = s.refusal(proof) {
            return Ok(r);
        }
        s.spend(proof);
        s.tokens.remove(i);
        Ok(WriteOutcome::Done)
    }
    fn reserve_two_factor_attempt(
        &self,
        _: &str,
        at: TimestampMs,
        window_start: TimestampMs,
        max: u32,
        email: Option<u32>,
    ) -> HostResult<AttemptReservation> {
        let s = &mut *self.lock();
        let attempts = email.and(s.user.email_code.as_ref()).map(|c| c.attempts);
        let r = reserve_attempt(s.user.failures, attempts, at, window_start, max, email);
        if r.granted {
            s.user.failures = r.failures;
            if attempts.is_some()
                && let Some(c) = s.user.email_code.as_mut()
            {
                c.attempts = r.email_code_attempts;
            }
        }
        Ok(r)
    }
    fn release_two_factor_attempt(&self, _: &str, email: bool) -> HostResult<()> {
        let s = &mut *self.lock();
        s.user.failures.count = s.user.failures.count.saturating_sub(1);
        if email && let Some(c) = s.user.email_code.as_mut() {
            c.attempts = c.attempts.saturating_sub(1);
        }
        Ok(())
    }
    fn reserve_login_attempt(
        &self,
        account: &str,
        address: &str,
        at: TimestampMs,
        limits: &LoginLimits,
    ) -> HostResult<LoginAdmission> {
        let s = &mut *self.lock();
        let acc = s.logins.get(account).copied().unwrap_or_default();
        let adr = s.logins.get(address).copied().unwrap_or_default();
        let known = (account == USER_ID)
            .then(|| known_since(&s.known, address))
            .flatten();
        Ok(match admit_login(acc, adr, known, at, limits) {
            Ok((acc, adr)) => {
                s.logins.insert(account.into(), acc);
                s.logins.insert(address.into(), adr);
                LoginAdmission::Admitted
            }
            Err(refused) => refused,
        })
    }
    fn login_succeeded(&self, account: &str, address: &str, at: TimestampMs) -> HostResult<()> {
        let s = &mut *self.lock();
        s.logins.remove(account);
        if account == USER_ID {
            remember_address(&mut s.known, address, at);
        }
        Ok(())
    }
    fn remove_login_token(&self, _: &str, hashed: &str) -> HostResult<WriteOutcome> {
        let s = &mut *self.lock();
        let before = s.tokens.len();
        s.tokens
            .retain(|t| !(t.token.kind == TokenKind::Login && t.token.hashed_token == hashed));
        Ok(if s.tokens.len() < before {
            WriteOutcome::Done
        } else {
            WriteOutcome::NotFound
        })
    }
    fn store_email_code(&self, _: &str, code: &EmailCode) -> HostResult<()> {
        let s = &mut *self.lock();
        s.user.email_code = Some(code.clone());
        Ok(())
    }
    fn record_token_use(
        &self,
        user_id: &str,
        hashed: &str,
        at: TimestampMs,
        stale_before: TimestampMs,
    ) -> HostResult<()> {
        let s = &mut *self.lock();
        let stored = s.tokens.iter_mut().find(|t| {
            user_id == USER_ID
                && t.token.kind == TokenKind::PersonalAccessToken
                && t.token.hashed_token == hashed
        });
        if let Some(t) = stored
            && t.token.last_used_at.is_none_or(|u| u < stale_before)
        {
            t.token.last_used_at = Some(at);
            if let Some(p) = t.pat.as_mut() {
                p.last_used_at = Some(at);
            }
        }
        Ok(())
    }
    fn find_idempotent_reply(
        &self,
        user_id: &str,
        presented: &str,
        key: &str,
        not_before: TimestampMs,
    ) -> HostResult<Option<IdempotentReply>> {
        let s = &mut *self.lock();
        Ok(kept_reply(&s.replies, presented, key, not_before).filter(|_| user_id == USER_ID))
    }
    fn reserve_idempotency_key(
        &self,
        user_id: &str,
        presented: &str,
        key: &str,
        at: TimestampMs,
        lease_until: TimestampMs,
        not_before: TimestampMs,
    ) -> HostResult<KeyReservation> {
        if user_id != USER_ID {
            return Err(rcpat::storage::HostError::msg("no such user"));
        }
        let s = &mut *self.lock();
        Ok(reserve_key(
            &s.replies,
            &mut s.leases,
            presented,
            key,
            at,
            lease_until,
            not_before,
        ))
    }
    fn release_idempotency_key(
        &self,
        _user_id: &str,
        presented: &str,
        key: &str,
    ) -> HostResult<()> {
        release_key(&mut self.lock().leases, presented, key);
        Ok(())
    }
}

/// Runs endpoint `n` (of the seven) natively.
pub fn call(n: u8, env: &mut FuzzEnv, settings: &Settings, req: &Request) -> Response {
    match n % 7 {
        0 => rcpat::account::login(env, settings, req),
        1 => rcpat::account::logout(env, settings, req),
        2 => rcpat::account::me(env, settings, req),
        3 => rcpat::endpoints::regenerate(env, settings, req),
        4 => rcpat::endpoints::generate(env, settings, req),
        5 => rcpat::endpoints::list(env, settings, req),
        _ => rcpat::endpoints::remove(env, settings, req),
    }
}

/// Every reply: a status the endpoints define, and a JSON object body.
pub fn check_reply(r: &Response) {
    assert!(
        matches!(r.status, 200 | 400 | 401 | 403 | 409 | 413 | 500),
        "undefined status {}: {}",
        r.status,
        r.body
    );
    let json: serde_json::Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", r.body));
    assert!(json.is_object(), "{}", r.body);
    // A 500 from the logic itself would mean a storage or mail failure,
    // which this environment never produces.
    assert_ne!(r.status, 500, "{}", r.body);
}
