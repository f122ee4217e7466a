//! The rcpat component as a dependency: `rcpat_component::WASM` is the
//! component (`wit/world.wit`, world `pat-service`) built from this
//! repository's source by the build script, for any host to load
//! (`rcpat-wasmtime` runs it in wasmtime). `./dev dist` writes the same
//! bytes, the WIT and their SHA-256 sums into a folder for everyone else.

/// The component's bytes.
pub const WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rcpat.wasm"));

/// Lowercase hex SHA-256 of [`WASM`].
pub const WASM_SHA256: &str = env!("RCPAT_COMPONENT_SHA256");

/// The world the component implements (`wit/world.wit`); its WASI
/// dependencies are [`WIT_DEPS`].
pub const WIT: &str = include_str!("../../../wit/world.wit");

/// The WASI packages `WIT` imports, as (path under `wit/`, text).
pub const WIT_DEPS: &[(&str, &str)] = &[
    (
        "deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "deps/random/random.wit",
        include_str!("../../../wit/deps/random/random.wit"),
    ),
];

/// How the core module was built: `rustup` or `debian` (the toolchain
/// route), and what optimised it (`wasm-opt -Oz` or none).
pub const BUILT_BY: (&str, &str) = (env!("RCPAT_WASM_ROUTE_USED"), env!("RCPAT_WASM_OPT_USED"));

/// A deliberately misbehaving component of the same world
/// (`host-example/hostile-guest/`), built beside the real one for
/// containment tests (feature `hostile-guest`).
#[cfg(feature = "hostile-guest")]
pub const HOSTILE_WASM_PATH: &str = concat!(env!("OUT_DIR"), "/hostile.wasm");
