//! The component's imports, implemented over [`RcpatCtx`]: each forwards to
//! the storage trait, mail, clock or randomness (conversions are in
//! `conversions.rs`), reporting through the context's hooks.

use crate::RcpatCtx;
use crate::bindings::rcpat::tokens::{mail, storage as st};
use crate::bindings::wasi::clocks::wall_clock;
use crate::bindings::wasi::random::random;
use rcpat::model::TimestampMs;
use rcpat::storage::{HostResult, Storage};

/// Largest randomness request served (the component asks for 43 bytes at most).
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// The text the guest gets for any failed import. The real error goes to
/// the hooks, where it is still typed; the component never shows host error
/// text to a client, so it gets none to show.
const IMPORT_FAILED: &str = "host call failed (see the host's log)";

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

impl wall_clock::Host for RcpatCtx {
    fn now(&mut self) -> wall_clock::Datetime {
        let ms = self.clock.now_ms();
        wall_clock::Datetime {
            seconds: ms / 1000,
            nanoseconds: (ms % 1000) as u32 * 1_000_000,
        }
    }
    fn resolution(&mut self) -> wall_clock::Datetime {
        wall_clock::Datetime {
            seconds: 0,
            nanoseconds: 1_000_000,
        }
    }
}

impl random::Host for RcpatCtx {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            wasmtime::bail!("guest asked for {len} random bytes (limit {MAX_RANDOM_BYTES})");
        }
        Ok(random_bytes(len as usize))
    }
    fn get_random_u64(&mut self) -> u64 {
        u64::from_le_bytes(random_bytes(8).try_into().unwrap())
    }
}

impl RcpatCtx {
    /// Runs one storage call for the guest: reports it, and hides its error.
    fn call_storage<T>(
        &self,
        call: &'static str,
        f: impl FnOnce(&dyn Storage) -> HostResult<T>,
    ) -> Result<T, String> {
        let started = std::time::Instant::now();
        let answer = f(&*self.storage);
        self.hooks
            .storage_call(call, started.elapsed(), answer.as_ref().map(drop));
        answer.map_err(|_| IMPORT_FAILED.to_string())
    }
}

impl mail::Host for RcpatCtx {
    fn send(&mut self, msg: mail::Message) -> Result<(), String> {
        let sent = self.mail.send(&msg.into());
        self.hooks.mail(sent.as_ref().map(drop));
        sent.map_err(|_| IMPORT_FAILED.to_string())
    }
}

// The WIT side of each storage call, from the one list
// (`rcpat::storage_calls!`): a parameter's WIT type, how it is lent to the
// storage trait, and how an answer converts back (`conversions.rs`).
macro_rules! wit_type {
    (&str) => { String };
    (Option<&str>) => { Option<String> };
    (&[$t:ident]) => { Vec<st::$t> };
    (&$t:ident) => { st::$t };
    ($t:ty) => { $t };
}

macro_rules! lend {
    ([&str] $a:ident) => {
        &$a
    };
    ([Option<&str>] $a:ident) => {
        $a.as_deref()
    };
    ([&[$t:ident]] $a:ident) => {
        &$a.into_iter()
            .map(rcpat::model::$t::from)
            .collect::<Vec<_>>()
    };
    ([&$t:ident] $a:ident) => {
        &rcpat::model::$t::from($a)
    };
    ([$($t:tt)*] $a:ident) => {
        $a
    };
}

macro_rules! answer_type {
    (()) => { () };
    (Option<$t:ident>) => { Option<st::$t> };
    (Vec<$t:ident>) => { Vec<st::$t> };
    ($t:ident) => { st::$t };
}

macro_rules! wit_storage {
    ($($name:ident $wit:literal ($($arg:ident: [$($ty:tt)*]),*) -> [$($ret:tt)*];)*) => {
        impl st::Host for RcpatCtx {
            $(fn $name(&mut self, $($arg: wit_type!($($ty)*)),*)
                -> Result<answer_type!($($ret)*), String>
            {
                self.call_storage($wit, |s| {
                    s.$name($(lend!([$($ty)*] $arg)),*).map(|v| rcpat::__convert_answer!([$($ret)*] v))
                })
            })*
        }
    };
}

rcpat::storage_calls!(wit_storage);
