//! `lastUsedAt`: each personal access token records when it last
//! authenticated a request, written at most once an hour (authentication
//! stays a read otherwise), shown by `getPersonalAccessTokens` only with
//! `show-token-last-use` and once set, and reset by regeneration. On every
//! backend.

use std::sync::Arc;

use crate::common::*;
use host_example::clock::Clock;
use host_example::storage::{Backend, FaultMode, FaultyStorage, MemoryStorage, SqliteStorage};
use rcpat::time::iso8601;

const MINUTE: u64 = 60;

fn listed(fx: &Fx, u: &User) -> serde_json::Value {
    let r = fx.call(List, u, &u.login, None, "");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json["tokens"][0].clone()
}

fn scenario(backend: Arc<dyn Backend>) {
    // The storage counts calls, so "stays a read" is observable.
    let counter = Arc::new(FaultyStorage::new(backend, usize::MAX, FaultMode::Before));
    let mut fx = Fx::with_storage(counter.clone());
    fx.settings.show_token_last_use = true;
    let u = fx.user("lu", Some(PASSWORD));
    let pat = fx.pat(&u, "ci", true);

    // Never used: Rocket.Chat's four fields only, byte for byte.
    let item = listed(&fx, &u);
    assert!(item.get("lastUsedAt").is_none(), "{item}");
    assert_eq!(item.as_object().unwrap().len(), 4, "{item}");

    // First use: recorded (authenticate, then the write).
    let before = counter.calls();
    assert_eq!(fx.call(Me, &u, &pat, None, "").status, 200);
    assert_eq!(
        counter.calls() - before,
        2,
        "authenticate + record-token-use"
    );
    assert_eq!(listed(&fx, &u)["lastUsedAt"], iso8601(T0).as_str());

    // Within the hour: a read only, and the mark stays.
    fx.clock.advance_secs(59 * MINUTE);
    let before = counter.calls();
    assert_eq!(fx.call(Me, &u, &pat, None, "").status, 200);
    assert_eq!(counter.calls() - before, 1, "authentication stays a read");
    assert_eq!(listed(&fx, &u)["lastUsedAt"], iso8601(T0).as_str());

    // An hour on: written again.
    fx.clock.advance_secs(2 * MINUTE);
    let later = fx.clock.now_ms();
    assert_eq!(fx.call(Me, &u, &pat, None, "").status, 200);
    assert_eq!(listed(&fx, &u)["lastUsedAt"], iso8601(later).as_str());

    // Session (login) tokens record nothing: listing above used one, and
    // each listing was two reads: authenticate (with the permission), list.
    let before = counter.calls();
    listed(&fx, &u);
    assert_eq!(counter.calls() - before, 2);

    // Regeneration issues an unused token: the mark goes with the old value.
    // Rotating the presented token writes no mark for the value it retires,
    // and reads it once: authenticate (with the permission), replace.
    fx.clock.advance_secs(2 * 60 * MINUTE);
    let before = counter.calls();
    let new = fx.regenerate(&u, &pat, None, "ci").token();
    assert_eq!(
        counter.calls() - before,
        2,
        "no mark, no second read for a self-rotation"
    );
    assert!(listed(&fx, &u).get("lastUsedAt").is_none());
    // The old value no longer authenticates, so it cannot mark the new one.
    assert_eq!(fx.call(Me, &u, &pat, None, "").status, 401);
    assert!(listed(&fx, &u).get("lastUsedAt").is_none());
    assert_eq!(fx.call(Me, &u, &new, None, "").status, 200);
    assert_eq!(
        listed(&fx, &u)["lastUsedAt"],
        iso8601(fx.clock.now_ms()).as_str()
    );
}

/// Off (the default), the list is Rocket.Chat's byte for byte even for a
/// used token, while the use is still recorded.
#[test]
fn hidden_by_default() {
    let fx = Fx::new();
    let u = fx.user("lh", None);
    let pat = fx.pat(&u, "ci", true);
    assert_eq!(fx.call(Me, &u, &pat, None, "").status, 200);
    let r = fx.call(List, &u, &pat, None, "");
    assert_eq!(
        r.body,
        format!(
            r#"{{"tokens":[{{"name":"ci","createdAt":"{}","lastTokenPart":"{}","bypassTwoFactor":true}}],"success":true}}"#,
            iso8601(T0),
            &pat[37..]
        )
    );
    let stored = fx.storage.list_personal_access_tokens(&u.id).unwrap();
    assert_eq!(stored[0].last_used_at, Some(T0));
}

#[test]
fn last_use_on_memory() {
    scenario(Arc::new(MemoryStorage::new()));
}

#[test]
fn last_use_on_sqlite() {
    scenario(Arc::new(SqliteStorage::open_in_memory().unwrap()));
}

/// A failed mark does not fail the request: it changes nothing else, and the
/// next request past the interval writes it.
#[test]
fn a_failed_mark_costs_only_the_mark() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryStorage::new());
    let mut setup = Fx::with_storage(backend.clone());
    setup.settings.show_token_last_use = true;
    let u = setup.user("lf", None);
    let pat = setup.pat(&u, "ci", true);
    // Call 1 is authenticate, call 2 the mark: fail the mark.
    let fx = Fx::with_storage(Arc::new(FaultyStorage::new(
        backend.clone(),
        2,
        FaultMode::Before,
    )));
    assert_eq!(fx.call(Me, &u, &pat, None, "").status, 200);
    assert!(listed(&setup, &u).get("lastUsedAt").is_none());
    assert_eq!(setup.call(Me, &u, &pat, None, "").status, 200);
    assert_eq!(listed(&setup, &u)["lastUsedAt"], iso8601(T0).as_str());
}
