//! `cargo bench -p host-example`: one regeneration (and its neighbours) in
//! the component versus the same logic linked natively, on identical
//! in-memory host state. Prints a wasm/native ratio table at the end.
//!
//! Cases: instantiation alone (and, for scale, wasmtime's floor on this
//! machine: an empty component, the same with a 128 KiB memory, and the
//! hostile test guest, which has this world's exports but 16 KB of code and
//! no core imports); the 401 path; the 2FA
//! challenge path; regeneration with a bypass token; regeneration with a
//! TOTP code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{BatchSize, Criterion};
use host_example::admin::{self, UserSpec};
use host_example::clock::{Clock, ManualClock};
use host_example::mail::MemoryMailer;
use host_example::runtime::{Endpoint, Runtime, RuntimeConfig};
use host_example::services::Services;
use host_example::storage::MemoryStorage;
use rcpat::model::{Request, Settings, TotpAlgorithm};

struct World {
    services: Services,
    clock: Arc<ManualClock>,
    settings: Settings,
    user_id: String,
    session: String,
    robot: String,
    totp_secret: String,
}

/// A user with TOTP, a login session, a bypass PAT `robot` and a PAT `target`.
fn world() -> World {
    let clock = Arc::new(ManualClock::new(1_800_000_015_000));
    let services = Services::new(
        Arc::new(MemoryStorage::new()),
        Arc::new(MemoryMailer::default()),
    )
    .with_clock(clock.clone());
    let spec = UserSpec {
        username: "bench",
        email: Some("bench@example.org"),
        password: None,
        roles: &["user"],
    };
    let user_id = admin::create_user(&services, &spec, 4).unwrap();
    let totp = admin::enable_totp(&services, &user_id, "bench", TotpAlgorithm::Sha1, 6).unwrap();
    let session = admin::issue_login_token(&services, &user_id).unwrap();
    let robot = admin::issue_personal_access_token(&services, &user_id, "robot", true).unwrap();
    admin::issue_personal_access_token(&services, &user_id, "target", false).unwrap();
    World {
        services,
        clock,
        // The robot's bypass token regenerates another token ("target"), which
        // by default needs a real factor; the bench measures the call, not the
        // policy, so it keeps Rocket.Chat's unrestricted bypass.
        settings: Settings {
            bypass_tokens_unrestricted: true,
            // The TOTP case advances the clock 30 s per iteration: keep
            // the session from expiring mid-measurement.
            login_expiration_days: 0,
            ..Settings::default()
        },
        user_id,
        session,
        robot,
        totp_secret: totp.secret,
    }
}

fn request(user: &str, token: &str, code: Option<&str>) -> Request {
    let mut headers = vec![("X-User-Id", user), ("X-Auth-Token", token)];
    if let Some(code) = code {
        headers.push(("x-2fa-method", "totp"));
        headers.push(("x-2fa-code", code));
    }
    Request::new(&headers, br#"{"tokenName":"target"}"#)
}

const EMPTY_COMPONENT: &str = r#"(component
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
  (func (export "f") (canon lift (core func $i "f")))
)"#;

/// The same with a 128 KiB linear memory (the component's initial size):
/// what a memory slot alone costs per instance.
const MEMORY_ONLY_COMPONENT: &str = r#"(component
  (core module $m (memory (export "memory") 2) (func (export "f")))
  (core instance $i (instantiate $m))
  (func (export "f") (canon lift (core func $i "f")))
)"#;

type Call<'a> = Box<dyn Fn(&World, &Request) -> rcpat::model::Response + 'a>;

