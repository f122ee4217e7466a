//! The storage contract's conformance kit (`wit/world.wit`,
//! [`rcpat::storage::Storage`], and this crate's [`Admin`]): call by call,
//! each function, and each outcome of every conditional write. The rules a
//! third party gets wrong are all here: compare-and-swap replacement,
//! factor proofs spent inside the write (exactly once), attempt
//! reservations, the first-applicable outcome of a conditional write.
//!
//! Run it on your own store with one line in a test file:
//!
//! ```ignore
//! rcpat_store::storage_conformance_tests!(my_store::MyStore::new());
//! ```
//!
//! The expression is evaluated once per test and must give a fresh, empty
//! store, by value (its type implements [`Backend`]). Every case is also a public function taking `&dyn Backend`,
//! listed in [`CASES`], for harnesses of your own.

use crate::{Backend, NewUser, PAT_PERMISSION, TokenRecord};
use rcpat::model::*;

/// The time every case starts from (milliseconds since the epoch).
pub const T0: u64 = 1_800_000_015_000;

const ALICE: &str = "UserAlice00000001";

fn new_user(b: &dyn Backend, id: &str, username: &str, email: &str, roles: &[&str]) {
    b.create_user(&NewUser {
        id: id.into(),
        username: username.into(),
        name: username.into(),
        email: Some(email.into()),
        email_verified: true,
        password_bcrypt: Some("$2b$04$hash".into()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        created_at: T0,
    })
    .unwrap();
}

fn pat(name: &str, hash: &str) -> PersonalAccessToken {
    PersonalAccessToken {
        name: name.into(),
        hashed_token: hash.into(),
        last_token_part: "abcdef".into(),
        created_at: T0,
        bypass_two_factor: false,
        last_used_at: None,
        expires_at: None,
    }
}

fn proof(session: Option<&str>, used: FactorUse) -> FactorProof {
    FactorProof {
        session: session.map(String::from),
        used,
        remember: None,
        reply: None,
        events: Vec::new(),
    }
}

fn totp() -> TotpEnrolment {
    TotpEnrolment {
        secret: "JBSWY3DPEHPK3PXP".into(),
        algorithm: TotpAlgorithm::Sha256,
        digits: 8,
        period: 30,
        last_used_step: 100,
        has_backup_codes: true,
    }
}

/// Enrols `totp()` with these unused backup codes and a spent one, "old".
fn enrol(b: &dyn Backend, unused: &[&str]) {
    let codes = BackupCodes {
        unused: unused.iter().map(|c| c.to_string()).collect(),
        spent: vec!["old".into()],
    };
    b.set_totp(ALICE, Some((&totp(), &codes))).unwrap();
}

/// Alice (roles user, zed), a session token "s1" and a PAT "ci" = "p1".
fn alice(b: &dyn Backend) {
    new_user(b, ALICE, "alice", "Alice@Example.org", &["zed", "user"]);
    b.add_token(ALICE, &TokenRecord::login("s1", T0)).unwrap();
    b.add_token(ALICE, &TokenRecord::personal_access_token(&pat("ci", "p1")))
        .unwrap();
}

/// Runs a case's body on the store under test (`name` labels assertion
/// messages).
fn each(store: &dyn Backend, test: impl Fn(&str, &dyn Backend)) {
    test("store under test", store)
}

pub fn authenticate_returns_the_user_and_the_presented_token(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        enrol(b, &["b1", "b2"]);
        assert_eq!(b.authenticate(ALICE, "nope", None).unwrap(), None, "{name}");
        assert_eq!(
            b.authenticate("nobody", "s1", None).unwrap(),
            None,
            "{name}"
        );
        let s = b
            .authenticate(ALICE, "s1", None)
            .unwrap()
            .expect("a session");
        assert_eq!(s.token.kind, TokenKind::Login, "{name}");
        assert_eq!(s.token.name, None, "{name}");
        assert_eq!(s.user.username, "alice");
        assert_eq!(s.user.roles, ["user", "zed"], "{name}: sorted roles");
        assert_eq!(s.user.verified_emails, ["Alice@Example.org"]);
        assert_eq!(s.user.password_bcrypt.as_deref(), Some("$2b$04$hash"));
        assert_eq!(s.user.totp, Some(totp()), "{name}: TOTP round trip");
        let p = b.authenticate(ALICE, "p1", None).unwrap().unwrap();
        assert_eq!(
            (p.token.kind, p.token.name.as_deref()),
            (TokenKind::PersonalAccessToken, Some("ci")),
            "{name}"
        );
    });
}

pub fn find_user_for_login_by_username_or_email_any_case(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let by = |id: LoginIdentifier| b.find_user_for_login(&id).unwrap().map(|u| u.id);
        assert_eq!(
            by(LoginIdentifier::Username("alice".into())).as_deref(),
            Some(ALICE),
            "{name}"
        );
        assert_eq!(
            by(LoginIdentifier::Username("Alice".into())),
            None,
            "{name}"
        );
        assert_eq!(
            by(LoginIdentifier::Email("alice@EXAMPLE.org".into())).as_deref(),
            Some(ALICE),
            "{name}"
        );
        assert_eq!(
            by(LoginIdentifier::Email("bob@example.org".into())),
            None,
            "{name}"
        );
    });
}

/// Emails compare case-insensitively by ASCII letters only, whatever the
/// database's locale (PostgreSQL's `lower()` would fold `Ë` to `ë` under
/// the test cluster's C.UTF-8), so every backend finds the same user and the
/// component's key for an unknown address (`to_ascii_lowercase`) agrees.
pub fn emails_fold_ascii_letters_only(store: &dyn Backend) {
    each(store, |name, b| {
        new_user(b, "zoe-id", "zoe", "Zoë@Example.org", &["user"]);
        let by = |email: &str| {
            b.find_user_for_login(&LoginIdentifier::Email(email.into()))
                .unwrap()
                .map(|u| u.id)
        };
        assert_eq!(by("zoë@example.ORG").as_deref(), Some("zoe-id"), "{name}");
        assert_eq!(by("ZOË@EXAMPLE.ORG"), None, "{name}: Ë is not ë");
    });
}

pub fn permissions_by_role_then_per_user_override(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        // `authenticate` answers the permission it is asked about as
        // `has_permission` does, with either token; never one not asked about.
        let can = || {
            let held = b.has_permission(ALICE, PAT_PERMISSION).unwrap();
            for token in ["s1", "p1"] {
                let asked = b.authenticate(ALICE, token, Some(PAT_PERMISSION)).unwrap();
                assert_eq!(asked.unwrap().permitted, held, "{name}: {token}");
                let unasked = b.authenticate(ALICE, token, None).unwrap();
                assert!(!unasked.unwrap().permitted, "{name}: {token}");
            }
            held
        };
        assert!(can(), "{name}: the user role grants it by default");
        b.set_permission_roles(PAT_PERMISSION, &["admin".into()])
            .unwrap();
        assert!(!can(), "{name}");
        b.set_user_permission(ALICE, PAT_PERMISSION, Some(true))
            .unwrap();
        assert!(can(), "{name}: a per-user grant");
        b.set_permission_roles(PAT_PERMISSION, &["zed".into()])
            .unwrap();
        b.set_user_permission(ALICE, PAT_PERMISSION, Some(false))
            .unwrap();
        assert!(!can(), "{name}: a per-user revocation beats the role");
        b.set_user_permission(ALICE, PAT_PERMISSION, None).unwrap();
        assert!(can(), "{name}: back to the roles");
        assert!(!b.has_permission("nobody", PAT_PERMISSION).unwrap());
        assert!(
            !b.authenticate(ALICE, "s1", Some("another-permission"))
                .unwrap()
                .unwrap()
                .permitted,
            "{name}: a permission no role grants"
        );
    });
}

