//! Shared by the fuzz targets: an `Env` with one user (password,
//! TOTP with backup codes, emailed codes) and three tokens (a session, a
//! bypass PAT, a plain PAT), deterministic randomness, and the reply check.
//! Its storage is the hosts' memory store (`rcpat-store`), seeded through
//! the admin trait.

use std::sync::OnceLock;

use rcpat::env::Env;
use rcpat::model::*;
use rcpat::storage::{HostResult, Storage};
use rcpat_store::{Admin, MemoryStorage, NewUser, TokenRecord};

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

pub struct FuzzEnv {
    now: u64,
    seed: u64,
    store: MemoryStorage,
    pub mails: usize,
}

impl FuzzEnv {
    pub fn new(offset_s: u64) -> Self {
        let store = MemoryStorage::new();
        store
            .create_user(&NewUser {
                id: USER_ID.into(),
                username: "fuzz".into(),
                name: "fuzz".into(),
                email: Some("fuzz@example.org".into()),
                email_verified: true,
                password_bcrypt: Some(password_hash().to_string()),
                roles: vec!["user".into()],
                created_at: T0,
            })
            .expect("a fresh store");
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
        store.set_totp(USER_ID, Some((&totp, &backup))).unwrap();
        store.set_email_two_factor(USER_ID, true).unwrap();
        store
            .add_token(
                USER_ID,
                &TokenRecord::login(&rcpat::token::hash_token(TOKENS[0]), T0),
            )
            .unwrap();
        for (i, name, bypass) in [(1, "robot", true), (2, "ci", false)] {
            let pat = PersonalAccessToken {
                name: name.into(),
                hashed_token: rcpat::token::hash_token(TOKENS[i]),
                last_token_part: rcpat::token::last_part(TOKENS[i]).into(),
                created_at: T0,
                bypass_two_factor: bypass,
                last_used_at: None,
                expires_at: None,
            };
            store
                .add_token(USER_ID, &TokenRecord::personal_access_token(&pat))
                .unwrap();
        }
        FuzzEnv {
            now: T0 + offset_s * 1000,
            seed: 0x9e37_79b9_7f4a_7c15,
            store,
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
