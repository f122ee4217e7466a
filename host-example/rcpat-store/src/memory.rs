//! In-memory storage: one mutex around all state, so every operation is atomic.

use std::collections::HashMap;
use std::sync::Mutex;

use rcpat::audit_route::{AUDIT_PERMISSION, AUDIT_PERMISSION_DEFAULT_ROLES};
use rcpat::model::*;
use rcpat::storage::rules::{
    KeyLease, LoginCount, ProofSteps, admit_login, factor_available, keep_reply, kept_reply,
    known_since, release_key, remember_address, reply_already_kept, reserve_attempt, reserve_key,
    spend_factor, spend_proof,
};

use crate::error::{Error, Result};
use crate::{
    Admin, ExpiringToken, HostResult, NewUser, PAT_PERMISSION, PAT_PERMISSION_DEFAULT_ROLES,
    Storage, TokenRecord, UserSummary,
};

#[derive(Clone)]
struct Entry {
    record: TokenRecord,
    authorized_hash: Option<String>,
    authorized_until: Option<TimestampMs>,
    last_used_at: Option<TimestampMs>,
    /// When the owner was told this value expires soon (`tokens notify-expiring`).
    expiry_notified_at: Option<TimestampMs>,
    /// Values this token had, newest first (hash, when superseded): reuse detection.
    superseded: Vec<(String, TimestampMs)>,
}

impl Entry {
    /// A token as stored: no remembered client, unused.
    fn new(record: TokenRecord) -> Self {
        Entry {
            record,
            authorized_hash: None,
            authorized_until: None,
            last_used_at: None,
            expiry_notified_at: None,
            superseded: Vec::new(),
        }
    }
}

struct MemUser {
    user: User,
    email: Option<String>,
    tokens: Vec<Entry>,
    /// Per-user permission grants (true) and revocations (false).
    overrides: HashMap<String, bool>,
    /// Replies kept for `Idempotency-Key` retries, and keys reserved.
    replies: Vec<IdempotentWrite>,
    leases: Vec<KeyLease>,
    /// Hashed backup codes (while TOTP is enrolled).
    backup: BackupCodes,
    /// The user's audit events, oldest first (stored by the writes that
    /// made them), each with its count (failed logins aggregate per minute).
    audit: Vec<MemEvent>,
    /// The store's host id (see `State::host_id`).
    host_id: HostId,
}

#[derive(Default)]
struct State {
    users: HashMap<String, MemUser>,
    permissions: HashMap<String, Vec<String>>,
    /// Failed logins by account and by address.
    account_logins: HashMap<String, LoginCount>,
    address_logins: HashMap<String, LoginCount>,
    /// Addresses that logged in successfully, by account (newest last).
    known_addresses: HashMap<String, Vec<(String, TimestampMs)>>,
    /// Audit events of accounts that are no user (logins naming nobody).
    other_audit: Vec<MemEvent>,
    /// The id stamped on the events this store stores (`set_host_id`),
    /// shared with each user's entry, whose writes store their own events.
    host_id: HostId,
}

type HostId = std::sync::Arc<Mutex<String>>;

/// A stored audit event: its count, the host that stored it, and its place
/// in the order of storing (which breaks ties of time, as the SQL stores'
/// row ids do).
struct MemEvent {
    event: AuditEvent,
    count: u32,
    host_id: String,
    seq: u64,
}

/// The order of storing, across every store in the process.
static AUDIT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct MemoryStorage {
    state: Mutex<State>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        let mut state = State::default();
        state.permissions.insert(
            PAT_PERMISSION.into(),
            PAT_PERMISSION_DEFAULT_ROLES
                .iter()
                .map(|r| r.to_string())
                .collect(),
        );
        state.permissions.insert(
            AUDIT_PERMISSION.into(),
            AUDIT_PERMISSION_DEFAULT_ROLES
                .iter()
                .map(|r| r.to_string())
                .collect(),
        );
        MemoryStorage {
            state: Mutex::new(state),
        }
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T, E>(&self, f: impl FnOnce(&mut State) -> Result<T, E>) -> Result<T, E> {
        // A panic elsewhere must not wedge storage: the state is only mutated
        // after every check has passed, so a poisoned lock holds whole data.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

fn user_mut<'a>(s: &'a mut State, id: &str) -> Result<&'a mut MemUser> {
    s.users
        .get_mut(id)
        .ok_or_else(|| Error::NoSuchUser(id.into()))
}