pub fn personal_access_tokens_list_in_creation_order_and_find_exactly(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let mut second = pat("a-second", "p2");
        second.created_at = T0 + 1;
        assert_eq!(
            b.insert_personal_access_token(ALICE, &second, &FactorProof::none())
                .unwrap(),
            WriteOutcome::Done
        );
        let names: Vec<_> = b
            .list_personal_access_tokens(ALICE)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["ci", "a-second"], "{name}");
        assert_eq!(
            b.find_personal_access_token(ALICE, "ci").unwrap(),
            Some(pat("ci", "p1"))
        );
        assert_eq!(
            b.find_personal_access_token(ALICE, "CI").unwrap(),
            None,
            "{name}"
        );
        assert!(b.list_personal_access_tokens("nobody").unwrap().is_empty());
    });
}

pub fn insert_outcomes(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let none = FactorProof::none();
        let ins = |t: &PersonalAccessToken, p: &FactorProof| {
            b.insert_personal_access_token(ALICE, t, p).unwrap()
        };
        assert_eq!(
            ins(&pat("ci", "x1"), &none),
            WriteOutcome::NameTaken,
            "{name}"
        );
        assert_eq!(
            b.insert_personal_access_token("nobody", &pat("n", "x2"), &none)
                .unwrap(),
            WriteOutcome::NotFound,
            "{name}"
        );
        assert_eq!(
            ins(&pat("n", "x3"), &proof(Some("gone"), FactorUse::None)),
            WriteOutcome::CredentialsRevoked,
            "{name}"
        );
        assert_eq!(
            ins(&pat("n", "x4"), &proof(Some("s1"), FactorUse::Password)),
            WriteOutcome::Done
        );
        assert_eq!(b.token_hashes_named(ALICE, "n").unwrap(), ["x4"], "{name}");
        // Session tokens: inserted with a proof, removed by logout only.
        assert_eq!(
            b.insert_login_token(ALICE, "s2", T0, &none).unwrap(),
            WriteOutcome::Done
        );
        assert_eq!(
            b.insert_login_token("nobody", "s3", T0, &none).unwrap(),
            WriteOutcome::NotFound,
            "{name}"
        );
        assert!(
            b.authenticate(ALICE, "s2", None).unwrap().is_some(),
            "{name}"
        );
        assert_eq!(
            b.remove_login_token(ALICE, "p1", &[]).unwrap(),
            WriteOutcome::NotFound,
            "{name}: not a PAT"
        );
        assert_eq!(
            b.remove_login_token(ALICE, "s2", &[]).unwrap(),
            WriteOutcome::Done
        );
        assert_eq!(
            b.remove_login_token(ALICE, "s2", &[]).unwrap(),
            WriteOutcome::NotFound,
            "{name}"
        );
        assert!(
            b.authenticate(ALICE, "s2", None).unwrap().is_none(),
            "{name}"
        );
    });
}

pub fn replace_is_a_compare_and_swap(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let s1 = proof(Some("s1"), FactorUse::None);
        let rep = |expected: &str, t: &PersonalAccessToken| {
            b.replace_personal_access_token(ALICE, expected, t, &s1, 0)
                .unwrap()
        };
        b.record_token_use(ALICE, "p1", T0, T0).unwrap();
        assert_eq!(
            rep("stale", &pat("ci", "p2")),
            WriteOutcome::NotFound,
            "{name}: compare"
        );
        assert_eq!(
            rep("p1", &pat("other", "p2")),
            WriteOutcome::NotFound,
            "{name}: name"
        );
        assert_eq!(rep("p1", &pat("ci", "p2")), WriteOutcome::Done, "{name}");
        assert_eq!(b.token_hashes_named(ALICE, "ci").unwrap(), ["p2"], "{name}");
        assert!(
            b.authenticate(ALICE, "p1", None).unwrap().is_none(),
            "{name}: old value gone"
        );
        let new = b.find_personal_access_token(ALICE, "ci").unwrap().unwrap();
        assert_eq!(new.last_used_at, None, "{name}: a new value starts unused");
        assert_eq!(
            rep("p1", &pat("ci", "p3")),
            WriteOutcome::NotFound,
            "{name}: lost race"
        );
        assert_eq!(
            b.replace_personal_access_token(
                ALICE,
                "p2",
                &pat("ci", "p3"),
                &proof(Some("p1"), FactorUse::None),
                0
            )
            .unwrap(),
            WriteOutcome::CredentialsRevoked,
            "{name}: authenticated with the replaced value"
        );
        assert_eq!(b.token_hashes_named(ALICE, "ci").unwrap(), ["p2"], "{name}");
    });
}

pub fn remove_outcomes(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let none = FactorProof::none();
        assert_eq!(
            b.remove_personal_access_token(ALICE, "nope", &none)
                .unwrap(),
            WriteOutcome::NotFound
        );
        assert_eq!(
            b.remove_personal_access_token(ALICE, "ci", &proof(Some("gone"), FactorUse::None))
                .unwrap(),
            WriteOutcome::CredentialsRevoked,
            "{name}"
        );
        assert_eq!(
            b.remove_personal_access_token(ALICE, "ci", &none).unwrap(),
            WriteOutcome::Done
        );
        assert!(
            b.token_hashes_named(ALICE, "ci").unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(
            b.remove_personal_access_token(ALICE, "ci", &none).unwrap(),
            WriteOutcome::NotFound
        );
    });
}

pub fn backup_codes_are_looked_up_one_at_a_time(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        new_user(b, "u-bob", "bob", "bob@example.org", &["user"]);
        enrol(b, &["b1", "b2"]);
        let state = |user: &str, code: &str| b.find_backup_code(user, code).unwrap();
        assert_eq!(state(ALICE, "b1"), BackupCodeState::Unused, "{name}");
        assert_eq!(state(ALICE, "b2"), BackupCodeState::Unused, "{name}");
        assert_eq!(state(ALICE, "old"), BackupCodeState::Spent, "{name}");
        assert_eq!(state(ALICE, "zz"), BackupCodeState::Unknown, "{name}");
        assert_eq!(
            state("u-bob", "b1"),
            BackupCodeState::Unknown,
            "{name}: another user's code"
        );
        assert_eq!(state("nobody", "b1"), BackupCodeState::Unknown, "{name}");
        // Enrolled without any code: an 8-character code is no backup code.
        b.set_totp(ALICE, Some((&totp(), &BackupCodes::default())))
            .unwrap();
        let t = b
            .authenticate(ALICE, "s1", None)
            .unwrap()
            .unwrap()
            .user
            .totp;
        assert!(!t.unwrap().has_backup_codes, "{name}");
        assert_eq!(state(ALICE, "b1"), BackupCodeState::Unknown, "{name}");
        // Removing TOTP removes the codes.
        enrol(b, &["b1"]);
        b.set_totp(ALICE, None).unwrap();
        assert_eq!(state(ALICE, "b1"), BackupCodeState::Unknown, "{name}");
    });
}

