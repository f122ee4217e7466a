//! A wasmtime host for the rcpat component.
//!
//! [`runtime::Runtime`] embeds the component through the `rcpat-wasmtime`
//! crate (one engine, a pre-instantiated component, a fresh store per
//! request from the pooling allocator, memory and time limits). [`services::Services`] is what a request runs against:
//! [`storage`] (SQLite or memory), [`mail`] (an `.eml` outbox) and a
//! [`clock`]. [`admin`] creates users and enrols 2FA; [`demo`] walks the flow.

pub mod admin;
pub mod admin_listener;
pub mod audit;
pub mod cache;
pub mod client_address;
pub mod clock;
pub mod config;
pub mod connections;
pub mod demo;
pub mod error;
pub mod loadgen;
pub mod mail;
pub mod password_pool;
pub mod refused;
pub mod runtime;
pub mod server;
pub mod services;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod web;

// Owner-only files, the key file and randomness live with the stores
// (`rcpat-store`); the host uses them under their old names.
pub use rcpat_store::{files, keys, random};

/// The component, built from the root package by `rcpat-component`.
pub const COMPONENT: &[u8] = rcpat_component::WASM;

/// A deliberately misbehaving component of the same world (`hostile-guest/`),
/// built beside the real one, for containment tests. Not embedded.
pub const HOSTILE_COMPONENT_PATH: &str = rcpat_component::HOSTILE_WASM_PATH;

/// The embedded component's world as WIT text (what `wasm-tools component wit` prints).
pub fn component_wit() -> error::Result<String> {
    fn failed(e: impl std::fmt::Display) -> error::Error {
        error::Error::Component(format!("{e:#}"))
    }
    let decoded = wit_component::decode(COMPONENT).map_err(failed)?;
    let resolve = decoded.resolve();
    let mut printer = wit_component::WitPrinter::default();
    printer
        .print(resolve, decoded.package(), &[])
        .map_err(failed)?;
    Ok(printer.output.to_string())
}
