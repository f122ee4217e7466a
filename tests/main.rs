//! The integration tests: one binary (wasmtime is linked once, the component
//! compiled once through the shared cache), one module per concern, one
//! fixture (`common`).

mod attacks;
mod audit_trail;
mod bad_input;
mod cache_trust;
mod cli;
mod code_key;
mod common;
mod concurrency;
mod connection_limits;
mod deployment;
mod documentation_examples;
mod expiry;
mod fault_injection;
mod http_server;
mod idempotency;
mod key_rotation;
mod last_use;
mod login_lockout;
mod multi_host;
mod operations;
mod reuse;
mod reuse_detection;
mod shutdown;
pub mod tls;
mod token_names;
mod token_prefix;
mod trusted_proxies;
mod two_factor;
mod vectors;
mod web_page;
