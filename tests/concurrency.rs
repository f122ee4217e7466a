//! Many threads regenerating the same token at once against each durable
//! backend (a SQLite file, a PostgreSQL database): at the end exactly one
//! token of that name exists and authenticates, every reply was a success
//! or a defined error, and the audit trail holds one event per winner and
//! none for a request that lost the race.

use std::sync::{Arc, Barrier};

use crate::common::*;
use host_example::storage::{Backend, SqliteStorage};
use rcpat::model::AuditKind;

/// The last parts of the user's events of `kind`, oldest first.
fn events_of(fx: &Fx, user: &User, kind: AuditKind) -> Vec<String> {
    fx.storage
        .audit_events(&user.id)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.token_last_part.unwrap_or_default())
        .collect()
}

const THREADS: usize = 12;
const ROUNDS: usize = 4;

/// Runs `test` on a SQLite file and on a PostgreSQL database.
fn on_durable_backends(test: impl Fn(&str, Arc<Fx>)) {
    let dir = temp_dir("race");
    let sqlite: Arc<dyn Backend> = Arc::new(SqliteStorage::open(dir.join("race.sqlite")).unwrap());
    test("sqlite", Arc::new(Fx::with_storage(sqlite)));
    test("postgres", Arc::new(Fx::with_storage(postgres())));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn concurrent_regenerations_leave_exactly_one_token() {
    on_durable_backends(concurrent_regenerations);
}

fn concurrent_regenerations(backend: &str, fx: Arc<Fx>) {
    let u = fx.user("racer", None);
    let first = fx.pat(&u, "shared", false);
    let mut issued = vec![first];
    for _ in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (fx, u, barrier) = (fx.clone(), u.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = fx.regenerate(&u, &u.login, None, "shared");
                    (r.status, r.body, r.json)
                })
            })
            .collect();
        for h in handles {
            let (status, body, json) = h.join().unwrap();
            match status {
                200 => issued.push(json["token"].as_str().unwrap().to_string()),
                409 => assert_eq!(
                    json["errorType"], "error-token-regenerated-concurrently",
                    "{body}"
                ),
                _ => panic!("{backend}: undefined reply {status} {body}"),
            }
        }
    }
    assert!(issued.len() > ROUNDS, "{backend}: each round has a winner");
    let hashes = fx.storage.token_hashes_named(&u.id, "shared").unwrap();
    assert_eq!(hashes.len(), 1, "{backend}");
    let live: Vec<_> = issued.iter().filter(|t| fx.authenticates(&u, t)).collect();
    assert_eq!(live.len(), 1, "{backend}: exactly one issued token works");
    assert_eq!(rcpat::token::hash_token(live[0]), hashes[0]);
    // One event per winner, naming the value it handed out; none for the 409s.
    let mut handed_out: Vec<String> = issued[1..]
        .iter()
        .map(|t| t[t.len() - 6..].to_string())
        .collect();
    let mut recorded = events_of(&fx, &u, AuditKind::TokenRegenerated);
    handed_out.sort();
    recorded.sort();
    assert_eq!(recorded, handed_out, "{backend}");
}

#[test]
fn concurrent_self_rotation_of_one_pat() {
    on_durable_backends(concurrent_self_rotation);
}

fn concurrent_self_rotation(backend: &str, fx: Arc<Fx>) {
    let u = fx.user("rotor", Some(PASSWORD));
    let pat = fx.pat(&u, "bot", true);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (fx, u, barrier, pat) = (fx.clone(), u.clone(), barrier.clone(), pat.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = fx.regenerate(&u, &pat, None, "bot");
                (r.status, r.json)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for h in handles {
        let (status, json) = h.join().unwrap();
        match status {
            200 => winners.push(json["token"].as_str().unwrap().to_string()),
            // Losers either saw the old token gone (401) or lost the swap (409).
            401 => assert_eq!(json["message"], "You must be logged in to do this."),
            409 => assert_eq!(json["errorType"], "error-token-regenerated-concurrently"),
            other => panic!("{backend}: undefined reply {other} {json}"),
        }
    }
    assert_eq!(winners.len(), 1, "{backend}: one self-rotation wins");
    let w = &winners[0];
    assert_eq!(
        events_of(&fx, &u, AuditKind::TokenRegenerated),
        [w[w.len() - 6..].to_string()],
        "{backend}: the winner's event only"
    );
    assert!(fx.authenticates(&u, &winners[0]) && !fx.authenticates(&u, &pat));
    assert_eq!(
        fx.storage.token_hashes_named(&u.id, "bot").unwrap().len(),
        1
    );
}

#[test]
fn one_totp_code_raced_by_many_requests_is_spent_once() {
    on_durable_backends(one_totp_code_raced);
}

fn one_totp_code_raced(backend: &str, fx: Arc<Fx>) {
    let u = fx.user("otp", None);
    let setup = fx.enable_totp(&u);
    for i in 0..THREADS {
        fx.pat(&u, &format!("t{i}"), false);
    }
    let code = fx.totp(&setup, 0);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (fx, u, barrier, code) = (fx.clone(), u.clone(), barrier.clone(), code.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = fx.regenerate(&u, &u.login, Some(("totp", &code)), &format!("t{i}"));
                (r.status, r.json)
            })
        })
        .collect();
    let statuses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        ok, 1,
        "{backend}: a TOTP code is accepted once, even under a race: {statuses:?}"
    );
    assert_eq!(
        events_of(&fx, &u, AuditKind::TokenRegenerated).len(),
        1,
        "{backend}"
    );
    assert_eq!(
        events_of(&fx, &u, AuditKind::TwoFactorPassed).len(),
        1,
        "{backend}"
    );
    // The losers presented a spent code: wrong codes, which also count
    // towards the per-user limit (so the last ones see totp-max-attempts).
    assert!(statuses.iter().all(|(s, j)| *s == 200
        || j["errorType"] == "totp-invalid"
        || j["errorType"] == "totp-max-attempts"));
}

/// The interleaving the races above depend on, made deterministic at the
/// storage level: a request authenticated with a token that another request
/// has since replaced cannot write, on every backend.
#[test]
fn a_write_from_a_replaced_session_is_refused() {
    use rcpat::model::{FactorProof, FactorUse, PersonalAccessToken, WriteOutcome};
    for (_, storage) in backends() {
        let fx = Fx::with_storage(storage.clone());
        let u = fx.user("stale", None);
        let t0 = fx.pat(&u, "bot", true);
        let h0 = rcpat::token::hash_token(&t0);
        let record = |hash: &str| PersonalAccessToken {
            name: "bot".into(),
            hashed_token: hash.into(),
            last_token_part: "xxxxxx".into(),
            created_at: T0,
            bypass_two_factor: true,
            last_used_at: None,
            expires_at: None,
        };
        let proof = FactorProof {
            session: Some(h0.clone()),
            used: FactorUse::None,
            remember: None,
            reply: None,
            events: Vec::new(),
        };
        // Request A (authenticated with T0) replaces T0 by T1.
        assert_eq!(
            storage
                .replace_personal_access_token(&u.id, &h0, &record("h1"), &proof, 0)
                .unwrap(),
            WriteOutcome::Done
        );
        // Request B authenticated with T0 before that, and read the current value (T1) after it:
        // its compare matches, but its credentials are gone.
        assert_eq!(
            storage
                .replace_personal_access_token(&u.id, "h1", &record("h2"), &proof, 0)
                .unwrap(),
            WriteOutcome::CredentialsRevoked
        );
        assert_eq!(
            storage.token_hashes_named(&u.id, "bot").unwrap(),
            vec!["h1".to_string()]
        );
    }
}
