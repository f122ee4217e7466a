//! The component glue: WIT exports call the endpoints, WIT imports become an
//! [`Env`] and a [`Storage`]. Conversions are in `conversions.rs`; every rule
//! is in the other modules.

mod conversions;

use crate::env::Env;
use crate::model as m;
use crate::storage::{HostError, HostResult, Storage};

wit_bindgen::generate!({ world: "pat-service", path: "wit", generate_all });

use exports::rcpat::tokens::endpoints as ep;
use rcpat::tokens::{mail, storage as st};
use wasi::clocks::wall_clock;
use wasi::random::random;

struct Component;
export!(Component);

impl ep::Guest for Component {
    fn default_settings() -> ep::Settings {
        m::Settings::default().into()
    }
    fn handle(route: ep::Route, config: ep::Settings, req: ep::Request) -> ep::Response {
        let endpoint: Endpoint = match route {
            ep::Route::Login => crate::account::login,
            ep::Route::Logout => crate::account::logout,
            ep::Route::Me => crate::account::me,
            ep::Route::RegeneratePersonalAccessToken => crate::endpoints::regenerate,
            ep::Route::GeneratePersonalAccessToken => crate::endpoints::generate,
            ep::Route::GetPersonalAccessTokens => crate::endpoints::list,
            ep::Route::RemovePersonalAccessToken => crate::endpoints::remove,
            ep::Route::AuditPersonalAccessTokens => crate::audit_route::list,
        };
        run(endpoint, config, req)
    }
}

type Endpoint = fn(&mut dyn Env, &m::Settings, &m::Request) -> m::Response;

fn run(endpoint: Endpoint, config: ep::Settings, req: ep::Request) -> ep::Response {
    let settings = m::Settings::from(&config);
    let mut imports = Imports {
        code_key: config.code_key,
    };
    endpoint(&mut imports, &settings, &req.into()).into()
}

/// The component's imports as the logic's `Env`, with the host's code key
/// from the call's settings.
struct Imports {
    code_key: Vec<u8>,
}

impl Env for Imports {
    fn storage(&self) -> &dyn Storage {
        &WitStorage
    }
    fn now_ms(&mut self) -> m::TimestampMs {
        let t = wall_clock::now();
        t.seconds * 1000 + u64::from(t.nanoseconds / 1_000_000)
    }
    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        random::get_random_bytes(len as u64)
    }
    fn code_key(&self) -> &[u8] {
        &self.code_key
    }
    fn send_mail(&mut self, message: &m::MailMessage) -> HostResult<()> {
        mail::send(&message.into()).map_err(HostError::msg)
    }
}

/// The `storage` import as the storage trait.
struct WitStorage;

// Each storage call forwarded to its import, from the one list
// (`storage_calls!`): a parameter is lent as is, or as its WIT record
// (`conversions.rs`); an answer converts back.
macro_rules! lend {
    ([&str] $a:ident) => {
        $a
    };
    ([Option<&str>] $a:ident) => {
        $a
    };
    // wit-bindgen passes a record of plain numbers by value.
    ([&LoginLimits] $a:ident) => {
        $a.into()
    };
    ([&[$t:ident]] $a:ident) => {
        &$a.iter().map(Into::into).collect::<Vec<st::$t>>()
    };
    ([&$t:ident] $a:ident) => {
        &$a.into()
    };
    ([$($t:tt)*] $a:ident) => {
        $a
    };
}

macro_rules! wit_storage {
    ($($name:ident $wit:literal ($($arg:ident: [$($ty:tt)*]),*) -> [$($ret:tt)*];)*) => {
        mod forwarded {
            use super::{HostError, HostResult, Storage, WitStorage, st};
            use crate::model::*;

            impl Storage for WitStorage {
                $(fn $name(&self, $($arg: $($ty)*),*) -> HostResult<$($ret)*> {
                    st::$name($(lend!([$($ty)*] $arg)),*)
                        .map(|v| crate::__convert_answer!([$($ret)*] v))
                        .map_err(HostError::msg)
                })*
            }
        }
    };
}

crate::storage_calls!(wit_storage);

/// getrandom's entropy on wasm32-unknown-unknown (bcrypt pulls getrandom in;
/// the component itself reads randomness through `Env::random_bytes`).
#[unsafe(no_mangle)]
unsafe extern "Rust" fn __getrandom_v03_custom(
    dest: *mut u8,
    len: usize,
) -> Result<(), getrandom::Error> {
    let bytes = random::get_random_bytes(len as u64);
    // SAFETY: getrandom hands us a writable buffer of `len` bytes.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dest, len.min(bytes.len())) };
    if bytes.len() < len {
        Err(getrandom::Error::UNSUPPORTED)
    } else {
        Ok(())
    }
}
