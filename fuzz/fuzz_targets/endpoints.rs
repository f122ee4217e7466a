//! Every endpoint, natively, on an in-memory store, with arbitrary headers,
//! bodies and settings (and, half the time, a valid session or PAT so that
//! the deeper checks are reached). Never a panic; every reply is JSON with
//! a status the endpoint defines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcpat::model::{Header, Request, Settings};

#[derive(arbitrary::Arbitrary, Debug)]
struct Input {
    endpoint: u8,
    settings: [u8; 8],
    credentials: u8,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    clock_offset_s: u32,
}

fuzz_target!(|input: Input| {
    let mut env = rcpat_fuzz::FuzzEnv::new(u64::from(input.clock_offset_s));
    let s = input.settings;
    let settings = Settings {
        two_factor_enabled: s[0] & 1 == 0,
        totp_enabled: s[0] & 2 == 0,
        email_enabled: s[0] & 4 == 0,
        enforce_password_fallback: s[0] & 8 == 0,
        bypass_tokens_unrestricted: s[0] & 16 != 0,
        show_token_last_use: s[0] & 32 != 0,
        totp_max_delta: u32::from(s[1] % 4),
        email_code_expiration_seconds: u32::from(s[2]) * 60,
        email_code_max_attempts: u32::from(s[3] % 8),
        remember_for_seconds: u32::from(s[4]) * 10,
        max_failed_attempts: u32::from(s[5] % 12),
        failed_attempts_window_seconds: 900,
        login_expiration_days: u32::from(s[6] % 100),
        max_failed_logins_per_user: u32::from(s[7] % 12),
        user_login_block_minutes: 5,
        max_failed_logins_per_address: 50,
        address_login_block_minutes: 5,
        // Now and then a prefix, so prefixed minting and checks are fuzzed too.
        token_prefix: if s[0] & 64 != 0 {
            rcpat::token::TokenPrefix::parse("rcpat_").unwrap_or_default()
        } else {
            rcpat::token::TokenPrefix::default()
        },
        // Half the time a maximum lifetime, so expiry rules are fuzzed too.
        max_token_lifetime_days: if s[0] & 128 != 0 {
            u32::from(s[6] % 8)
        } else {
            0
        },
        idempotency_key_hours: u32::from(s[7] % 3) * 24,
        // Reuse detection mostly on (the default), its grace now and then off.
        reuse_detection: s[1] & 4 == 0,
        superseded_token_retention_days: 30,
        superseded_token_grace_seconds: if s[1] & 8 == 0 { 10 } else { 0 },
    };
    let mut headers: Vec<Header> = input
        .headers
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect();
    if let Some(token) = env.credential(input.credentials) {
        headers.push(Header {
            name: "X-User-Id".into(),
            value: rcpat_fuzz::USER_ID.into(),
        });
        headers.push(Header {
            name: "X-Auth-Token".into(),
            value: token.into(),
        });
    }
    // Now and then an idempotency key, so kept replies are fuzzed too.
    if s[7] & 4 != 0 {
        headers.push(Header {
            name: "Idempotency-Key".into(),
            value: format!("fuzz-idempotency-key-{:08}", s[7] >> 3).into_bytes(),
        });
    }
    let req = Request {
        headers,
        client_address: "192.0.2.1".into(),
        body: input.body,
    };
    let r = rcpat_fuzz::call(input.endpoint, &mut env, &settings, &req);
    rcpat_fuzz::check_reply(&r);
});