pub fn every_factor_is_spent_exactly_once_with_the_write(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        enrol(b, &["b1"]);
        b.store_email_code(
            ALICE,
            &EmailCode {
                code_hash: "e1".into(),
                salt: "s".into(),
                expires_at: T0 + 1000,
                attempts: 0,
            },
        )
        .unwrap();
        let mut n = 0;
        let mut ins = |used: FactorUse| {
            n += 1;
            b.insert_personal_access_token(
                ALICE,
                &pat(&format!("t{n}"), &format!("h{n}")),
                &proof(None, used),
            )
            .unwrap()
        };
        // TOTP: only a step after the last used one.
        assert_eq!(
            ins(FactorUse::TotpStep(100)),
            WriteOutcome::FactorAlreadyUsed,
            "{name}"
        );
        assert_eq!(ins(FactorUse::TotpStep(101)), WriteOutcome::Done, "{name}");
        assert_eq!(
            ins(FactorUse::TotpStep(101)),
            WriteOutcome::FactorAlreadyUsed,
            "{name}"
        );
        // Backup codes: once, and kept as spent.
        assert_eq!(
            ins(FactorUse::BackupCode("b1".into())),
            WriteOutcome::Done,
            "{name}"
        );
        assert_eq!(
            ins(FactorUse::BackupCode("b1".into())),
            WriteOutcome::FactorAlreadyUsed
        );
        assert_eq!(
            ins(FactorUse::BackupCode("zz".into())),
            WriteOutcome::FactorAlreadyUsed
        );
        // The emailed code: once.
        assert_eq!(
            ins(FactorUse::EmailCode("e2".into())),
            WriteOutcome::FactorAlreadyUsed
        );
        assert_eq!(
            ins(FactorUse::EmailCode("e1".into())),
            WriteOutcome::Done,
            "{name}"
        );
        assert_eq!(
            ins(FactorUse::EmailCode("e1".into())),
            WriteOutcome::FactorAlreadyUsed
        );
        let user = b.authenticate(ALICE, "s1", None).unwrap().unwrap().user;
        let t = user.totp.unwrap();
        assert_eq!(t.last_used_step, 101, "{name}");
        assert!(t.has_backup_codes, "{name}: spent codes are still codes");
        for code in ["b1", "old"] {
            assert_eq!(
                b.find_backup_code(ALICE, code).unwrap(),
                BackupCodeState::Spent,
                "{name}: {code}"
            );
        }
        assert_eq!(user.email_code, None, "{name}");
        // A refused write changed nothing: only the three spends wrote tokens.
        assert_eq!(
            b.list_personal_access_tokens(ALICE).unwrap().len(),
            4,
            "{name}"
        );
    });
}

pub fn a_spent_factor_resets_failures_and_remember_marks_the_session(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let r = b
            .reserve_two_factor_attempt(ALICE, T0, 0, 10, None)
            .unwrap();
        assert!(r.granted && r.failures.count == 1, "{name}");
        let mut p = proof(Some("s1"), FactorUse::Password);
        p.remember = Some(RememberGrant {
            hashed_login_token: "s1".into(),
            fingerprint: "fp".into(),
            until: T0 + 5,
        });
        assert_eq!(
            b.insert_personal_access_token(ALICE, &pat("n", "h"), &p)
                .unwrap(),
            WriteOutcome::Done
        );
        let s = b.authenticate(ALICE, "s1", None).unwrap().unwrap();
        assert_eq!(s.user.failures.count, 0, "{name}");
        assert_eq!(
            s.token.two_factor_authorized_hash.as_deref(),
            Some("fp"),
            "{name}"
        );
        assert_eq!(s.token.two_factor_authorized_until, Some(T0 + 5), "{name}");
    });
}

pub fn two_factor_attempts_are_reserved_and_released(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let reserve = |at, email| {
            b.reserve_two_factor_attempt(ALICE, at, T0, 3, email)
                .unwrap()
        };
        for i in 1..=3 {
            let r = reserve(T0 + i, None);
            assert!(r.granted, "{name}");
            assert_eq!(
                r.failures,
                FailureCount {
                    count: i as u32,
                    last_failed_at: T0 + i
                }
            );
        }
        let refused = reserve(T0 + 9, None);
        assert!(!refused.granted, "{name}: at the limit");
        assert_eq!(
            refused.failures.count, 3,
            "{name}: a refusal counts nothing"
        );
        b.release_two_factor_attempt(ALICE, false).unwrap();
        assert!(
            reserve(T0 + 10, None).granted,
            "{name}: a released attempt is free again"
        );
        // Failures from before the window do not count.
        assert!(
            b.reserve_two_factor_attempt(ALICE, T0 + 20, T0 + 15, 3, None)
                .unwrap()
                .granted
        );
        // Emailed code attempts: counted with the code, capped by their own limit.
        b.store_email_code(
            ALICE,
            &EmailCode {
                code_hash: "e".into(),
                salt: "s".into(),
                expires_at: T0 + 99,
                attempts: 1,
            },
        )
        .unwrap();
        let r = b
            .reserve_two_factor_attempt(ALICE, T0 + 30, T0 + 25, 10, Some(2))
            .unwrap();
        assert!(r.granted && r.email_code_attempts == 2, "{name}: {r:?}");
        let r = b
            .reserve_two_factor_attempt(ALICE, T0 + 31, T0 + 25, 10, Some(2))
            .unwrap();
        assert!(!r.granted && r.email_code_attempts == 2, "{name}: {r:?}");
        b.release_two_factor_attempt(ALICE, true).unwrap();
        let code = b
            .authenticate(ALICE, "s1", None)
            .unwrap()
            .unwrap()
            .user
            .email_code
            .unwrap();
        assert_eq!(code.attempts, 1, "{name}");
        // Never below zero.
        for _ in 0..10 {
            b.release_two_factor_attempt(ALICE, true).unwrap();
        }
        let user = b.authenticate(ALICE, "s1", None).unwrap().unwrap().user;
        assert_eq!(
            (user.failures.count, user.email_code.unwrap().attempts),
            (0, 0),
            "{name}"
        );
        assert!(
            b.release_two_factor_attempt("nobody", false).is_err(),
            "{name}"
        );
    });
}

/// Issue 26, item 9: counts below the limit decay with their window, and
/// an address that logged in successfully is exempt from the account's
/// block (its own limit still applies) for `known-address-ms`.
pub fn login_counts_decay_and_known_addresses_keep_the_owner_in(store: &dyn Backend) {
    each(store, |name, b| {
        let limits = LoginLimits {
            max_per_account: 3,
            account_block_ms: 1000,
            max_per_address: 5,
            address_block_ms: 1000,
            known_address_ms: 10_000,
        };
        let try_at =
            |acc: &str, adr: &str, at| b.reserve_login_attempt(acc, adr, at, &limits).unwrap();
        use LoginAdmission::*;
        // Two failures, then the window passes: the count starts over.
        assert_eq!(try_at("ann", "x1", T0), Admitted, "{name}");
        assert_eq!(try_at("ann", "x1", T0 + 10), Admitted, "{name}");
        for i in 0..3 {
            assert_eq!(
                try_at("ann", "x2", T0 + 1010 + i),
                Admitted,
                "{name}: decayed"
            );
        }
        assert_eq!(try_at("ann", "x2", T0 + 1013), AccountBlocked, "{name}");
        // The owner logs in from home; strangers then block the account.
        b.login_succeeded("ann", "home", T0 + 2000).unwrap();
        for i in 0..3 {
            assert_eq!(try_at("ann", "x3", T0 + 2001 + i), Admitted, "{name}");
        }
        assert_eq!(try_at("ann", "x3", T0 + 2004), AccountBlocked, "{name}");
        // From home the owner still gets a password check, and those
        // attempts do not add to the account's count...
        for i in 0..5 {
            assert_eq!(
                try_at("ann", "home", T0 + 2005 + i),
                Admitted,
                "{name}: known"
            );
        }
        // ...but home's own limit holds.
        assert_eq!(try_at("ann", "home", T0 + 2010), AddressBlocked, "{name}");
        // Another account does not know that address.
        assert_eq!(try_at("bob", "home", T0 + 3100), Admitted, "{name}");
        // Known for `known-address-ms` only.
        for i in 0..3 {
            assert_eq!(try_at("ann", "x4", T0 + 12_100 + i), Admitted, "{name}");
        }
        assert_eq!(
            try_at("ann", "home", T0 + 12_103),
            AccountBlocked,
            "{name}: forgotten"
        );
        // With known-address-ms 0 no address is known.
        b.login_succeeded("cid", "home2", T0).unwrap();
        let off = LoginLimits {
            known_address_ms: 0,
            ..limits
        };
        for i in 0..3 {
            let r = b.reserve_login_attempt("cid", "y", T0 + i, &off).unwrap();
            assert_eq!(r, Admitted, "{name}");
        }
        let r = b
            .reserve_login_attempt("cid", "home2", T0 + 4, &off)
            .unwrap();
        assert_eq!(r, AccountBlocked, "{name}: off");
    });
}

