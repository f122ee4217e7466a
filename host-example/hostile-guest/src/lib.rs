//! A hostile component for the host's containment tests: it exports the
//! pat-service world, and the request body picks the misbehaviour:
//! `loop` spins forever, `oom` grows memory without end, `trap` traps,
//! anything else answers 200 normally.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "pat-service", path: "../../wit", generate_all });

use exports::rcpat::tokens::endpoints::{Guest, Request, Response, Route, Settings};

struct Hostile;
export!(Hostile);

fn misbehave(req: Request) -> Response {
    match req.body.as_slice() {
        b"loop" => loop {
            core::hint::black_box(());
        },
        b"oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                core::hint::black_box(&hoard);
            }
        }
        b"trap" => core::arch::wasm32::unreachable(),
        _ => Response {
            status: 200,
            body: r#"{"success":true}"#.into(),
            events: Vec::new(),
        },
    }
}

impl Guest for Hostile {
    fn default_settings() -> Settings {
        Settings {
            two_factor_enabled: true,
            totp_enabled: true,
            email_enabled: true,
            totp_max_delta: 1,
            email_code_expiration_seconds: 3600,
            email_code_max_attempts: 5,
            enforce_password_fallback: true,
            remember_for_seconds: 0,
            max_failed_attempts: 10,
            failed_attempts_window_seconds: 900,
            login_expiration_days: 90,
            max_failed_logins_per_user: 10,
            user_login_block_minutes: 5,
            max_failed_logins_per_address: 50,
            address_login_block_minutes: 5,
            bypass_tokens_unrestricted: false,
            show_token_last_use: false,
            token_prefix: String::new(),
            max_token_lifetime_days: 0,
            idempotency_key_hours: 24,
            reuse_detection: true,
            superseded_token_retention_days: 30,
            superseded_token_grace_seconds: 10,
            code_key: Vec::new(),
        }
    }
    fn handle(_: Route, _: Settings, req: Request) -> Response {
        misbehave(req)
    }
}
