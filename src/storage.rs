//! The storage contract: the component's `storage` import as one trait.
//!
//! Inside the component it is the WIT import (`component.rs`); a host
//! implements it directly for each backend (SQLite, memory, PostgreSQL...),
//! which is how the native baseline and the tests run the very same logic.
//! Each method is one atomic operation: it happens completely or not at all.
//! The semantics of each call are documented once, in `wit/world.wit`.
//!
//! [`rules`] holds the arithmetic every backend applies inside its
//! transaction, so no backend re-derives a limit.

use std::error::Error;
use std::fmt;

use crate::model::*;

/// A failed host call. Its text is for the host's logs: the component maps
/// every `HostError` to one fixed reply and never shows it to a client.
pub struct HostError(Box<dyn Error + Send + Sync>);

impl HostError {
    /// An error with only a message (the component's view of a failed import).
    pub fn msg(message: impl Into<String>) -> Self {
        HostError(message.into().into())
    }

    /// The underlying error, for hosts that log or classify it.
    pub fn source_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// Any error converts, so backends use `?` on their own typed errors.
/// (`HostError` itself does not implement `Error`, or this would overlap
/// with `From<T> for T`; the same trick as `anyhow`.)
impl<E: Error + Send + Sync + 'static> From<E> for HostError {
    fn from(e: E) -> Self {
        HostError(Box::new(e))
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

pub type HostResult<T> = Result<T, HostError>;

/// The storage calls, listed once: each call's name, its name in the WIT,
/// its parameters and its answer (types in brackets, model types by their
/// bare names, so a callback can match them token by token). Every layer
/// that only forwards is generated from this list: the [`Storage`] trait
/// itself, the fault injector (`rcpat-store`) and the wasmtime host's WIT
/// imports (`rcpat-wasmtime`). A callback is a macro taking the list:
/// `storage_calls!(my_macro)` expands to `my_macro! { name "wit-name"
/// (arg: [Type], ...) -> [Answer]; ... }`.
#[macro_export]
macro_rules! storage_calls {
    ($($callback:tt)*) => {
        $($callback)*! {
            authenticate "authenticate"
                (user_id: [&str], hashed_token: [&str], permission: [Option<&str>])
                -> [Option<Session>];
            find_user_for_login "find-user-for-login"
                (identifier: [&LoginIdentifier]) -> [Option<User>];
            insert_login_token "insert-login-token"
                (user_id: [&str], hashed_token: [&str], created_at: [TimestampMs], proof: [&FactorProof])
                -> [WriteOutcome];
            find_backup_code "find-backup-code"
                (user_id: [&str], hashed_code: [&str]) -> [BackupCodeState];
            list_personal_access_tokens "list-personal-access-tokens"
                (user_id: [&str]) -> [Vec<PersonalAccessToken>];
            find_personal_access_token "find-personal-access-token"
                (user_id: [&str], name: [&str]) -> [Option<PersonalAccessToken>];
            insert_personal_access_token "insert-personal-access-token"
                (user_id: [&str], token: [&PersonalAccessToken], proof: [&FactorProof])
                -> [WriteOutcome];
            replace_personal_access_token "replace-personal-access-token"
                (user_id: [&str], expected_hashed_token: [&str], replacement: [&PersonalAccessToken], proof: [&FactorProof], keep_superseded: [u32])
                -> [WriteOutcome];
            remove_personal_access_token "remove-personal-access-token"
                (user_id: [&str], name: [&str], proof: [&FactorProof]) -> [WriteOutcome];
            find_superseded_token "find-superseded-token"
                (user_id: [&str], hashed_token: [&str], not_before: [TimestampMs])
                -> [Option<SupersededToken>];
            revoke_superseded_family "revoke-superseded-family"
                (user_id: [&str], hashed_token: [&str], not_before: [TimestampMs], events: [&[AuditEvent]])
                -> [Option<RevokedToken>];
            record_audit_events "record-audit-events"
                (events: [&[AuditEvent]]) -> [()];
            list_audit_events "list-audit-events"
                (filter: [&AuditFilter], offset: [u32], count: [u32]) -> [AuditPage];
            reserve_two_factor_attempt "reserve-two-factor-attempt"
                (user_id: [&str], at: [TimestampMs], window_start: [TimestampMs], max_failed: [u32], max_email_code_attempts: [Option<u32>])
                -> [AttemptReservation];
            release_two_factor_attempt "release-two-factor-attempt"
                (user_id: [&str], email_code_attempt: [bool]) -> [()];
            reserve_login_attempt "reserve-login-attempt"
                (account: [&str], address: [&str], at: [TimestampMs], limits: [&LoginLimits])
                -> [LoginAdmission];
            login_succeeded "login-succeeded"
                (account: [&str], address: [&str], at: [TimestampMs]) -> [()];
            remove_login_token "remove-login-token"
                (user_id: [&str], hashed_token: [&str], events: [&[AuditEvent]]) -> [WriteOutcome];
            store_email_code "store-email-code"
                (user_id: [&str], code: [&EmailCode]) -> [()];
            record_token_use "record-token-use"
                (user_id: [&str], hashed_token: [&str], at: [TimestampMs], stale_before: [TimestampMs])
                -> [()];
            find_idempotent_reply "find-idempotent-reply"
                (user_id: [&str], presented_hashed_token: [&str], key: [&str], not_before: [TimestampMs])
                -> [Option<IdempotentReply>];
            reserve_idempotency_key "reserve-idempotency-key"
                (user_id: [&str], presented_hashed_token: [&str], key: [&str], at: [TimestampMs], lease_until: [TimestampMs], not_before: [TimestampMs])
                -> [KeyReservation];
            release_idempotency_key "release-idempotency-key"
                (user_id: [&str], presented_hashed_token: [&str], key: [&str]) -> [()];
        }
    };
}

/// A storage call's answer converted between the model's types and a WIT
/// binding's (element by element), for the adapters generated from
/// [`storage_calls!`] on both sides of the WIT (the guest's in
/// `src/component.rs`, the wasmtime host's in `rcpat-wasmtime`).
#[doc(hidden)]
#[macro_export]
macro_rules! __convert_answer {
    ([()] $v:ident) => {
        $v
    };
    ([Option<$t:ident>] $v:ident) => {
        $v.map(Into::into)
    };
    ([Vec<$t:ident>] $v:ident) => {
        $v.into_iter().map(Into::into).collect()
    };
    ([$t:ident] $v:ident) => {
        $v.into()
    };
}

macro_rules! storage_trait {
    ($($name:ident $wit:literal ($($arg:ident: [$($ty:tt)*]),*) -> [$($ret:tt)*];)*) => {
        /// The component's `storage` import (`wit/world.wit`, interface
        /// `storage`, where each call's semantics are specified), one method
        /// per call of [`storage_calls!`].
        pub trait Storage: Send + Sync {
            $(fn $name(&self, $($arg: $($ty)*),*) -> HostResult<$($ret)*>;)*
        }
    };
}

storage_calls!(storage_trait);

pub mod rules {
    //! The arithmetic of the reservation calls, one place for every backend:
    //! a backend loads the stored counts, asks these functions, and stores
    //! what they return, all in one transaction.

    use crate::model::*;

    /// One failed-login count (per account or per address).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct LoginCount {
        pub count: u32,
        pub last_at: TimestampMs,
    }

    impl LoginCount {
        /// The count as it stands at `at`: zero once its last failure is a
        /// block time old, whether or not it reached the limit (a count
        /// below the limit decays too, so failures spread over days never
        /// add up to a block).
        fn current(self, at: TimestampMs, max: u32, block_ms: u64) -> u32 {
            if max > 0 && at >= self.last_at.saturating_add(block_ms) {
                0
            } else {
                self.count
            }
        }

        /// Whether this count blocks a login at `at`.
        fn blocks(self, at: TimestampMs, max: u32, block_ms: u64) -> bool {
            max > 0 && self.current(at, max, block_ms) >= max
        }

        /// The count after one more attempt at `at`.
        fn next(self, at: TimestampMs, max: u32, block_ms: u64) -> Self {
            LoginCount {
                count: self.current(at, max, block_ms).saturating_add(1),
                last_at: at,
            }
        }
    }

    /// The rule of `reserve-login-attempt` (`wit/world.wit`), one place for every
    /// backend: from the stored account and address counts, the refusal, or the
    /// two counts to store.
    ///
    /// `known_since`: when `login-succeeded` last recorded this address for
    /// this account, if ever; the address is known while that is less than
    /// `known-address-ms` ago.
    pub fn admit_login(
        account: LoginCount,
        address: LoginCount,
        known_since: Option<TimestampMs>,
        at: TimestampMs,
        l: &LoginLimits,
    ) -> Result<(LoginCount, LoginCount), LoginAdmission> {
        let known = known_since.is_some_and(|since| {
            l.known_address_ms > 0 && at < since.saturating_add(l.known_address_ms)
        });
        if !known && account.blocks(at, l.max_per_account, l.account_block_ms) {
            return Err(LoginAdmission::AccountBlocked);
        }
        if address.blocks(at, l.max_per_address, l.address_block_ms) {
            return Err(LoginAdmission::AddressBlocked);
        }
        Ok((
            if known {
                account
            } else {
                account.next(at, l.max_per_account, l.account_block_ms)
            },
            address.next(at, l.max_per_address, l.address_block_ms),
        ))
    }

    /// How many known addresses a store keeps per account, at least.
    pub const KNOWN_ADDRESSES_KEPT: usize = 16;

    /// `login-succeeded`'s record of a known address (for stores that hold
    /// an account's known addresses as a list, newest last): `address` is
    /// known since `at`, and only the newest `KNOWN_ADDRESSES_KEPT` stay.
    pub fn remember_address(
        known: &mut Vec<(String, TimestampMs)>,
        address: &str,
        at: TimestampMs,
    ) {
        known.retain(|(a, _)| a != address);
        known.push((address.to_string(), at));
        if known.len() > KNOWN_ADDRESSES_KEPT {
            known.remove(0);
        }
    }

    /// When `address` was last recorded as known in such a list.
    pub fn known_since(known: &[(String, TimestampMs)], address: &str) -> Option<TimestampMs> {
        known.iter().find(|(a, _)| a == address).map(|(_, at)| *at)
    }

    /// The rule of `reserve-two-factor-attempt`, one place for every backend:
    /// from the stored failure count and (when the caller asked for it and a
    /// code is outstanding) the email code's attempts, the answer. When it is
    /// granted, the backend stores `failures` and, if it passed attempts in,
    /// `email_code_attempts`.
    pub fn reserve_attempt(
        stored: FailureCount,
        email_attempts: Option<u32>,
        at: TimestampMs,
        window_start: TimestampMs,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> AttemptReservation {
        let count = if stored.last_failed_at <= window_start {
            0
        } else {
            stored.count
        };
        let email_full = email_attempts
            .zip(max_email_code_attempts)
            .is_some_and(|(a, max)| a >= max);
        if count >= max_failed || email_full {
            return AttemptReservation {
                granted: false,
                failures: FailureCount {
                    count,
                    last_failed_at: stored.last_failed_at,
                },
                email_code_attempts: email_attempts.unwrap_or(0),
            };
        }
        AttemptReservation {
            granted: true,
            failures: FailureCount {
                count: count + 1,
                last_failed_at: at,
            },
            email_code_attempts: email_attempts.map_or(0, |a| a + 1),
        }
    }

    /// A store's own steps of spending a write's factor proof, each one
    /// query or change inside the write's transaction; [`spend_proof`] runs
    /// them in the contract's order.
    pub trait ProofSteps {
        type Error;
        /// Whether a reply is already kept for `reply`'s token and key.
        fn reply_kept(&mut self, reply: &IdempotentWrite) -> Result<bool, Self::Error>;
        /// Whether the login token `hashed_token` (the request's session)
        /// is still stored for the user.
        fn session_alive(&mut self, hashed_token: &str) -> Result<bool, Self::Error>;
        /// Spends `used` if it is still unspent, resetting the failure count
        /// for a real factor; false (and nothing changed) if it was spent.
        fn spend_factor(&mut self, used: &FactorUse) -> Result<bool, Self::Error>;
        /// Marks the login token as recently authorised (`remember`).
        fn remember(&mut self, grant: &RememberGrant) -> Result<(), Self::Error>;
        /// Keeps the reply (and ends the key's lease).
        fn keep_reply(&mut self, reply: &IdempotentWrite) -> Result<(), Self::Error>;
        /// Stores the write's audit events (contract 0.11.0).
        fn record_events(&mut self, events: &[AuditEvent]) -> Result<(), Self::Error>;
    }

    /// The order of a conditional write's proof checks (`wit/world.wit`,
    /// "factor-proof"), one place for every Rust store: a kept reply, then
    /// revoked credentials, then a spent factor refuse the write with
    /// nothing changed; otherwise the factor is spent, the session
    /// remembered and the reply kept. `Some(outcome)`: refused. (The
    /// PostgreSQL store says the same in its SQL function, the Node host in
    /// `rules.mjs`.)
    pub fn spend_proof<S: ProofSteps + ?Sized>(
        steps: &mut S,
        proof: &FactorProof,
    ) -> Result<Option<WriteOutcome>, S::Error> {
        if let Some(reply) = &proof.reply
            && steps.reply_kept(reply)?
        {
            return Ok(Some(WriteOutcome::ReplyKept));
        }
        if let Some(session) = &proof.session
            && !steps.session_alive(session)?
        {
            return Ok(Some(WriteOutcome::CredentialsRevoked));
        }
        if !steps.spend_factor(&proof.used)? {
            return Ok(Some(WriteOutcome::FactorAlreadyUsed));
        }
        if let Some(grant) = &proof.remember {
            steps.remember(grant)?;
        }
        if let Some(reply) = &proof.reply {
            steps.keep_reply(reply)?;
        }
        // Last: only a write that happens records its change.
        if !proof.events.is_empty() {
            steps.record_events(&proof.events)?;
        }
        Ok(None)
    }

    /// Whether the factor `used` can still be spent on `user` (for stores
    /// that hold the user as a model value: memory, the fuzz store; the SQL
    /// backends say the same in their conditional updates).
    pub fn factor_available(user: &User, backup: &BackupCodes, used: &FactorUse) -> bool {
        match used {
            FactorUse::None | FactorUse::Password => true,
            FactorUse::TotpStep(step) => {
                user.totp.as_ref().is_some_and(|t| *step > t.last_used_step)
            }
            FactorUse::BackupCode(h) => {
                user.totp.is_some() && backup.state(h) == BackupCodeState::Unused
            }
            FactorUse::EmailCode(h) => user.email_code.as_ref().is_some_and(|c| &c.code_hash == h),
        }
    }

    /// Spends a factor that `factor_available` accepted: the TOTP step is
    /// used, the backup code marked spent, the email code gone, and any real
    /// factor resets the failure count.
    pub fn spend_factor(user: &mut User, backup: &mut BackupCodes, used: &FactorUse) {
        match used {
            FactorUse::None | FactorUse::Password => {}
            FactorUse::TotpStep(step) => {
                if let Some(t) = user.totp.as_mut() {
                    t.last_used_step = *step;
                }
            }
            FactorUse::BackupCode(h) => {
                backup.spend(h);
            }
            FactorUse::EmailCode(_) => user.email_code = None,
        }
        if *used != FactorUse::None {
            user.failures = FailureCount::default();
        }
    }

    /// Keeps `reply` among a user's kept replies (for stores that hold them
    /// as a list: memory, the fuzz store; the SQL backends delete and insert
    /// the same rows): replies older than its `forget-before` and an earlier
    /// one for the same token and key go.
    pub fn keep_reply(replies: &mut Vec<IdempotentWrite>, reply: &IdempotentWrite) {
        replies.retain(|r| {
            r.created_at >= reply.forget_before
                && (&r.presented_hashed_token, &r.key)
                    != (&reply.presented_hashed_token, &reply.key)
        });
        replies.push(reply.clone());
    }

    /// A reservation of an `Idempotency-Key` (for stores that hold them as
    /// a list beside the kept replies: memory, the fuzz store).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct KeyLease {
        pub presented_hashed_token: String,
        pub key: String,
        pub until: TimestampMs,
    }

    /// `reserve-idempotency-key` over a user's kept replies and leases.
    pub fn reserve_key(
        replies: &[IdempotentWrite],
        leases: &mut Vec<KeyLease>,
        presented_hashed_token: &str,
        key: &str,
        at: TimestampMs,
        lease_until: TimestampMs,
        not_before: TimestampMs,
    ) -> KeyReservation {
        if let Some(kept) = kept_reply(replies, presented_hashed_token, key, not_before) {
            return KeyReservation::Kept(kept);
        }
        let same =
            |l: &KeyLease| l.presented_hashed_token == presented_hashed_token && l.key == key;
        if leases.iter().any(|l| same(l) && l.until > at) {
            return KeyReservation::InFlight;
        }
        leases.retain(|l| !same(l) && l.until > at);
        leases.push(KeyLease {
            presented_hashed_token: presented_hashed_token.to_string(),
            key: key.to_string(),
            until: lease_until,
        });
        KeyReservation::Reserved
    }

    /// `release-idempotency-key` over a user's leases.
    pub fn release_key(leases: &mut Vec<KeyLease>, presented_hashed_token: &str, key: &str) {
        leases.retain(|l| !(l.presented_hashed_token == presented_hashed_token && l.key == key));
    }

    /// Whether a write whose proof carries `reply` must be refused with
    /// `reply-kept`: a reply is already kept for its token and key.
    pub fn reply_already_kept(replies: &[IdempotentWrite], reply: &IdempotentWrite) -> bool {
        kept_reply(
            replies,
            &reply.presented_hashed_token,
            &reply.key,
            reply.forget_before,
        )
        .is_some()
    }

    /// `find-idempotent-reply` over a user's kept replies.
    pub fn kept_reply(
        replies: &[IdempotentWrite],
        presented_hashed_token: &str,
        key: &str,
        not_before: TimestampMs,
    ) -> Option<IdempotentReply> {
        replies
            .iter()
            .find(|r| {
                r.presented_hashed_token == presented_hashed_token
                    && r.key == key
                    && r.created_at >= not_before
            })
            .map(|r| IdempotentReply {
                body_hash: r.body_hash.clone(),
                sealed_reply: r.sealed_reply.clone(),
            })
    }
}