pub fn login_attempts_block_accounts_and_addresses(store: &dyn Backend) {
    each(store, |name, b| {
        let limits = LoginLimits {
            max_per_account: 2,
            account_block_ms: 1000,
            max_per_address: 3,
            address_block_ms: 5000,
            known_address_ms: 60_000,
        };
        let try_at =
            |acc: &str, adr: &str, at| b.reserve_login_attempt(acc, adr, at, &limits).unwrap();
        assert_eq!(
            try_at("ann", "10.0.0.1", T0),
            LoginAdmission::Admitted,
            "{name}"
        );
        assert_eq!(try_at("ann", "10.0.0.2", T0), LoginAdmission::Admitted);
        assert_eq!(
            try_at("ann", "10.0.0.3", T0),
            LoginAdmission::AccountBlocked,
            "{name}"
        );
        assert_eq!(
            try_at("ann", "10.0.0.3", T0 + 1000),
            LoginAdmission::Admitted,
            "{name}: expired"
        );
        assert_eq!(try_at("bob", "10.0.0.9", T0), LoginAdmission::Admitted);
        assert_eq!(try_at("cid", "10.0.0.9", T0), LoginAdmission::Admitted);
        assert_eq!(try_at("dan", "10.0.0.9", T0), LoginAdmission::Admitted);
        assert_eq!(
            try_at("eve", "10.0.0.9", T0),
            LoginAdmission::AddressBlocked,
            "{name}"
        );
        // A success forgets the account and takes one off the address.
        b.login_succeeded("dan", "10.0.0.9", T0).unwrap();
        assert_eq!(
            try_at("eve", "10.0.0.9", T0),
            LoginAdmission::Admitted,
            "{name}"
        );
        b.login_succeeded("ann", "10.0.0.3", T0).unwrap();
        assert_eq!(
            try_at("ann", "10.0.0.4", T0 + 1000),
            LoginAdmission::Admitted,
            "{name}"
        );
        assert_eq!(
            try_at("ann", "10.0.0.4", T0 + 1000),
            LoginAdmission::Admitted,
            "{name}"
        );
        assert_eq!(
            try_at("ann", "10.0.0.4", T0 + 1000),
            LoginAdmission::AccountBlocked
        );
    });
}

pub fn email_codes_replace_each_other(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let code = |h: &str| EmailCode {
            code_hash: h.into(),
            salt: "s".into(),
            expires_at: T0,
            attempts: 0,
        };
        b.store_email_code(ALICE, &code("e1")).unwrap();
        b.store_email_code(ALICE, &code("e2")).unwrap();
        let user = b.authenticate(ALICE, "s1", None).unwrap().unwrap().user;
        assert_eq!(user.email_code, Some(code("e2")), "{name}");
    });
}

pub fn token_use_is_recorded_when_stale(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let used = || {
            b.authenticate(ALICE, "p1", None)
                .unwrap()
                .unwrap()
                .token
                .last_used_at
        };
        assert_eq!(used(), None, "{name}");
        b.record_token_use(ALICE, "p1", T0, T0 - 3600).unwrap();
        assert_eq!(used(), Some(T0), "{name}");
        b.record_token_use(ALICE, "p1", T0 + 10, T0 - 3600).unwrap();
        assert_eq!(used(), Some(T0), "{name}: fresh enough, kept");
        b.record_token_use(ALICE, "p1", T0 + 20, T0 + 1).unwrap();
        assert_eq!(used(), Some(T0 + 20), "{name}: stale, rewritten");
        assert_eq!(
            b.list_personal_access_tokens(ALICE).unwrap()[0].last_used_at,
            Some(T0 + 20),
            "{name}"
        );
        b.record_token_use(ALICE, "s1", T0, T0).unwrap();
        assert_eq!(
            b.authenticate(ALICE, "s1", None)
                .unwrap()
                .unwrap()
                .token
                .last_used_at,
            None,
            "{name}"
        );
        b.record_token_use(ALICE, "nope", T0, T0).unwrap();
        b.record_token_use("nobody", "p1", T0, T0).unwrap();
    });
}

pub fn admin_calls(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        assert_eq!(
            b.find_user_id("alice").unwrap().as_deref(),
            Some(ALICE),
            "{name}"
        );
        assert_eq!(b.find_user_id("bob").unwrap(), None);
        assert!(
            b.create_user(&NewUser {
                id: "other".into(),
                username: "alice".into(),
                name: "x".into(),
                email: None,
                email_verified: false,
                password_bcrypt: None,
                roles: vec![],
                created_at: T0,
            })
            .is_err(),
            "{name}: usernames are unique"
        );
        b.set_user_roles(ALICE, &["admin".into()]).unwrap();
        b.set_email_two_factor(ALICE, true).unwrap();
        assert!(b.set_email_two_factor("nobody", true).is_err(), "{name}");
        enrol(b, &[]);
        let users = b.list_users().unwrap();
        assert_eq!(users.len(), 1, "{name}");
        assert_eq!(
            (
                users[0].roles.clone(),
                users[0].totp,
                users[0].email_two_factor
            ),
            (vec!["admin".to_string()], true, true),
            "{name}"
        );
        let mut named_login = TokenRecord::login("s9", T0);
        named_login.name = Some("x".into());
        assert!(
            b.add_token(ALICE, &named_login).is_err(),
            "{name}: a login token has no name"
        );
        let mut unnamed_pat = TokenRecord::personal_access_token(&pat("y", "p9"));
        unnamed_pat.name = None;
        assert!(
            b.add_token(ALICE, &unnamed_pat).is_err(),
            "{name}: a PAT has a name"
        );
        for refused in ["s9", "p9"] {
            assert_eq!(
                b.authenticate(ALICE, refused, None)
                    .unwrap()
                    .map(|s| s.user.id),
                None,
                "{name}: {refused} was not stored"
            );
        }
        b.set_totp(ALICE, None).unwrap();
        assert_eq!(
            b.authenticate(ALICE, "s1", None)
                .unwrap()
                .unwrap()
                .user
                .totp,
            None,
            "{name}"
        );
    });
}

