//! A storage that fails at its Nth call, for every N the flows reach: the
//! user always ends with exactly one token of the name (the old or the new),
//! never none and never two, and nothing is half-written.

use std::sync::Arc;

use crate::common::*;
use host_example::runtime::Endpoint;
use host_example::storage::{Backend, FaultMode, FaultyStorage, MemoryStorage};
use rcpat::model::AuditKind;

/// Regenerates with a TOTP code against a storage failing at call `n`;
/// returns whether the failure was reached.
fn regenerate_failing_at(
    backend: Arc<dyn Backend>,
    n: usize,
    mode: FaultMode,
    label: &str,
) -> bool {
    let setup_fx = Fx::with_storage(backend.clone());
    let u = setup_fx.user("fay", Some(PASSWORD));
    let totp = setup_fx.enable_totp(&u);
    let old = setup_fx.pat(&u, "ci", false);

    let faulty = Arc::new(FaultyStorage::new(backend.clone(), n, mode));
    let fx = Fx::with_storage(faulty.clone());
    let r = fx.regenerate(&u, &u.login, Some(("totp", &setup_fx.totp(&totp, 0))), "ci");
    let reached = faulty.calls() >= n;
    let ctx = format!("{label} {mode:?} failing at call {n}: {}", r.body);

    let hashes = backend.token_hashes_named(&u.id, "ci").unwrap();
    assert_eq!(hashes.len(), 1, "exactly one token named ci: {ctx}");
    // The audit trail agrees: the regeneration's events exist if and only
    // if it committed (one each), whatever call failed.
    let committed = hashes[0] != rcpat::token::hash_token(&old);
    let events = backend.audit_events(&u.id).unwrap();
    for kind in [AuditKind::TokenRegenerated, AuditKind::TwoFactorPassed] {
        let n = events.iter().filter(|e| e.kind == kind).count();
        assert_eq!(n, usize::from(committed), "{kind:?} events: {ctx}");
    }
    if r.status == 200 {
        let new = r.token();
        let event = events
            .iter()
            .find(|e| e.kind == AuditKind::TokenRegenerated);
        assert_eq!(
            event.unwrap().token_last_part.as_deref(),
            Some(&new[new.len() - 6..]),
            "{ctx}"
        );
    }
    let old_works = setup_fx.authenticates(&u, &old);
    if r.status == 200 {
        let new = r.token();
        assert!(setup_fx.authenticates(&u, &new) && !old_works, "{ctx}");
        assert_eq!(hashes[0], rcpat::token::hash_token(&new));
    } else {
        assert!(
            reached,
            "only an injected fault may fail this request: {ctx}"
        );
        assert_eq!(r.status, 500, "{ctx}");
        assert_eq!(r.error_type(), "error-storage-failure", "{ctx}");
        if mode == FaultMode::Before {
            // Nothing changed: the old token still works and the code is unspent.
            assert!(old_works, "{ctx}");
            let retry =
                setup_fx.regenerate(&u, &u.login, Some(("totp", &setup_fx.totp(&totp, 0))), "ci");
            assert_eq!(retry.status, 200, "retry after the failure: {ctx}");
        } else {
            // The write committed but its reply was lost: the stored token is
            // either the old one or a new one, never both or none.
            assert!(
                old_works || hashes[0] != rcpat::token::hash_token(&old),
                "{ctx}"
            );
        }
    }
    reached
}

#[test]
fn regenerate_survives_a_failure_at_every_storage_call() {
    for mode in [FaultMode::Before, FaultMode::After] {
        for (label, _) in backends() {
            let mut n = 1;
            loop {
                let backend = backends().into_iter().find(|(l, _)| *l == label).unwrap().1;
                if !regenerate_failing_at(backend, n, mode, label) {
                    break;
                }
                n += 1;
            }
            // authenticate (with the permission), reserve-attempt,
            // release-attempt, find, replace: all five were faulted.
            assert_eq!(n, 6, "{label} {mode:?}: the flow makes five storage calls");
        }
    }
}