fn benches(c: &mut Criterion, runtime: &Runtime) {
    {
        let w = world();
        c.bench_function("instantiate/wasm", |b| {
            b.iter(|| runtime.instantiate_only(&w.services).unwrap())
        });
        let hostile = std::fs::read(host_example::HOSTILE_COMPONENT_PATH).unwrap();
        let same_world = Runtime::from_component(&hostile, RuntimeConfig::default()).unwrap();
        c.bench_function("instantiate/same_world_16kb", |b| {
            b.iter(|| same_world.instantiate_only(&w.services).unwrap())
        });
    }
    // One core module with one function, lifted: no imports, and no memory
    // or 128 KiB of it.
    for (name, wat) in [
        ("instantiate/empty_component", EMPTY_COMPONENT),
        ("instantiate/memory_only", MEMORY_ONLY_COMPONENT),
    ] {
        let engine = Runtime::engine(&RuntimeConfig::default()).unwrap();
        let bytes = wat::parse_str(wat).unwrap();
        let component = wasmtime::component::Component::new(&engine, bytes).unwrap();
        let pre = wasmtime::component::Linker::<()>::new(&engine)
            .instantiate_pre(&component)
            .unwrap();
        c.bench_function(name, |b| {
            b.iter(|| {
                let mut store = wasmtime::Store::new(&engine, ());
                pre.instantiate(&mut store).unwrap();
            })
        });
    }
    let backends: [(&str, Call); 2] = [
        (
            "native",
            Box::new(|w: &World, r: &Request| {
                Endpoint::Regenerate.call_native(&w.services, &w.settings, r)
            }),
        ),
        (
            "wasm",
            Box::new(|w: &World, r: &Request| {
                runtime
                    .call(&w.services, Endpoint::Regenerate, &w.settings, r)
                    .unwrap()
            }),
        ),
    ];
    for (name, call) in &backends {
        let w = world();
        let req = request(&w.user_id, "not-a-token", None);
        c.bench_function(&format!("unauthorized_401/{name}"), |b| {
            b.iter(|| assert_eq!(call(&w, &req).status, 401))
        });
        let req = request(&w.user_id, &w.session, None);
        c.bench_function(&format!("challenge_totp_required/{name}"), |b| {
            b.iter(|| assert_eq!(call(&w, &req).status, 400))
        });
        let req = request(&w.user_id, &w.robot, None);
        c.bench_function(&format!("regenerate_bypass_token/{name}"), |b| {
            b.iter(|| assert_eq!(call(&w, &req).status, 200))
        });
        // Each iteration needs an unused TOTP step: the clock moves 30 s first (untimed).
        c.bench_function(&format!("regenerate_totp_code/{name}"), |b| {
            b.iter_batched(
                || {
                    w.clock.advance_secs(30);
                    let code = admin::totp_code(
                        &w.totp_secret,
                        TotpAlgorithm::Sha1,
                        6,
                        w.clock.now_ms(),
                        0,
                    );
                    request(&w.user_id, &w.session, Some(&code))
                },
                |req| assert_eq!(call(&w, &req).status, 200),
                BatchSize::PerIteration,
            )
        });
    }
}

fn mean_ns(dir: &Path, id: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(dir.join(id.replace('/', "_")).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn print_table(dir: &Path) {
    let fmt = |ns: Option<f64>| {
        ns.map_or("-".to_string(), |n| {
            if n < 10_000.0 {
                format!("{:.2} µs", n / 1000.0)
            } else {
                format!("{:.1} µs", n / 1000.0)
            }
        })
    };
    println!(
        "\n{:<28} {:>12} {:>12} {:>10}",
        "case", "native", "wasm", "wasm/native"
    );
    for (id, label) in [
        ("instantiate/wasm", "instantiation alone"),
        ("instantiate/same_world_16kb", "  same world, 16 KB guest"),
        ("instantiate/empty_component", "  empty component"),
        ("instantiate/memory_only", "  empty, 128 KiB memory"),
    ] {
        let t = mean_ns(dir, id);
        println!("{:<28} {:>12} {:>12} {:>10}", label, "-", fmt(t), "-");
    }
    for case in [
        "unauthorized_401",
        "challenge_totp_required",
        "regenerate_bypass_token",
        "regenerate_totp_code",
    ] {
        let (n, w) = (
            mean_ns(dir, &format!("{case}/native")),
            mean_ns(dir, &format!("{case}/wasm")),
        );
        let ratio = match (n, w) {
            (Some(n), Some(w)) => format!("{:.2}", w / n),
            _ => "-".into(),
        };
        println!("{:<28} {:>12} {:>12} {:>10}", case, fmt(n), fmt(w), ratio);
    }
}

fn main() {
    let dir: PathBuf = std::env::temp_dir().join("rcpat-criterion");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("the component loads");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    benches(&mut c, &runtime);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        print_table(&dir);
        let w = world();
        let req = request(&w.user_id, &w.robot, None);
        let (reply, peak) = runtime
            .call_measuring_memory(&w.services, Endpoint::Regenerate, &w.settings, &req)
            .unwrap();
        assert_eq!(reply.status, 200);
        println!(
            "\nguest linear memory per instance (peak, one regeneration): {} KiB",
            peak / 1024
        );
        println!("component size: {} bytes", host_example::COMPONENT.len());
    }
}