/// Roles as the other backends return them: sorted, each once.
fn sorted_roles(roles: &[String]) -> Vec<String> {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    roles
}

fn pat(e: &Entry) -> PersonalAccessToken {
    PersonalAccessToken {
        name: e.record.name.clone().unwrap_or_default(),
        hashed_token: e.record.hashed_token.clone(),
        last_token_part: e.record.last_token_part.clone(),
        created_at: e.record.created_at,
        bypass_two_factor: e.record.bypass_two_factor,
        last_used_at: e.last_used_at,
        expires_at: e.record.expires_at,
    }
}

/// The PAT of `u` that keeps `hashed_token` as a superseded value at or
/// after `not_before`: its index and when it was superseded.
fn superseded_in(
    u: &MemUser,
    hashed_token: &str,
    not_before: TimestampMs,
) -> Option<(usize, TimestampMs)> {
    u.tokens.iter().enumerate().find_map(|(i, e)| {
        let kept = e
            .superseded
            .iter()
            .find(|(h, at)| h == hashed_token && *at >= not_before)?;
        (e.record.kind == TokenKind::PersonalAccessToken).then_some((i, kept.1))
    })
}

fn is_pat_named(e: &Entry, name: &str) -> bool {
    e.record.kind == TokenKind::PersonalAccessToken && e.record.name.as_deref() == Some(name)
}

/// A user's share of a write's proof checks (`rules::spend_proof` runs
/// them in the contract's order).
impl ProofSteps for MemUser {
    type Error = std::convert::Infallible;
    fn reply_kept(&mut self, reply: &IdempotentWrite) -> Result<bool, Self::Error> {
        Ok(reply_already_kept(&self.replies, reply))
    }
    fn session_alive(&mut self, hashed_token: &str) -> Result<bool, Self::Error> {
        Ok(self
            .tokens
            .iter()
            .any(|e| e.record.hashed_token == hashed_token))
    }
    fn spend_factor(&mut self, used: &FactorUse) -> Result<bool, Self::Error> {
        let available = factor_available(&self.user, &self.backup, used);
        if available {
            spend_factor(&mut self.user, &mut self.backup, used);
        }
        Ok(available)
    }
    fn remember(&mut self, grant: &RememberGrant) -> Result<(), Self::Error> {
        if let Some(e) = self
            .tokens
            .iter_mut()
            .find(|e| e.record.hashed_token == grant.hashed_login_token)
        {
            e.authorized_hash = Some(grant.fingerprint.clone());
            e.authorized_until = Some(grant.until);
        }
        Ok(())
    }
    fn keep_reply(&mut self, reply: &IdempotentWrite) -> Result<(), Self::Error> {
        keep_reply(&mut self.replies, reply);
        release_key(&mut self.leases, &reply.presented_hashed_token, &reply.key);
        Ok(())
    }
    fn record_events(&mut self, events: &[AuditEvent]) -> Result<(), Self::Error> {
        for e in events {
            record_event(&mut self.audit, e, &self.host_id);
        }
        Ok(())
    }
}

/// Appends `e`, or for an aggregated kind counts it on the row of its
/// (account, address, kind, minute) if there is one.
fn record_event(audit: &mut Vec<MemEvent>, e: &AuditEvent, host_id: &HostId) {
    if e.kind.aggregated() {
        let minute = e.at / 60_000;
        if let Some(row) = audit.iter_mut().find(|r| {
            r.event.kind == e.kind
                && r.event.account == e.account
                && r.event.client_address == e.client_address
                && r.event.at / 60_000 == minute
        }) {
            row.count += 1;
            return;
        }
    }
    audit.push(MemEvent {
        event: e.clone(),
        count: 1,
        host_id: host_id.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        seq: AUDIT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    });
}

/// Checks and spends `proof`; `Some(outcome)` (nothing changed) if refused.
fn spend(u: &mut MemUser, proof: &FactorProof) -> Option<WriteOutcome> {
    let Ok(refused) = spend_proof(u, proof);
    refused
}

