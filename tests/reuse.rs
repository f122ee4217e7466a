//! Hosts that keep one instance for many calls (jco, most plugin systems):
//! the guest's memory stays flat, because each call's allocations are all
//! freed by its post-return and the allocator starts over.

use crate::common::*;
use rcpat::model::Request;

const CALLS: usize = 20_000;

#[test]
fn a_reused_instance_keeps_its_memory_flat() {
    let fx = Fx::new();
    let u = fx.user("reuse", None);
    let mut token = fx.pat(&u, "bot", true);
    let mut instance = runtime().reused_instance(&fx.services).unwrap();
    let mut after_1000 = 0;
    for i in 1..=CALLS {
        let auth = [
            ("X-User-Id", u.id.as_str()),
            ("X-Auth-Token", token.as_str()),
        ];
        // A rotation, and now and then the other routes on the same instance.
        if i % 10 == 0 {
            let r = instance
                .call(List, &fx.settings, &Request::new(&auth, b""))
                .unwrap();
            assert_eq!(r.status, 200, "call {i}: {}", r.body);
            let r = instance
                .call(Me, &fx.settings, &Request::new(&auth, b""))
                .unwrap();
            assert_eq!(r.status, 200, "call {i}: {}", r.body);
        }
        let req = Request::new(&auth, br#"{"tokenName":"bot"}"#);
        let r = instance.call(Regenerate, &fx.settings, &req).unwrap();
        assert_eq!(r.status, 200, "call {i}: {}", r.body);
        let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        token = json["token"].as_str().unwrap().to_string();
        if i == 1000 {
            after_1000 = instance.memory_size();
        }
    }
    let end = instance.memory_size();
    println!("guest memory after 1,000 calls {after_1000} bytes, after {CALLS}: {end}");
    assert!(
        end <= after_1000 + 65_536,
        "memory grew from {after_1000} to {end} bytes over {CALLS} calls"
    );
}