#[test]
fn email_challenge_survives_storage_failure() {
    for (label, backend) in backends() {
        let setup_fx = Fx::with_storage(backend.clone());
        let u = setup_fx.user("em", None);
        backend.set_email_two_factor(&u.id, true).unwrap();
        setup_fx.pat(&u, "ci", false);
        // Call 1 authenticates; call 2 stores the new code.
        let fx = Fx::with_storage(Arc::new(FaultyStorage::new(
            backend.clone(),
            2,
            FaultMode::Before,
        )));
        let r = fx.regenerate(&u, &u.login, None, "ci");
        assert_eq!(
            (r.status, r.error_type()),
            (500, "error-storage-failure"),
            "{label}"
        );
        let session = backend
            .authenticate(&u.id, &rcpat::token::hash_token(&u.login), None)
            .unwrap()
            .unwrap();
        assert!(session.user.email_code.is_none(), "{label}: no code stored");
        assert_eq!(backend.token_hashes_named(&u.id, "ci").unwrap().len(), 1);
    }
}

#[test]
fn failure_counter_write_failure_leaves_counts_alone() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryStorage::new());
    let setup_fx = Fx::with_storage(backend.clone());
    let u = setup_fx.user("cnt", Some(PASSWORD));
    // Call 1 authenticates; call 2 records the failure.
    let fx = Fx::with_storage(Arc::new(FaultyStorage::new(
        backend.clone(),
        2,
        FaultMode::Before,
    )));
    let r = fx.regenerate(
        &u,
        &u.login,
        Some(("password", "0".repeat(64).as_str())),
        "ci",
    );
    assert_eq!(r.status, 500);
    let session = backend
        .authenticate(&u.id, &rcpat::token::hash_token(&u.login), None)
        .unwrap()
        .unwrap();
    assert_eq!(session.user.failures.count, 0);
}

/// The host's error text stays in the host: whichever call fails, the client
/// gets the same fixed reply, never the storage's message.
#[test]
fn host_error_text_never_reaches_the_client() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryStorage::new());
    let setup_fx = Fx::with_storage(backend.clone());
    let u = setup_fx.user("quiet", Some(PASSWORD));
    setup_fx.pat(&u, "ci", false);
    let mut bodies = std::collections::BTreeSet::new();
    // authenticate, reserve-attempt, release-attempt, find, replace.
    for n in 1..=5 {
        let fx = Fx::with_storage(Arc::new(FaultyStorage::new(
            backend.clone(),
            n,
            FaultMode::Before,
        )));
        let digest = password_code(PASSWORD);
        let r = fx.regenerate(&u, &u.login, Some(("password", digest.as_str())), "ci");
        assert!(!r.body.contains("injected"), "call {n}: {}", r.body);
        if r.status == 500 {
            bodies.insert(r.body);
        } else {
            // Only a failed release of the attempt is not fatal: the
            // request still succeeds (see twofactor.rs).
            assert_eq!((n, r.status), (3, 200), "call {n}: {}", r.body);
        }
    }
    assert_eq!(bodies.len(), 1, "one fixed reply: {bodies:?}");
}