pub fn tokens_list_by_the_current_values_creation(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let mut second = pat("second", "p2");
        second.created_at = T0 + 1;
        b.insert_personal_access_token(ALICE, &second, &FactorProof::none())
            .unwrap();
        let mut third = pat("third", "p3");
        third.created_at = T0 + 1;
        b.insert_personal_access_token(ALICE, &third, &FactorProof::none())
            .unwrap();
        let names = || -> Vec<String> {
            b.list_personal_access_tokens(ALICE)
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        assert_eq!(
            names(),
            ["ci", "second", "third"],
            "{name}: equal times by creation"
        );
        let mut ci = pat("ci", "p9");
        ci.created_at = T0 + 5;
        b.replace_personal_access_token(ALICE, "p1", &ci, &FactorProof::none(), 0)
            .unwrap();
        assert_eq!(
            names(),
            ["second", "third", "ci"],
            "{name}: a regenerated token moves to the end"
        );
    });
}

pub fn conditional_writes_answer_the_first_outcome_that_applies(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        enrol(b, &[]);
        // A revoked session and a spent factor together.
        let bad = proof(Some("gone"), FactorUse::TotpStep(1));
        let spent = proof(None, FactorUse::TotpStep(1));
        let ins = |user: &str, t: &str, p: &FactorProof| {
            b.insert_personal_access_token(user, &pat(t, "n1"), p)
                .unwrap()
        };
        assert_eq!(ins("nobody", "ci", &bad), WriteOutcome::NotFound, "{name}");
        assert_eq!(ins(ALICE, "ci", &bad), WriteOutcome::NameTaken, "{name}");
        assert_eq!(
            ins(ALICE, "new", &bad),
            WriteOutcome::CredentialsRevoked,
            "{name}"
        );
        assert_eq!(
            ins(ALICE, "new", &spent),
            WriteOutcome::FactorAlreadyUsed,
            "{name}"
        );
        let rep = |expected: &str, p: &FactorProof| {
            b.replace_personal_access_token(ALICE, expected, &pat("ci", "n2"), p, 0)
                .unwrap()
        };
        assert_eq!(rep("stale", &bad), WriteOutcome::NotFound, "{name}");
        assert_eq!(rep("p1", &bad), WriteOutcome::CredentialsRevoked, "{name}");
        assert_eq!(rep("p1", &spent), WriteOutcome::FactorAlreadyUsed, "{name}");
        let rm = |n: &str, p: &FactorProof| b.remove_personal_access_token(ALICE, n, p).unwrap();
        assert_eq!(rm("nope", &bad), WriteOutcome::NotFound, "{name}");
        assert_eq!(rm("ci", &bad), WriteOutcome::CredentialsRevoked, "{name}");
        assert_eq!(rm("ci", &spent), WriteOutcome::FactorAlreadyUsed, "{name}");
        assert_eq!(
            b.insert_login_token(ALICE, "s9", T0, &bad).unwrap(),
            WriteOutcome::CredentialsRevoked,
            "{name}"
        );
        // Nothing of all that changed anything.
        assert_eq!(b.token_hashes_named(ALICE, "ci").unwrap(), ["p1"], "{name}");
        assert_eq!(
            b.list_personal_access_tokens(ALICE).unwrap().len(),
            1,
            "{name}"
        );
        assert!(
            b.authenticate(ALICE, "s9", None).unwrap().is_none(),
            "{name}"
        );
    });
}

pub fn unknown_users_in_the_other_writes(store: &dyn Backend) {
    each(store, |name, b| {
        let code = EmailCode {
            code_hash: "e".into(),
            salt: "s".into(),
            expires_at: T0,
            attempts: 0,
        };
        assert!(b.store_email_code("nobody", &code).is_err(), "{name}");
        assert!(
            b.reserve_two_factor_attempt("nobody", T0, 0, 10, None)
                .is_err(),
            "{name}"
        );
        assert!(
            b.release_two_factor_attempt("nobody", true).is_err(),
            "{name}"
        );
        b.record_token_use("nobody", "h", T0, T0).unwrap();
        b.login_succeeded("nobody", "10.0.0.1", T0).unwrap();
    });
}

pub fn email_logins_match_any_stored_address_oldest_user_first(store: &dyn Backend) {
    each(store, |name, b| {
        let add = |id: &str, username: &str, created_at: u64| {
            b.create_user(&NewUser {
                id: id.into(),
                username: username.into(),
                name: username.into(),
                email: Some("Shared@Example.org".into()),
                email_verified: false,
                password_bcrypt: None,
                roles: vec![],
                created_at,
            })
            .unwrap();
        };
        add("UserYounger000001", "younger", T0 + 10);
        add("UserOlder00000001", "older", T0);
        let found = b
            .find_user_for_login(&LoginIdentifier::Email("shared@example.ORG".into()))
            .unwrap()
            .expect("an unverified address matches");
        assert_eq!(found.username, "older", "{name}");
        assert!(
            found.verified_emails.is_empty(),
            "{name}: still not verified"
        );
    });
}