impl State {
    /// A per-user grant or revocation first, otherwise through a role.
    fn permitted(&self, u: &MemUser, permission: &str) -> bool {
        if let Some(grant) = u.overrides.get(permission) {
            return *grant;
        }
        let roles = self
            .permissions
            .get(permission)
            .map(Vec::as_slice)
            .unwrap_or_default();
        u.user.roles.iter().any(|r| roles.contains(r))
    }
}

impl Storage for MemoryStorage {
    fn authenticate(
        &self,
        user_id: &str,
        hashed_token: &str,
        permission: Option<&str>,
    ) -> HostResult<Option<Session>> {
        self.with(|s| {
            let Some(u) = s.users.get(user_id) else {
                return Ok(None);
            };
            let permitted = permission.is_some_and(|p| s.permitted(u, p));
            Ok(u.tokens
                .iter()
                .find(|e| e.record.hashed_token == hashed_token)
                .map(|e| Session {
                    user: u.user.clone(),
                    token: LoginToken {
                        hashed_token: e.record.hashed_token.clone(),
                        kind: e.record.kind,
                        name: e.record.name.clone(),
                        created_at: e.record.created_at,
                        bypass_two_factor: e.record.bypass_two_factor,
                        two_factor_authorized_hash: e.authorized_hash.clone(),
                        two_factor_authorized_until: e.authorized_until,
                        last_used_at: e.last_used_at,
                        expires_at: e.record.expires_at,
                    },
                    permitted,
                }))
        })
    }

    fn find_user_for_login(&self, identifier: &LoginIdentifier) -> HostResult<Option<User>> {
        self.with(|s| {
            Ok(s.users
                .values()
                .filter(|u| match identifier {
                    LoginIdentifier::Username(n) => &u.user.username == n,
                    LoginIdentifier::Email(e) => u
                        .email
                        .as_deref()
                        .is_some_and(|m| m.eq_ignore_ascii_case(e)),
                })
                // The oldest, as the other backends (users are in a map).
                .min_by(|a, b| {
                    (a.user.created_at, &a.user.id).cmp(&(b.user.created_at, &b.user.id))
                })
                .map(|u| u.user.clone()))
        })
    }

