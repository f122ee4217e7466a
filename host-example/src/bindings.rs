//! Host-side bindings for the `pat-service` world (`wit/world.wit`).

wasmtime::component::bindgen!({
    world: "pat-service",
    path: "../wit",
    // A guest asking for absurd amounts of randomness is trapped, not served.
    imports: { "wasi:random/random.get-random-bytes": trappable },
});