/// Contract 0.9.0 (issue 24, points 9 to 11): the rules a third party could
/// only guess before, each decided in `wit/world.wit` and checked here.
pub fn rules_decided_in_contract_0_9(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        const W: u64 = 1000;
        // A second-factor failure exactly a window old no longer counts, and
        // a count below the limit restarts too.
        let r = b
            .reserve_two_factor_attempt(ALICE, T0, T0 - W, 3, None)
            .unwrap();
        assert!(r.granted && r.failures.count == 1, "{name}");
        let r = b
            .reserve_two_factor_attempt(ALICE, T0 + W, T0, 3, None)
            .unwrap();
        assert_eq!(
            (r.granted, r.failures.count),
            (true, 1),
            "{name}: restarted"
        );
        // A refusal changes nothing and reports the count as it stands
        // with the stored last failure.
        for at in [T0 + W + 1, T0 + W + 2] {
            let r = b
                .reserve_two_factor_attempt(ALICE, at, at - W, 3, None)
                .unwrap();
            assert!(r.granted, "{name}");
        }
        let r = b
            .reserve_two_factor_attempt(ALICE, T0 + W + 3, T0 + 3, 3, None)
            .unwrap();
        assert!(!r.granted, "{name}");
        assert_eq!(
            (r.failures.count, r.failures.last_failed_at),
            (3, T0 + W + 2),
            "{name}"
        );
        // Refused by the email code's attempts once the window has passed:
        // the count as it stands is 0; the stored stamp is reported.
        b.store_email_code(
            ALICE,
            &EmailCode {
                code_hash: "e".into(),
                salt: "00".repeat(16),
                expires_at: T0 + 100 * W,
                attempts: 5,
            },
        )
        .unwrap();
        let later = T0 + 10 * W;
        let r = b
            .reserve_two_factor_attempt(ALICE, later, later - W, 3, Some(5))
            .unwrap();
        assert!(!r.granted, "{name}");
        assert_eq!(
            (
                r.failures.count,
                r.failures.last_failed_at,
                r.email_code_attempts
            ),
            (0, T0 + W + 2, 5),
            "{name}"
        );
        // A release decrements the count and leaves the stamp.
        b.release_two_factor_attempt(ALICE, false).unwrap();
        let s = b.authenticate(ALICE, "s1", None).unwrap().unwrap();
        assert_eq!(
            (s.user.failures.count, s.user.failures.last_failed_at),
            (2, T0 + W + 2),
            "{name}"
        );

        // Login counts: a failure exactly a block time old no longer counts;
        // with account and address both over, the account is named.
        let limits = LoginLimits {
            max_per_account: 1,
            account_block_ms: W,
            max_per_address: 1,
            address_block_ms: W,
            known_address_ms: 0,
        };
        let attempt = |at| {
            b.reserve_login_attempt(ALICE, "198.51.100.9", at, &limits)
                .unwrap()
        };
        assert_eq!(attempt(T0), LoginAdmission::Admitted, "{name}");
        assert_eq!(
            attempt(T0 + W - 1),
            LoginAdmission::AccountBlocked,
            "{name}"
        );
        assert_eq!(attempt(T0 + W), LoginAdmission::Admitted, "{name}");

        // A factor of an enrolment the user no longer has cannot be spent.
        for used in [FactorUse::TotpStep(200), FactorUse::BackupCode("a".into())] {
            assert_eq!(
                b.insert_personal_access_token(ALICE, &pat("x", "hx"), &proof(Some("s1"), used))
                    .unwrap(),
                WriteOutcome::FactorAlreadyUsed,
                "{name}"
            );
        }

        // A remember grant on the token its write replaces goes with it.
        let mut p = proof(Some("p1"), FactorUse::Password);
        p.remember = Some(RememberGrant {
            hashed_login_token: "p1".into(),
            fingerprint: "fp".into(),
            until: T0 + W,
        });
        assert_eq!(
            b.replace_personal_access_token(ALICE, "p1", &pat("ci", "p2"), &p, 0)
                .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        let s = b.authenticate(ALICE, "p2", None).unwrap().unwrap();
        assert_eq!(s.token.two_factor_authorized_hash, None, "{name}");
        assert_eq!(s.token.two_factor_authorized_until, None, "{name}");

        // The first reply kept for a key stays.
        let kept = |hash: &str, body: &str| {
            let mut p = proof(Some("s1"), FactorUse::None);
            p.reply = Some(IdempotentWrite {
                presented_hashed_token: "s1".into(),
                key: "k".repeat(22),
                body_hash: body.into(),
                sealed_reply: vec![1, 2, 3],
                created_at: T0,
                forget_before: 0,
            });
            b.insert_personal_access_token(ALICE, &pat(hash, hash), &p)
                .unwrap()
        };
        assert_eq!(kept("r1", "first"), WriteOutcome::Done, "{name}");
        assert_eq!(kept("r2", "second"), WriteOutcome::ReplyKept, "{name}");
        let found = b
            .find_idempotent_reply(ALICE, "s1", &"k".repeat(22), 0)
            .unwrap()
            .unwrap();
        assert_eq!(found.body_hash, "first", "{name}");
        assert!(
            b.find_personal_access_token(ALICE, "r2").unwrap().is_none(),
            "{name}"
        );

        // Equal times list in first-creation order, kept across replacement;
        // expired tokens are listed and found.
        let mut late = pat("zz", "z1");
        late.created_at = T0 + 50 * W;
        late.expires_at = Some(T0 + 1);
        let mut early = pat("aa", "a1");
        early.created_at = T0 + 50 * W;
        for t in [&late, &early] {
            assert_eq!(
                b.insert_personal_access_token(ALICE, t, &proof(Some("s1"), FactorUse::None))
                    .unwrap(),
                WriteOutcome::Done,
                "{name}"
            );
        }
        let mut renewed = late.clone();
        renewed.hashed_token = "z2".into();
        assert_eq!(
            b.replace_personal_access_token(
                ALICE,
                "z1",
                &renewed,
                &proof(Some("s1"), FactorUse::None),
                0
            )
            .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        let names: Vec<String> = b
            .list_personal_access_tokens(ALICE)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names[names.len() - 2..], ["zz", "aa"], "{name}: {names:?}");
        let found = b.find_personal_access_token(ALICE, "zz").unwrap();
        assert_eq!(found.unwrap().expires_at, Some(T0 + 1), "{name}");
    });
}