    fn insert_login_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        created_at: TimestampMs,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.with(|s| {
            let Some(u) = s.users.get_mut(user_id) else {
                return Ok(WriteOutcome::NotFound);
            };
            if let Some(refused) = spend(u, proof) {
                return Ok(refused);
            }
            u.tokens
                .push(Entry::new(TokenRecord::login(hashed_token, created_at)));
            Ok(WriteOutcome::Done)
        })
    }

    fn find_backup_code(&self, user_id: &str, hashed_code: &str) -> HostResult<BackupCodeState> {
        self.with(|s| {
            Ok(s.users
                .get(user_id)
                .map_or(BackupCodeState::Unknown, |u| u.backup.state(hashed_code)))
        })
    }

    fn list_personal_access_tokens(&self, user_id: &str) -> HostResult<Vec<PersonalAccessToken>> {
        self.with(|s| {
            let mut tokens: Vec<PersonalAccessToken> =
                s.users.get(user_id).map_or_else(Vec::new, |u| {
                    u.tokens
                        .iter()
                        .filter(|e| e.record.kind == TokenKind::PersonalAccessToken)
                        .map(pat)
                        .collect()
                });
            // By the current value's creation; a stable sort keeps first
            // creation order for equal times (tokens keep their slot).
            tokens.sort_by_key(|t| t.created_at);
            Ok(tokens)
        })
    }

    fn find_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
    ) -> HostResult<Option<PersonalAccessToken>> {
        self.with(|s| {
            Ok(s.users
                .get(user_id)
                .and_then(|u| u.tokens.iter().find(|e| is_pat_named(e, name)).map(pat)))
        })
    }

    fn insert_personal_access_token(
        &self,
        user_id: &str,
        token: &PersonalAccessToken,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.with(|s| {
            let Some(u) = s.users.get_mut(user_id) else {
                return Ok(WriteOutcome::NotFound);
            };
            if u.tokens.iter().any(|e| is_pat_named(e, &token.name)) {
                return Ok(WriteOutcome::NameTaken);
            }
            if let Some(refused) = spend(u, proof) {
                return Ok(refused);
            }
            u.tokens.push(Entry {
                last_used_at: token.last_used_at,
                ..Entry::new(TokenRecord::personal_access_token(token))
            });
            Ok(WriteOutcome::Done)
        })
    }

    fn replace_personal_access_token(
        &self,
        user_id: &str,
        expected_hashed_token: &str,
        replacement: &PersonalAccessToken,
        proof: &FactorProof,
        keep_superseded: u32,
    ) -> HostResult<WriteOutcome> {
        self.with(|s| {
            let Some(u) = s.users.get_mut(user_id) else {
                return Ok(WriteOutcome::NotFound);
            };
            let Some(i) = u.tokens.iter().position(|e| {
                is_pat_named(e, &replacement.name) && e.record.hashed_token == expected_hashed_token
            }) else {
                return Ok(WriteOutcome::NotFound);
            };
            if let Some(refused) = spend(u, proof) {
                return Ok(refused);
            }
            let mut superseded = std::mem::take(&mut u.tokens[i].superseded);
            superseded.insert(
                0,
                (expected_hashed_token.to_string(), replacement.created_at),
            );
            superseded.truncate(keep_superseded as usize);
            u.tokens[i] = Entry {
                last_used_at: replacement.last_used_at,
                superseded,
                ..Entry::new(TokenRecord::personal_access_token(replacement))
            };
            Ok(WriteOutcome::Done)
        })
    }

    fn remove_personal_access_token(
        &self,
        user_id: &str,
        name: &str,
        proof: &FactorProof,
    ) -> HostResult<WriteOutcome> {
        self.with(|s| {
            let Some(u) = s.users.get_mut(user_id) else {
                return Ok(WriteOutcome::NotFound);
            };
            if !u.tokens.iter().any(|e| is_pat_named(e, name)) {
                return Ok(WriteOutcome::NotFound);
            }
            if let Some(refused) = spend(u, proof) {
                return Ok(refused);
            }
            u.tokens.retain(|e| !is_pat_named(e, name));
            Ok(WriteOutcome::Done)
        })
    }

    fn find_superseded_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        not_before: TimestampMs,
    ) -> HostResult<Option<SupersededToken>> {
        self.with(|s| {
            Ok(s.users.get(user_id).and_then(|u| {
                let (i, superseded_at) = superseded_in(u, hashed_token, not_before)?;
                Some(SupersededToken {
                    name: u.tokens[i].record.name.clone().unwrap_or_default(),
                    superseded_at,
                })
            }))
        })
    }

    fn revoke_superseded_family(
        &self,
        user_id: &str,
        hashed_token: &str,
        not_before: TimestampMs,
        events: &[AuditEvent],
    ) -> HostResult<Option<RevokedToken>> {
        self.with(|s| {
            let Some(u) = s.users.get_mut(user_id) else {
                return Ok(None);
            };
            let Some((i, _)) = superseded_in(u, hashed_token, not_before) else {
                return Ok(None);
            };
            let removed = u.tokens.remove(i);
            for e in events {
                record_event(&mut u.audit, e, &u.host_id);
            }
            Ok(Some(RevokedToken {
                name: removed.record.name.unwrap_or_default(),
                verified_emails: u.user.verified_emails.clone(),
            }))
        })
    }

    fn reserve_two_factor_attempt(
        &self,
        user_id: &str,
        at: TimestampMs,
        window_start: TimestampMs,
        max_failed: u32,
        max_email_code_attempts: Option<u32>,
    ) -> HostResult<AttemptReservation> {
        self.with(|s| {
            let u = user_mut(s, user_id)?;
            let email = max_email_code_attempts.and(u.user.email_code.as_mut());
            let r = reserve_attempt(
                u.user.failures,
                email.as_ref().map(|c| c.attempts),
                at,
                window_start,
                max_failed,
                max_email_code_attempts,
            );
            if r.granted {
                u.user.failures = r.failures;
                if let Some(c) = email {
                    c.attempts = r.email_code_attempts;
                }
            }
            Ok(r)
        })
    }

    fn release_two_factor_attempt(
        &self,
        user_id: &str,
        email_code_attempt: bool,
    ) -> HostResult<()> {
        self.with(|s| {
            let u = user_mut(s, user_id)?;
            u.user.failures.count = u.user.failures.count.saturating_sub(1);
            if email_code_attempt && let Some(c) = u.user.email_code.as_mut() {
                c.attempts = c.attempts.saturating_sub(1);
            }
            Ok(())
        })
    }

    fn reserve_login_attempt(
        &self,
        account: &str,
        address: &str,
        at: TimestampMs,
        limits: &LoginLimits,
    ) -> HostResult<LoginAdmission> {
        self.with(|s| {
            let acc = s.account_logins.get(account).copied().unwrap_or_default();
            let adr = s.address_logins.get(address).copied().unwrap_or_default();
            let known = s
                .known_addresses
                .get(account)
                .and_then(|k| known_since(k, address));
            let (acc, adr) = match admit_login(acc, adr, known, at, limits) {
                Ok(next) => next,
                Err(refused) => return Ok(refused),
            };
            s.account_logins.insert(account.to_string(), acc);
            s.address_logins.insert(address.to_string(), adr);
            Ok(LoginAdmission::Admitted)
        })
    }

    fn login_succeeded(&self, account: &str, address: &str, at: TimestampMs) -> HostResult<()> {
        self.with(|s| {
            s.account_logins.remove(account);
            if let Some(c) = s.address_logins.get_mut(address) {
                c.count = c.count.saturating_sub(1);
            }
            remember_address(
                s.known_addresses.entry(account.to_string()).or_default(),
                address,
                at,
            );
            Ok(())
        })
    }

    fn remove_login_token(
        &self,
        user_id: &str,
        hashed_token: &str,
        events: &[AuditEvent],
    ) -> HostResult<WriteOutcome> {
        self.with(|s| {
            let Some(u) = s.users.get_mut(user_id) else {
                return Ok(WriteOutcome::NotFound);
            };
            let before = u.tokens.len();
            u.tokens.retain(|e| {
                !(e.record.kind == TokenKind::Login && e.record.hashed_token == hashed_token)
            });
            if u.tokens.len() == before {
                return Ok(WriteOutcome::NotFound);
            }
            for e in events {
                record_event(&mut u.audit, e, &u.host_id);
            }
            Ok(WriteOutcome::Done)
        })
    }

    fn record_audit_events(&self, events: &[AuditEvent]) -> HostResult<()> {
        self.with(|s| {
            for e in events {
                match s.users.get_mut(&e.account) {
                    Some(u) => record_event(&mut u.audit, e, &u.host_id),
                    None => record_event(&mut s.other_audit, e, &s.host_id),
                }
            }
            Ok(())
        })
    }

    fn list_audit_events(
        &self,
        filter: &AuditFilter,
        offset: u32,
        count: u32,
    ) -> HostResult<AuditPage> {
        self.with(|s| {
            let lists = s.users.values().map(|u| &u.audit);
            let mut found: Vec<&MemEvent> = lists
                .chain(std::iter::once(&s.other_audit))
                .flatten()
                .filter(|r| filter.admits(&r.event))
                .collect();
            found.sort_by_key(|r| std::cmp::Reverse((r.event.at, r.seq)));
            Ok(AuditPage {
                total: u32::try_from(found.len()).unwrap_or(u32::MAX),
                events: found
                    .into_iter()
                    .skip(offset as usize)
                    .take(count as usize)
                    .map(|r| StoredAuditEvent {
                        event: r.event.clone(),
                        host_id: r.host_id.clone(),
                        count: r.count,
                    })
                    .collect(),
            })
        })
    }

    fn store_email_code(&self, user_id: &str, code: &EmailCode) -> HostResult<()> {
        self.with(|s| {
            user_mut(s, user_id)?.user.email_code = Some(code.clone());
            Ok(())
        })
    }
    fn record_token_use(
        &self,
        user_id: &str,
        hashed_token: &str,
        at: TimestampMs,
        stale_before: TimestampMs,
    ) -> HostResult<()> {
        self.with(|s| {
            let entry = s.users.get_mut(user_id).and_then(|u| {
                u.tokens.iter_mut().find(|e| {
                    e.record.kind == TokenKind::PersonalAccessToken
                        && e.record.hashed_token == hashed_token
                })
            });
            if let Some(e) = entry
                && e.last_used_at.is_none_or(|t| t < stale_before)
            {
                e.last_used_at = Some(at);
            }
            Ok(())
        })
    }

    fn find_idempotent_reply(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
        not_before: TimestampMs,
    ) -> HostResult<Option<IdempotentReply>> {
        self.with(|s| {
            Ok(s.users
                .get(user_id)
                .and_then(|u| kept_reply(&u.replies, presented_hashed_token, key, not_before)))
        })
    }

    fn reserve_idempotency_key(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
        at: TimestampMs,
        lease_until: TimestampMs,
        not_before: TimestampMs,
    ) -> HostResult<KeyReservation> {
        self.with(|s| {
            let u = s
                .users
                .get_mut(user_id)
                .ok_or_else(|| Error::NoSuchUser(user_id.into()))?;
            Ok(reserve_key(
                &u.replies,
                &mut u.leases,
                presented_hashed_token,
                key,
                at,
                lease_until,
                not_before,
            ))
        })
    }

    fn release_idempotency_key(
        &self,
        user_id: &str,
        presented_hashed_token: &str,
        key: &str,
    ) -> HostResult<()> {
        self.with(|s| {
            if let Some(u) = s.users.get_mut(user_id) {
                release_key(&mut u.leases, presented_hashed_token, key);
            }
            Ok(())
        })
    }
}

