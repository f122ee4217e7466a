//! The capabilities a host gives the logic (storage, mail, clock, randomness),
//! exposed both as the component's imports and as the native [`Env`].

use std::sync::Arc;

use rcpat::env::Env;
use rcpat::model::{MailMessage, TimestampMs};
use rcpat::storage::{HostResult, Storage};

use rcpat_wasmtime::RcpatCtx;

use crate::clock::{Clock, SystemClock};
use crate::keys::Keys;
use crate::mail::Mailer;
use crate::storage::Backend;

/// What one request runs against; cheap to clone. Its parts change only
/// through the `with_` methods, which keep the component's context (`ctx`)
/// and the native environment's view (the fields) the same.
#[derive(Clone)]
pub struct Services {
    /// The store: the component's operations and the host's admin ones.
    storage: Arc<dyn Backend>,
    mailer: Arc<dyn Mailer>,
    clock: Arc<dyn Clock>,
    /// The host's secret key material (never in storage).
    keys: Arc<Keys>,
    /// Whether `with_code_key` gave a key that overrides the key file's
    /// (the key itself is in `ctx`).
    code_key_given: bool,
    /// The same, as the component's imports see it (`rcpat-wasmtime`),
    /// with the telemetry hooks; cloned into each request's store.
    ctx: RcpatCtx,
}

impl Services {
    /// Services with a fresh random key: right for a store that dies with the
    /// process (memory, tests); a durable store needs `with_keys` and a key
    /// file, or its codes stop matching at the next start.
    pub fn new(storage: Arc<dyn Backend>, mailer: Arc<dyn Mailer>) -> Self {
        let keys = Arc::new(Keys::random());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let ctx = RcpatCtx::new(storage.clone(), mailer.clone(), keys.code_key())
            .expect("key files hold 32-byte code keys")
            .with_clock(clock.clone())
            .with_hooks(Arc::new(crate::telemetry::Telemetry));
        Services {
            storage,
            mailer,
            clock,
            keys,
            code_key_given: false,
            ctx,
        }
    }

    /// The store: the component's operations and the host's admin ones.
    pub fn storage(&self) -> &Arc<dyn Backend> {
        &self.storage
    }

    pub fn mailer(&self) -> &Arc<dyn Mailer> {
        &self.mailer
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The host's secret key material (never in storage).
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.ctx = self.ctx.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// The key file's keys; a code key given by `with_code_key` still wins,
    /// in whichever order the two are called.
    pub fn with_keys(mut self, keys: Arc<Keys>) -> Self {
        if !self.code_key_given {
            self.ctx = self.ctx.with_unchecked_code_key(keys.code_key());
        }
        self.keys = keys;
        self
    }

    /// Hashes second-factor codes under `key` instead of the key file's
    /// code key: for an embedder whose codes were enrolled elsewhere. It must
    /// be 32 bytes or more: `server::App::new` refuses a shorter one, and
    /// the component refuses every second-factor check under one (which
    /// is what tests pass a shorter one for).
    pub fn with_code_key(mut self, key: &[u8]) -> Self {
        self.ctx = self.ctx.with_unchecked_code_key(key);
        self.code_key_given = true;
        self
    }

    /// The key the component hashes second-factor codes with.
    pub fn code_key(&self) -> &[u8] {
        self.ctx.code_key()
    }

    /// The context a request's store gets.
    pub fn ctx(&self) -> &RcpatCtx {
        &self.ctx
    }
}

pub use crate::random::random_bytes;

/// The native (non-wasm) environment: the same logic linked directly.
pub struct NativeEnv<'a>(pub &'a Services);

impl Env for NativeEnv<'_> {
    fn storage(&self) -> &dyn Storage {
        &*self.0.storage
    }
    fn now_ms(&mut self) -> TimestampMs {
        self.0.clock.now_ms()
    }
    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        random_bytes(len)
    }
    fn code_key(&self) -> &[u8] {
        self.0.code_key()
    }
    fn send_mail(&mut self, message: &MailMessage) -> HostResult<()> {
        self.0.mailer.send(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A code key given by `with_code_key` is the one both the component and
    /// the native environment use, whether the key file came before or after.
    #[test]
    fn a_given_code_key_wins_in_either_order() {
        let given = [7u8; 32];
        let keys = Arc::new(Keys::random());
        let make = || {
            Services::new(
                Arc::new(crate::storage::MemoryStorage::new()),
                Arc::new(crate::mail::MemoryMailer::default()),
            )
        };
        let before = make().with_code_key(&given).with_keys(keys.clone());
        let after = make().with_keys(keys.clone()).with_code_key(&given);
        for s in [&before, &after] {
            assert_eq!(s.code_key(), given);
            assert_eq!(s.ctx().code_key(), given);
            assert_eq!(NativeEnv(s).code_key(), given);
        }
        // Without one, the key file's.
        let plain = make().with_keys(keys.clone());
        assert_eq!(plain.code_key(), keys.code_key());
    }
}