/// Contract 0.10.0's superseded values (reuse detection): kept by a
/// replacement that asks, the newest `keep-superseded` per token, found
/// within their window, gone with the token (its family), and revoking the
/// family's current token once.
pub fn superseded_values_and_their_family(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let at = |token: &str, hash: &str, t: u64| PersonalAccessToken {
            created_at: t,
            ..pat(token, hash)
        };
        let none = FactorProof::none();
        let found =
            |hash: &str, not_before| b.find_superseded_token(ALICE, hash, not_before).unwrap();
        // Keeping none: nothing is kept.
        assert_eq!(
            b.replace_personal_access_token(ALICE, "p1", &at("ci", "p2", T0 + 10), &none, 0)
                .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        assert_eq!(found("p1", 0), None, "{name}");
        // p2 -> p3 -> p4 keeps p3 and p2, each with the time of its
        // replacement. (Presented by the session: a store may take another
        // path for a proof with more to check than the token itself, as
        // PostgreSQL does.)
        let by_session = proof(Some("s1"), FactorUse::None);
        for (old, new, t) in [("p2", "p3", T0 + 20), ("p3", "p4", T0 + 30)] {
            assert_eq!(
                b.replace_personal_access_token(ALICE, old, &at("ci", new, t), &by_session, 8)
                    .unwrap(),
                WriteOutcome::Done,
                "{name}"
            );
        }
        assert_eq!(
            found("p2", 0),
            Some(SupersededToken {
                name: "ci".into(),
                superseded_at: T0 + 20
            }),
            "{name}"
        );
        assert_eq!(
            found("p3", T0 + 30).map(|t| t.superseded_at),
            Some(T0 + 30),
            "{name}: not-before is inclusive"
        );
        assert_eq!(found("p3", T0 + 31), None, "{name}: older than not-before");
        assert_eq!(
            found("p4", 0),
            None,
            "{name}: the current value is not superseded"
        );
        assert_eq!(
            b.find_superseded_token("nobody", "p2", 0).unwrap(),
            None,
            "{name}"
        );
        // A failed compare-and-swap keeps nothing.
        assert_eq!(
            b.replace_personal_access_token(ALICE, "p1", &at("ci", "p9", T0 + 40), &none, 8)
                .unwrap(),
            WriteOutcome::NotFound,
            "{name}"
        );
        assert_eq!(found("p1", 0), None, "{name}");
        // Another token's values are its own.
        b.add_token(
            ALICE,
            &TokenRecord::personal_access_token(&pat("other", "o1")),
        )
        .unwrap();
        b.replace_personal_access_token(ALICE, "o1", &at("other", "o2", T0 + 41), &none, 8)
            .unwrap();
        assert_eq!(
            found("o1", 0).map(|t| t.name),
            Some("other".into()),
            "{name}"
        );
        // Revocation: not before the window, not for an unknown or current
        // value; then the family's current value (p4) goes, once.
        assert_eq!(
            b.revoke_superseded_family(ALICE, "p2", T0 + 21, &[])
                .unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            b.revoke_superseded_family(ALICE, "p4", 0, &[]).unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            b.revoke_superseded_family("nobody", "p2", 0, &[]).unwrap(),
            None,
            "{name}"
        );
        assert!(
            b.find_personal_access_token(ALICE, "ci").unwrap().is_some(),
            "{name}"
        );
        assert_eq!(
            b.revoke_superseded_family(ALICE, "p2", 0, &[]).unwrap(),
            Some(RevokedToken {
                name: "ci".into(),
                verified_emails: vec!["Alice@Example.org".into()],
            }),
            "{name}"
        );
        assert_eq!(
            b.find_personal_access_token(ALICE, "ci").unwrap(),
            None,
            "{name}"
        );
        assert_eq!(b.authenticate(ALICE, "p4", None).unwrap(), None, "{name}");
        assert_eq!(
            b.revoke_superseded_family(ALICE, "p3", 0, &[]).unwrap(),
            None,
            "{name}: once"
        );
        assert_eq!(
            found("p3", 0),
            None,
            "{name}: the values went with the token"
        );
        assert!(
            b.authenticate(ALICE, "s1", None).unwrap().is_some(),
            "{name}: sessions stay"
        );
        assert!(
            b.authenticate(ALICE, "o2", None).unwrap().is_some(),
            "{name}: other tokens stay"
        );
        // A token generated under the name starts a new family.
        assert_eq!(
            b.insert_personal_access_token(ALICE, &at("ci", "q1", T0 + 50), &none)
                .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        b.replace_personal_access_token(ALICE, "q1", &at("ci", "q2", T0 + 60), &none, 8)
            .unwrap();
        assert!(found("q1", 0).is_some(), "{name}");
        assert_eq!(found("p2", 0), None, "{name}");
        // Removal ends the family; so does it for a seeded token.
        assert_eq!(
            b.remove_personal_access_token(ALICE, "ci", &none).unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        assert_eq!(found("q1", 0), None, "{name}: removal ends the family");
        b.add_token(
            ALICE,
            &TokenRecord::personal_access_token(&at("ci", "r1", T0 + 70)),
        )
        .unwrap();
        assert_eq!(
            found("q1", 0),
            None,
            "{name}: a seeded token starts with none"
        );
        // The bound: a token keeps its newest `keep-superseded`, and a
        // replacement keeping none drops what the token kept.
        for (old, new, t) in [
            ("r1", "r2", 80),
            ("r2", "r3", 90),
            ("r3", "r4", 100),
            ("r4", "r5", 110),
        ] {
            b.replace_personal_access_token(ALICE, old, &at("ci", new, T0 + t), &none, 3)
                .unwrap();
        }
        assert_eq!(found("r1", 0), None, "{name}: beyond the newest 3");
        for hash in ["r2", "r3", "r4"] {
            assert!(found(hash, 0).is_some(), "{name}: {hash} kept");
        }
        b.replace_personal_access_token(ALICE, "r5", &at("ci", "r6", T0 + 120), &none, 0)
            .unwrap();
        for hash in ["r2", "r3", "r4", "r5"] {
            assert_eq!(found(hash, 0), None, "{name}: {hash} dropped");
        }
    });
}

/// Contract 0.11.0 (audit trail): a conditional write stores its proof's
/// events in its transaction when it answers `done`, and never otherwise.
pub fn write_events_are_stored_only_with_their_write(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let event = |kind, token: Option<&str>| AuditEvent {
            at: T0,
            account: ALICE.into(),
            kind,
            token_name: token.map(String::from),
            token_last_part: token.map(|_| "abcdef".to_string()),
            method: Some(TwoFactorMethod::Totp),
            client_address: "192.0.2.7".into(),
            user_agent: "curl/8".into(),
        };
        let with = |events: Vec<AuditEvent>| FactorProof {
            events,
            ..FactorProof::none()
        };
        let generated = event(AuditKind::TokenGenerated, Some("new"));
        let taken = event(AuditKind::TokenGenerated, Some("ci"));
        assert_eq!(
            b.insert_personal_access_token(
                ALICE,
                &pat("new", "n1"),
                &with(vec![generated.clone()])
            )
            .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        assert_eq!(
            b.insert_personal_access_token(ALICE, &pat("ci", "x1"), &with(vec![taken]))
                .unwrap(),
            WriteOutcome::NameTaken,
            "{name}"
        );
        let regenerated = vec![
            event(AuditKind::TwoFactorPassed, None),
            event(AuditKind::TokenRegenerated, Some("ci")),
        ];
        assert_eq!(
            b.replace_personal_access_token(
                ALICE,
                "p1",
                &pat("ci", "p2"),
                &with(regenerated.clone()),
                0
            )
            .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        assert_eq!(
            b.replace_personal_access_token(
                ALICE,
                "p1",
                &pat("ci", "p3"),
                &with(regenerated.clone()),
                0
            )
            .unwrap(),
            WriteOutcome::NotFound,
            "{name}"
        );
        let removed = event(AuditKind::TokenRemoved, Some("new"));
        assert_eq!(
            b.remove_personal_access_token(ALICE, "new", &with(vec![removed.clone()]))
                .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        let login = event(AuditKind::LoginSucceeded, None);
        assert_eq!(
            b.insert_login_token(ALICE, "s9", T0, &with(vec![login.clone()]))
                .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        let mut expected = vec![generated];
        expected.extend(regenerated);
        expected.extend([removed, login]);
        assert_eq!(b.audit_events(ALICE).unwrap(), expected, "{name}");
    });
}

/// Contract 0.11.0: logout and revocation store their events with their
/// change (none without it), and `record-audit-events` counts a
/// flood-prone kind per account, address, kind and minute.
pub fn events_of_logout_revocation_and_refusals(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        let event = |kind, at: u64, address: &str| AuditEvent {
            at,
            account: ALICE.into(),
            kind,
            token_name: None,
            token_last_part: None,
            method: None,
            client_address: address.into(),
            user_agent: String::new(),
        };
        let out = event(AuditKind::LoggedOut, T0, "192.0.2.1");
        assert_eq!(
            b.remove_login_token(ALICE, "s1", std::slice::from_ref(&out))
                .unwrap(),
            WriteOutcome::Done,
            "{name}"
        );
        assert_eq!(
            b.remove_login_token(ALICE, "s1", std::slice::from_ref(&out))
                .unwrap(),
            WriteOutcome::NotFound,
            "{name}: nothing removed, nothing recorded"
        );
        b.replace_personal_access_token(ALICE, "p1", &pat("ci", "p2"), &FactorProof::none(), 8)
            .unwrap();
        let revoked = event(AuditKind::TokenRevokedOnReuse, T0 + 1, "192.0.2.2");
        assert!(
            b.revoke_superseded_family(ALICE, "p1", 0, std::slice::from_ref(&revoked))
                .unwrap()
                .is_some(),
            "{name}"
        );
        assert!(
            b.revoke_superseded_family(ALICE, "p1", 0, std::slice::from_ref(&revoked))
                .unwrap()
                .is_none(),
            "{name}"
        );
        // Three failed logins in one minute from one address: one row; another
        // address, another kind or the next minute: rows of their own.
        let failed = |at, address| event(AuditKind::LoginFailed, at, address);
        b.record_audit_events(&[failed(T0 + 2, "192.0.2.3"), failed(T0 + 3, "192.0.2.3")])
            .unwrap();
        b.record_audit_events(&[failed(T0 + 4, "192.0.2.3")])
            .unwrap();
        b.record_audit_events(&[failed(T0 + 5, "192.0.2.4")])
            .unwrap();
        b.record_audit_events(&[event(AuditKind::LoginBlocked, T0 + 6, "192.0.2.3")])
            .unwrap();
        b.record_audit_events(&[failed(T0 + 60_000, "192.0.2.3")])
            .unwrap();
        // Kinds that are not flood-prone are never merged.
        let wrong = event(AuditKind::TwoFactorWrongCode, T0 + 7, "192.0.2.3");
        b.record_audit_events(&[wrong.clone(), wrong.clone()])
            .unwrap();
        let got: Vec<(AuditKind, String)> = b
            .audit_events(ALICE)
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.client_address))
            .collect();
        let want = |kind, address: &str| (kind, address.to_string());
        assert_eq!(
            got,
            [
                want(AuditKind::LoggedOut, "192.0.2.1"),
                want(AuditKind::TokenRevokedOnReuse, "192.0.2.2"),
                want(AuditKind::LoginFailed, "192.0.2.3"),
                want(AuditKind::LoginFailed, "192.0.2.4"),
                want(AuditKind::LoginBlocked, "192.0.2.3"),
                want(AuditKind::TwoFactorWrongCode, "192.0.2.3"),
                want(AuditKind::TwoFactorWrongCode, "192.0.2.3"),
                want(AuditKind::LoginFailed, "192.0.2.3"),
            ],
            "{name}"
        );
        // An account that is no user (a login naming nobody) is kept too.
        let nobody = AuditEvent {
            account: "unknown-username:mallory".into(),
            ..failed(T0, "192.0.2.9")
        };
        b.record_audit_events(&[nobody.clone(), nobody.clone()])
            .unwrap();
        assert_eq!(
            b.audit_events("unknown-username:mallory").unwrap(),
            [nobody],
            "{name}"
        );
    });
}