impl Admin for MemoryStorage {
    fn has_permission(&self, user_id: &str, permission: &str) -> Result<bool> {
        self.with(|s| {
            Ok(s.users
                .get(user_id)
                .is_some_and(|u| s.permitted(u, permission)))
        })
    }

    fn create_user(&self, n: &NewUser) -> Result<()> {
        self.with(|s| {
            if s.users.contains_key(&n.id)
                || s.users.values().any(|u| u.user.username == n.username)
            {
                return Err(Error::UserExists(n.username.clone()));
            }
            let verified_emails = match (&n.email, n.email_verified) {
                (Some(e), true) => vec![e.clone()],
                _ => vec![],
            };
            s.users.insert(
                n.id.clone(),
                MemUser {
                    user: User {
                        id: n.id.clone(),
                        username: n.username.clone(),
                        name: n.name.clone(),
                        roles: sorted_roles(&n.roles),
                        created_at: n.created_at,
                        verified_emails,
                        password_bcrypt: n.password_bcrypt.clone(),
                        totp: None,
                        email_two_factor: false,
                        email_code: None,
                        failures: FailureCount::default(),
                    },
                    email: n.email.clone(),
                    tokens: Vec::new(),
                    audit: Vec::new(),
                    host_id: s.host_id.clone(),
                    overrides: HashMap::new(),
                    replies: Vec::new(),
                    leases: Vec::new(),
                    backup: BackupCodes::default(),
                },
            );
            Ok(())
        })
    }

