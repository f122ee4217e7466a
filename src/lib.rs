//! Rocket.Chat's personal access token endpoints with two-factor checks.
//!
//! The logic is plain Rust over the [`env::Env`] trait, so it compiles and is
//! unit-tested natively; built for `wasm32-unknown-unknown` the crate becomes
//! a component whose `Env` is its WIT imports (`component.rs`).
//!
//! Map: [`endpoints`] (the four routes and their order of checks) uses
//! [`request`] (strict headers and body), [`twofactor`] (method selection and
//! verification, with [`totp`]), [`token`] (generation, hashing, constant-time
//! comparison) and [`reply`] (Rocket.Chat's exact replies).

pub mod account;
pub mod audit;
pub mod audit_route;
pub mod codes;
pub mod endpoints;
pub mod env;
pub mod expiry;
pub mod idempotency;
pub mod model;
pub mod reply;
pub mod request;
pub mod reuse;
pub mod storage;
pub mod time;
pub mod token;
pub mod totp;
pub mod twofactor;

#[cfg(target_arch = "wasm32")]
mod alloc;
#[cfg(target_arch = "wasm32")]
mod component;