/// Contract 0.11.0: `list-audit-events` answers newest first (ties: the
/// one stored last first), filters by account, instant (inclusive) and
/// kind, pages with `offset`/`count` and a total of all matches, stamps the
/// host id set before the write, and shows counts; the audit permission is
/// the `admin` role's by default; pruning removes only older events, in
/// batches of the size asked.
pub fn audit_pages_and_pruning(store: &dyn Backend) {
    each(store, |name, b| {
        alice(b);
        new_user(b, "u2", "bob", "bob@example.org", &["admin"]);
        assert!(
            b.has_permission("u2", rcpat::audit_route::AUDIT_PERMISSION)
                .unwrap()
                && !b
                    .has_permission(ALICE, rcpat::audit_route::AUDIT_PERMISSION)
                    .unwrap(),
            "{name}: view-personal-access-token-audit is the admin role's"
        );
        let event = |account: &str, kind, at: u64| AuditEvent {
            at,
            account: account.into(),
            kind,
            token_name: Some("ci".into()),
            token_last_part: Some("abcdef".into()),
            method: Some(TwoFactorMethod::Totp),
            client_address: "192.0.2.1".into(),
            user_agent: "agent/1".into(),
        };
        b.set_host_id("host-1").unwrap();
        b.record_audit_events(&[event(ALICE, AuditKind::TwoFactorWrongCode, T0)])
            .unwrap();
        b.set_host_id("host-2").unwrap();
        b.record_audit_events(&[
            event(ALICE, AuditKind::TwoFactorWrongCode, T0 + 10),
            event("u2", AuditKind::TwoFactorWrongCode, T0 + 10),
            event(ALICE, AuditKind::LoginFailed, T0 + 20),
        ])
        .unwrap();
        b.record_audit_events(&[event(ALICE, AuditKind::LoginFailed, T0 + 30)])
            .unwrap();
        let page = |filter: AuditFilter, offset, count| {
            let p = b.list_audit_events(&filter, offset, count).unwrap();
            let rows: Vec<(String, u64, String, u32)> = p
                .events
                .into_iter()
                .map(|s| (s.event.account, s.event.at, s.host_id, s.count))
                .collect();
            (p.total, rows)
        };
        let row = |account: &str, at: u64, host: &str, count: u32| {
            (account.to_string(), at, host.to_string(), count)
        };
        let all = AuditFilter::default();
        assert_eq!(
            page(all.clone(), 0, 10),
            (
                4,
                vec![
                    // One row for both failed logins of the minute, stamped
                    // when it was first stored.
                    row(ALICE, T0 + 20, "host-2", 2),
                    // The same instant: the one stored last first.
                    row("u2", T0 + 10, "host-2", 1),
                    row(ALICE, T0 + 10, "host-2", 1),
                    row(ALICE, T0, "host-1", 1),
                ]
            ),
            "{name}"
        );
        assert_eq!(
            page(all.clone(), 1, 2),
            (
                4,
                vec![
                    row("u2", T0 + 10, "host-2", 1),
                    row(ALICE, T0 + 10, "host-2", 1)
                ]
            ),
            "{name}: a page"
        );
        assert_eq!(
            page(all.clone(), 4, 10),
            (4, vec![]),
            "{name}: past the end"
        );
        let only =
            |account: Option<&str>, since: Option<u64>, kind: Option<AuditKind>| AuditFilter {
                account: account.map(String::from),
                since,
                kind,
            };
        assert_eq!(page(only(Some("u2"), None, None), 0, 10).0, 1, "{name}");
        assert_eq!(
            page(only(None, Some(T0 + 10), None), 0, 10).0,
            3,
            "{name}: since is inclusive"
        );
        assert_eq!(
            page(
                only(Some(ALICE), None, Some(AuditKind::TwoFactorWrongCode)),
                0,
                10
            )
            .0,
            2,
            "{name}"
        );
        assert_eq!(
            page(only(Some("nobody"), None, None), 0, 10),
            (0, vec![]),
            "{name}"
        );
        // Every field comes back as stored.
        let first = b
            .list_audit_events(&only(Some("u2"), None, None), 0, 1)
            .unwrap();
        assert_eq!(
            first.events[0].event,
            event("u2", AuditKind::TwoFactorWrongCode, T0 + 10),
            "{name}"
        );
        // Pruning: only what is older than the instant given, batch by batch.
        assert_eq!(b.prune_audit_events(T0 + 10, 1).unwrap(), 1, "{name}");
        assert_eq!(page(all.clone(), 0, 10).0, 3, "{name}");
        assert_eq!(
            b.prune_audit_events(T0 + 21, 1).unwrap(),
            3,
            "{name}: three batches of one"
        );
        assert_eq!(page(all, 0, 10).0, 0, "{name}");
    });
}

crate::__conformance_cases!(list);

/// Every case of the kit, one `#[test]` each, on fresh stores made by the
/// expression given (evaluated once per test). See [`conformance`](crate::conformance).
#[macro_export]
macro_rules! storage_conformance_tests {
    ($make:expr) => {
        $crate::__conformance_cases!(tests $make);
    };
}

/// The one list of cases (both the `#[test]`s and [`CASES`] come from it).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($mode:ident $($make:expr)?) => {
        $crate::__conformance_emit!($mode ($($make)?) [
            authenticate_returns_the_user_and_the_presented_token,
            find_user_for_login_by_username_or_email_any_case,
            emails_fold_ascii_letters_only,
            permissions_by_role_then_per_user_override,
            personal_access_tokens_list_in_creation_order_and_find_exactly,
            insert_outcomes,
            replace_is_a_compare_and_swap,
            remove_outcomes,
            backup_codes_are_looked_up_one_at_a_time,
            every_factor_is_spent_exactly_once_with_the_write,
            a_spent_factor_resets_failures_and_remember_marks_the_session,
            two_factor_attempts_are_reserved_and_released,
            login_counts_decay_and_known_addresses_keep_the_owner_in,
            login_attempts_block_accounts_and_addresses,
            email_codes_replace_each_other,
            token_use_is_recorded_when_stale,
            admin_calls,
            tokens_list_by_the_current_values_creation,
            conditional_writes_answer_the_first_outcome_that_applies,
            unknown_users_in_the_other_writes,
            email_logins_match_any_stored_address_oldest_user_first,
            rules_decided_in_contract_0_9,
            superseded_values_and_their_family,
            write_events_are_stored_only_with_their_write,
            events_of_logout_revocation_and_refusals,
            audit_pages_and_pruning,

        ]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_emit {
    (tests ($make:expr) [$($case:ident),* $(,)?]) => {
        $(
            #[test]
            fn $case() {
                let store = $make;
                $crate::conformance::$case(&store);
            }
        )*
    };
    (list () [$($case:ident),* $(,)?]) => {
        /// Every case, by name.
        pub const CASES: &[(&str, fn(&dyn Backend))] = &[$((stringify!($case), $case)),*];
    };
}