    fn find_user_id(&self, username: &str) -> Result<Option<String>> {
        self.with(|s| {
            Ok(s.users
                .values()
                .find(|u| u.user.username == username)
                .map(|u| u.user.id.clone()))
        })
    }

    fn list_users(&self) -> Result<Vec<UserSummary>> {
        self.with(|s| {
            let mut users: Vec<UserSummary> = s
                .users
                .values()
                .map(|u| UserSummary {
                    id: u.user.id.clone(),
                    username: u.user.username.clone(),
                    email: u.email.clone(),
                    roles: u.user.roles.clone(),
                    totp: u.user.totp.is_some(),
                    email_two_factor: u.user.email_two_factor,
                })
                .collect();
            users.sort_by(|a, b| a.username.cmp(&b.username));
            Ok(users)
        })
    }

    fn set_totp(&self, user_id: &str, totp: Option<(&TotpEnrolment, &BackupCodes)>) -> Result<()> {
        self.with(|s| {
            let u = user_mut(s, user_id)?;
            u.user.totp = totp.map(|(t, backup)| TotpEnrolment {
                has_backup_codes: !backup.is_empty(),
                ..t.clone()
            });
            u.backup = totp.map(|(_, b)| b.clone()).unwrap_or_default();
            Ok(())
        })
    }

    fn set_email_two_factor(&self, user_id: &str, enabled: bool) -> Result<()> {
        self.with(|s| {
            user_mut(s, user_id)?.user.email_two_factor = enabled;
            Ok(())
        })
    }

    fn set_permission_roles(&self, permission: &str, roles: &[String]) -> Result<()> {
        self.with(|s| {
            s.permissions.insert(permission.to_string(), roles.to_vec());
            Ok(())
        })
    }

