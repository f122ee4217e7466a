//! The audit trail on the host's side: the background pruner `serve` runs
//! (`--audit-retention-days`), and the `audit list` command's filter and
//! rendering. The events themselves are written by the component's
//! storage calls, inside the writes that make the changes they record.

use std::sync::Arc;
use std::time::Duration;

use rcpat::model::{AuditFilter, AuditKind, StoredAuditEvent, TimestampMs};

use crate::admin::printable;
use crate::server::App;
use crate::storage::Backend;

/// How often `serve` prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Rows removed per statement: each batch is its own short write, so
/// requests' writes go between batches and none waits long.
pub const PRUNE_BATCH: u32 = 1000;

/// Removes the events older than `keep` now, then every [`PRUNE_EVERY`],
/// on a blocking thread (never on a request's path). A failure is logged
/// and retried at the next round.
pub async fn prune_every(app: Arc<App>, keep: Duration) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        let app = app.clone();
        let round = tokio::task::spawn_blocking(move || {
            let now = app.services.clock().now_ms();
            prune(&**app.services.storage(), now, keep)
        })
        .await;
        match round {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "audit events past their retention pruned"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning audit events failed; retrying later"),
            Err(e) => tracing::warn!(error = %e, "the audit pruner stopped; retrying later"),
        }
    }
}

/// Removes the events older than `keep` at `now`; answers how many.
pub fn prune(storage: &dyn Backend, now: TimestampMs, keep: Duration) -> crate::error::Result<u64> {
    let before = now.saturating_sub(keep.as_millis() as u64);
    Ok(storage.prune_audit_events(before, PRUNE_BATCH)?)
}

/// The filter of `audit list`: `user` is a username, else taken as an
/// account as stored (a user id, or a login's `unknown-username:NAME`).
pub fn filter(
    storage: &dyn Backend,
    user: Option<&str>,
    since: Option<&str>,
    kind: Option<&str>,
) -> crate::error::Result<AuditFilter> {
    use crate::error::Error;
    let account = match user {
        None => None,
        Some(name) => Some(
            storage
                .find_user_id(name)?
                .unwrap_or_else(|| name.to_string()),
        ),
    };
    let since = since
        .map(|s| {
            rcpat::time::parse_iso8601(s).ok_or_else(|| {
                Error::invalid(
                    "--since must be a date (YYYY-MM-DD) or an instant (YYYY-MM-DDTHH:MM:SSZ)",
                )
            })
        })
        .transpose()?;
    let kind = kind
        .map(|k| {
            AuditKind::from_name(k).ok_or_else(|| {
                Error::invalid(format!(
                    "--type must be one of {}",
                    AuditKind::ALL.map(AuditKind::name).join(", ")
                ))
            })
        })
        .transpose()?;
    Ok(AuditFilter {
        account,
        since,
        kind,
    })
}

/// One event as a table line: the user by name where `names` (id to
/// username) knows it, else the account as stored; names as `tokens list`
/// prints them (a control character escaped, never sent to the terminal).
pub fn line(s: &StoredAuditEvent, names: &std::collections::HashMap<String, String>) -> String {
    let e = &s.event;
    let token = match (&e.token_name, &e.token_last_part) {
        (Some(name), Some(last)) => format!("\"{}\" …{last}", printable(name)),
        (Some(name), None) => format!("\"{}\"", printable(name)),
        _ => "-".into(),
    };
    let times = if s.count > 1 {
        format!(" ×{}", s.count)
    } else {
        String::new()
    };
    format!(
        "{}  {:<22} {:<17} {:<24} {:<11} {:<15} {}{}",
        rcpat::time::iso8601(e.at),
        e.kind.name(),
        printable(names.get(&e.account).unwrap_or(&e.account)),
        token,
        e.method.map_or("-", |m| m.name()),
        e.client_address,
        s.host_id,
        times,
    )
}

/// One event as one line of JSON: the REST route's object, field for field.
pub fn json(s: &StoredAuditEvent) -> String {
    serde_json::to_string(&rcpat::audit_route::Item::from(s))
        .expect("an audit event always serializes")
}