/// Reuse detection against a storage failing at each of its calls
/// (authenticate, find-superseded-token, revoke-superseded-family): a
/// failure answers 500 and either nothing changed (the next presentation
/// revokes) or the revocation committed whole; no event or mail without it.
#[test]
fn reuse_detection_survives_a_failure_at_every_storage_call() {
    for mode in [FaultMode::Before, FaultMode::After] {
        for (label, _) in backends() {
            for n in 1..=3 {
                let backend = backends().into_iter().find(|(l, _)| *l == label).unwrap().1;
                let setup = Fx::with_storage(backend.clone());
                let u = setup.user("rex", None);
                let old = setup.pat(&u, "ci", false);
                let current = setup.regenerate(&u, &old, None, "ci").token();
                let faulty = Arc::new(FaultyStorage::new(backend.clone(), n, mode));
                let fx = Fx::with_storage(faulty.clone());
                fx.clock.advance_ms(10_001);
                let ctx = format!("{label} {mode:?} failing at call {n}");
                let r = fx.call(Me, &u, &old, None, "");
                assert_eq!(faulty.calls(), n, "{ctx}: the flow reached the call");
                let revoked = !setup.authenticates(&u, &current);
                let revocations = backend
                    .audit_events(&u.id)
                    .unwrap()
                    .iter()
                    .filter(|e| e.kind == AuditKind::TokenRevokedOnReuse)
                    .count();
                assert_eq!(
                    revocations,
                    usize::from(revoked),
                    "{ctx}: its event iff it committed"
                );
                let reported = r.status == 401 && r.events.len() == 1;
                if n == 1 || mode == FaultMode::Before {
                    // Before anything changed: a 500 (the last call's "after"
                    // is the only one whose change committed).
                    assert_eq!(
                        (r.status, r.error_type()),
                        (500, "error-storage-failure"),
                        "{ctx}"
                    );
                    assert!(!revoked, "{ctx}: nothing changed");
                    assert_eq!(fx.mailer.count(), 0, "{ctx}");
                    setup.clock.advance_ms(10_001);
                    let again = setup.call(Me, &u, &old, None, "");
                    assert_eq!(
                        again.events.len(),
                        1,
                        "{ctx}: the next presentation revokes"
                    );
                    assert!(!setup.authenticates(&u, &current), "{ctx}");
                } else if n == 2 {
                    // A read failed after it ran: nothing changed either.
                    assert_eq!(r.status, 500, "{ctx}");
                    assert!(!revoked && !reported, "{ctx}");
                } else {
                    // The revocation committed, its answer was lost: revoked
                    // whole, but neither reported nor mailed (the host saw a failure).
                    assert_eq!(r.status, 500, "{ctx}");
                    assert!(revoked && !reported, "{ctx}");
                    assert_eq!(fx.mailer.count(), 0, "{ctx}");
                    assert_eq!(
                        backend.token_hashes_named(&u.id, "ci").unwrap().len(),
                        0,
                        "{ctx}"
                    );
                }
            }
        }
    }
}

/// Generate, remove and logout against a storage failing at each call in
/// turn, before or after it runs: each change's audit event exists if and
/// only if the change committed, exactly once.
#[test]
fn every_write_has_its_event_if_and_only_if_it_committed() {
    type Committed = fn(&Fx, &User) -> bool;
    let flows: [(&str, AuditKind, Endpoint, &str, Committed); 3] = [
        (
            "generate",
            AuditKind::TokenGenerated,
            Generate,
            r#"{"tokenName":"new"}"#,
            |fx, u| fx.storage.token_hashes_named(&u.id, "new").unwrap().len() == 1,
        ),
        (
            "remove",
            AuditKind::TokenRemoved,
            Remove,
            r#"{"tokenName":"ci"}"#,
            |fx, u| {
                fx.storage
                    .token_hashes_named(&u.id, "ci")
                    .unwrap()
                    .is_empty()
            },
        ),
        ("logout", AuditKind::LoggedOut, Logout, "", |fx, u| {
            !fx.authenticates(u, &u.login)
        }),
    ];
    for (flow, kind, ep, body, committed) in flows {
        for mode in [FaultMode::Before, FaultMode::After] {
            for (label, _) in backends() {
                let mut n = 1;
                loop {
                    let backend = backends().into_iter().find(|(l, _)| *l == label).unwrap().1;
                    let setup = Fx::with_storage(backend.clone());
                    let u = setup.user("eve", None);
                    setup.pat(&u, "ci", false);
                    let faulty = Arc::new(FaultyStorage::new(backend.clone(), n, mode));
                    let fx = Fx::with_storage(faulty.clone());
                    let r = fx.call(ep, &u, &u.login, None, body);
                    let ctx = format!("{flow} on {label} {mode:?} failing at call {n}: {}", r.body);
                    let done = committed(&setup, &u);
                    let events = backend.audit_events(&u.id).unwrap();
                    let count = events.iter().filter(|e| e.kind == kind).count();
                    assert_eq!(count, usize::from(done), "{ctx}: {events:?}");
                    if faulty.calls() < n {
                        // No fault reached: the change and its one event.
                        assert!(r.status == 200 && done && count == 1, "{ctx}");
                        break;
                    }
                    n += 1;
                }
                assert!(n > 1, "{flow} on {label}: the flow reached storage");
            }
        }
    }
}