    fn set_user_roles(&self, user_id: &str, roles: &[String]) -> Result<()> {
        self.with(|s| {
            user_mut(s, user_id)?.user.roles = sorted_roles(roles);
            Ok(())
        })
    }

    fn set_user_permission(
        &self,
        user_id: &str,
        permission: &str,
        grant: Option<bool>,
    ) -> Result<()> {
        self.with(|s| {
            let u = user_mut(s, user_id)?;
            match grant {
                Some(g) => u.overrides.insert(permission.to_string(), g),
                None => u.overrides.remove(permission),
            };
            Ok(())
        })
    }

    fn add_token(&self, user_id: &str, token: &TokenRecord) -> Result<()> {
        token.check()?;
        self.with(|s| {
            let u = user_mut(s, user_id)?;
            if let Some(name) = &token.name
                && u.tokens.iter().any(|e| is_pat_named(e, name))
            {
                return Err(Error::invalid(format!("a token named {name} exists")));
            }
            u.tokens.push(Entry::new(token.clone()));
            Ok(())
        })
    }

    fn set_host_id(&self, host_id: &str) -> Result<()> {
        self.with(|s| {
            *s.host_id.lock().unwrap_or_else(|p| p.into_inner()) = host_id.to_string();
            Ok(())
        })
    }

    fn prune_audit_events(&self, before: TimestampMs, _batch: u32) -> Result<u64> {
        self.with(|s| {
            let mut removed = 0;
            let lists = s.users.values_mut().map(|u| &mut u.audit);
            for list in lists.chain(std::iter::once(&mut s.other_audit)) {
                let len = list.len();
                list.retain(|r| r.event.at >= before);
                removed += (len - list.len()) as u64;
            }
            Ok(removed)
        })
    }

    fn token_hashes_named(&self, user_id: &str, name: &str) -> Result<Vec<String>> {
        self.with(|s| {
            Ok(s.users.get(user_id).map_or_else(Vec::new, |u| {
                u.tokens
                    .iter()
                    .filter(|e| is_pat_named(e, name))
                    .map(|e| e.record.hashed_token.clone())
                    .collect()
            }))
        })
    }

    fn expiring_tokens(&self, now: TimestampMs, until: TimestampMs) -> Result<Vec<ExpiringToken>> {
        self.with(|s| {
            let mut found: Vec<ExpiringToken> = s
                .users
                .values()
                .flat_map(|u| {
                    u.tokens.iter().filter_map(move |e| {
                        let at = e.record.expires_at?;
                        (e.record.kind == TokenKind::PersonalAccessToken
                            && at > now
                            && at <= until
                            && e.expiry_notified_at.is_none())
                        .then(|| ExpiringToken {
                            user_id: u.user.id.clone(),
                            username: u.user.username.clone(),
                            email: u.user.verified_emails.first().cloned(),
                            name: e.record.name.clone().unwrap_or_default(),
                            hashed_token: e.record.hashed_token.clone(),
                            expires_at: at,
                        })
                    })
                })
                .collect();
            found.sort_by(|a, b| {
                (a.expires_at, &a.user_id, &a.name).cmp(&(b.expires_at, &b.user_id, &b.name))
            });
            Ok(found)
        })
    }

    fn claim_expiry_notice(
        &self,
        user_id: &str,
        hashed_token: &str,
        at: TimestampMs,
    ) -> Result<bool> {
        self.with(|s| {
            let entry = s.users.get_mut(user_id).and_then(|u| {
                u.tokens
                    .iter_mut()
                    .find(|e| e.record.hashed_token == hashed_token)
            });
            Ok(match entry {
                Some(e) if e.expiry_notified_at.is_none() => {
                    e.expiry_notified_at = Some(at);
                    true
                }
                _ => false,
            })
        })
    }

    fn release_expiry_notice(&self, user_id: &str, hashed_token: &str) -> Result<()> {
        self.with(|s| {
            if let Some(e) = s.users.get_mut(user_id).and_then(|u| {
                u.tokens
                    .iter_mut()
                    .find(|e| e.record.hashed_token == hashed_token)
            }) {
                e.expiry_notified_at = None;
            }
            Ok(())
        })
    }
}
