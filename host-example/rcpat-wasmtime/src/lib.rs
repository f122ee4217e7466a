//! Embed the rcpat component (`wit/world.wit`, world `pat-service`) in your
//! own wasmtime host, the way `wasmtime-wasi` is embedded:
//!
//! - [`RcpatCtx`] holds what the component's imports need (your storage,
//!   mail, clock, the code key, observability hooks). Keep one in your
//!   store's data and implement [`RcpatView`] for that data.
//! - [`add_to_linker`] defines the component's own imports (`storage`,
//!   `mail`) in your `Linker`; [`add_wasi_to_linker`] the two WASI ones
//!   (`wall-clock`, `random`), which you skip if you link `wasmtime-wasi`.
//! - [`RcpatPre`] is the pre-instantiated, type-checked component: `call`
//!   makes a fresh instance in your store and answers one request.
//!
//! ```ignore
//! struct MyState { rcpat: RcpatCtx }
//! impl RcpatView for MyState { fn rcpat(&mut self) -> &mut RcpatCtx { &mut self.rcpat } }
//! let mut linker = Linker::<MyState>::new(&engine);
//! rcpat_wasmtime::add_to_linker(&mut linker)?;
//! rcpat_wasmtime::add_wasi_to_linker(&mut linker)?;
//! let pre = RcpatPre::new(&linker, &component)?;
//! let mut store = Store::new(&engine, MyState { rcpat: ctx.clone() });
//! let reply = pre.call(&mut store, Route::RegeneratePersonalAccessToken, &settings, &request)?;
//! ```
//!
//! The crate pulls in no backend, HTTP or metrics crate: storage is
//! [`rcpat::storage::Storage`], mail [`Mail`], time [`Clock`], and
//! observability [`Hooks`], all yours to implement.

mod conversions;
mod imports;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{
    Component, ComponentExportIndex, Func, HasSelf, Instance, InstancePre, Linker, TypedFunc,
};

pub use rcpat::model::{MailMessage, Request, Response, Settings};
pub use rcpat::storage::{HostError, HostResult, Storage};

/// The generated bindings of the `pat-service` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "pat-service",
        path: "../../wit",
        // A guest asking for absurd amounts of randomness is trapped, not served.
        imports: { "wasi:random/random.get-random-bytes": trappable },
    });
}

use bindings::exports::rcpat::tokens::endpoints as ep;
/// The endpoint a call answers (Rocket.Chat's route).
pub use ep::Route;

/// The route Rocket.Chat serves at `path` (`/api/v1/login`,
/// `/api/v1/users.regeneratePersonalAccessToken`, ...), if any. (Rocket.Chat
/// answers `me` and `users.getPersonalAccessTokens` to GET, the others to
/// POST; checking the method is the HTTP server's part.)
pub fn route_at(path: &str) -> Option<Route> {
    Some(match path.strip_prefix("/api/v1/")? {
        "login" => Route::Login,
        "logout" => Route::Logout,
        "me" => Route::Me,
        "users.regeneratePersonalAccessToken" => Route::RegeneratePersonalAccessToken,
        "users.generatePersonalAccessToken" => Route::GeneratePersonalAccessToken,
        "users.getPersonalAccessTokens" => Route::GetPersonalAccessTokens,
        "users.removePersonalAccessToken" => Route::RemovePersonalAccessToken,
        "audit.personalAccessTokens" => Route::AuditPersonalAccessTokens,
        _ => return None,
    })
}

/// Outgoing mail (the component's `mail` import).
pub trait Mail: Send + Sync {
    /// Sends `message`; an error is logged through [`Hooks`] and answered
    /// to the client as a fixed 500, never shown.
    fn send(&self, message: &MailMessage) -> HostResult<()>;
}

/// Wall-clock time (the `wasi:clocks/wall-clock` import).
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// What the imports report, for your logs and metrics. Every method has a
/// default that does nothing.
pub trait Hooks: Send + Sync {
    /// A storage call (`call` is its WIT name) ended after `elapsed`.
    fn storage_call(&self, call: &'static str, elapsed: Duration, outcome: Result<(), &HostError>) {
        let _ = (call, elapsed, outcome);
    }
    /// A mail was sent, or failed.
    fn mail(&self, outcome: Result<(), &HostError>) {
        let _ = outcome;
    }
}

/// Hooks that report nothing.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// The shortest code key accepted (`settings.code-key`, contract 0.9.0).
pub const MIN_CODE_KEY_LEN: usize = rcpat::codes::MIN_CODE_KEY_LEN;

/// A code key shorter than [`MIN_CODE_KEY_LEN`]: refused when the context
/// is made, so a host fails at start rather than at the first second factor.
#[derive(Debug)]
pub struct ShortCodeKey(pub usize);

impl std::fmt::Display for ShortCodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the code key (settings.code-key) is {} bytes; it must be {MIN_CODE_KEY_LEN} or more",
            self.0
        )
    }
}

impl std::error::Error for ShortCodeKey {}

/// What the component's imports run against. Cheap to clone (reference
/// counts): make one at start and clone it into each store.
#[derive(Clone)]
pub struct RcpatCtx {
    storage: Arc<dyn Storage>,
    mail: Arc<dyn Mail>,
    clock: Arc<dyn Clock>,
    hooks: Arc<dyn Hooks>,
    code_key: Arc<[u8]>,
}

impl RcpatCtx {
    /// A context over `storage` and `mail`, hashing codes under `code_key`
    /// (32 bytes or more, kept outside storage), with the system clock and
    /// no hooks.
    pub fn new(
        storage: Arc<dyn Storage>,
        mail: Arc<dyn Mail>,
        code_key: &[u8],
    ) -> Result<Self, ShortCodeKey> {
        if code_key.len() < MIN_CODE_KEY_LEN {
            return Err(ShortCodeKey(code_key.len()));
        }
        Ok(RcpatCtx {
            storage,
            mail,
            clock: Arc::new(SystemClock),
            hooks: Arc::new(NoHooks),
            code_key: code_key.into(),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Replaces the code key without the length check. Only for testing a
    /// component's own refusal of a short key; a host must use `new`.
    #[doc(hidden)]
    pub fn with_unchecked_code_key(mut self, code_key: &[u8]) -> Self {
        self.code_key = code_key.into();
        self
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn code_key(&self) -> &[u8] {
        &self.code_key
    }
}

/// Implemented by your store data: where its [`RcpatCtx`] is.
pub trait RcpatView: Send {
    fn rcpat(&mut self) -> &mut RcpatCtx;

    /// Whether a memory growth was refused during the call (if your store
    /// has a `ResourceLimiter`), so that a trap is reported as
    /// [`CallError::MemoryLimit`]. Without a limiter: false.
    fn memory_refused(&self) -> bool {
        false
    }
}

/// Defines the component's own imports (`rcpat:tokens/storage`,
/// `rcpat:tokens/mail`) in `linker`.
pub fn add_to_linker<T: RcpatView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use bindings::rcpat::tokens::{mail, storage};
    storage::add_to_linker::<T, HasSelf<RcpatCtx>>(linker, T::rcpat)?;
    mail::add_to_linker::<T, HasSelf<RcpatCtx>>(linker, T::rcpat)
}

/// Defines the two WASI imports the component uses
/// (`wasi:clocks/wall-clock`, `wasi:random/random`) over the context's
/// clock and the operating system's randomness. Skip it when your linker
/// already has `wasmtime-wasi`'s.
pub fn add_wasi_to_linker<T: RcpatView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use bindings::wasi::clocks::wall_clock;
    use bindings::wasi::random::random;
    wall_clock::add_to_linker::<T, HasSelf<RcpatCtx>>(linker, T::rcpat)?;
    random::add_to_linker::<T, HasSelf<RcpatCtx>>(linker, T::rcpat)
}

/// Why a call produced no reply (a host answers 500 with a fixed text).
#[derive(Debug)]
pub enum CallError {
    /// The store's epoch deadline passed (`Trap::Interrupt`).
    Timeout,
    /// The guest asked for more linear memory than the store's limiter allows.
    MemoryLimit,
    /// Any other trap (a guest bug, or a hostile guest).
    Trap(wasmtime::Trap),
    /// Instantiation or a host import failed.
    Other(wasmtime::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => f.write_str("the call exceeded its time limit"),
            CallError::MemoryLimit => f.write_str("the guest exceeded its memory limit"),
            CallError::Trap(t) => write!(f, "the guest trapped: {t}"),
            CallError::Other(e) => write!(f, "the call failed: {e:?}"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// Classifies by the trap code and the store's own record, never by text.
    pub fn classify(e: wasmtime::Error, memory_refused: bool) -> Self {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => CallError::Timeout,
            _ if memory_refused => CallError::MemoryLimit,
            Some(trap) => CallError::Trap(*trap),
            None => CallError::Other(e),
        }
    }
}

/// The component, linked and type-checked once: each call is one fresh
/// instance (or one you keep, with [`RcpatPre::call_on`]).
pub struct RcpatPre<T: 'static> {
    pre: bindings::PatServicePre<T>,
    handle: ComponentExportIndex,
}

impl<T: RcpatView + 'static> RcpatPre<T> {
    /// Pre-instantiates `component` with `linker`'s definitions (which need
    /// [`add_to_linker`] and the WASI imports) and checks its exports' types.
    pub fn new(linker: &Linker<T>, component: &Component) -> wasmtime::Result<Self> {
        // `PatServicePre::new` type-checks every export once, here.
        let pre = bindings::PatServicePre::new(linker.instantiate_pre(component)?)?;
        // bindgen's `instantiate` looks up and type-checks both exports on
        // every instance; a request needs one, found once by name.
        let interface = component
            .component_type()
            .exports(component.engine())
            .map(|(name, _)| name.to_string())
            .find(|name| name.starts_with("rcpat:tokens/endpoints@"))
            .ok_or_else(|| wasmtime::format_err!("the component exports no endpoints"))?;
        let (_, interface) = component
            .get_export(None, &interface)
            .ok_or_else(|| wasmtime::format_err!("no export {interface}"))?;
        let (_, handle) = component
            .get_export(Some(&interface), "handle")
            .ok_or_else(|| wasmtime::format_err!("the component does not export handle"))?;
        Ok(RcpatPre { pre, handle })
    }

    pub fn instance_pre(&self) -> &InstancePre<T> {
        self.pre.instance_pre()
    }

    /// Answers one request in a fresh instance in `store`. Client errors
    /// are `Ok` replies (Rocket.Chat's); `Err` is a trap or a failed
    /// instantiation.
    pub fn call(
        &self,
        store: &mut Store<T>,
        route: Route,
        settings: &Settings,
        request: &Request,
    ) -> Result<Response, CallError> {
        let result = self
            .instance_pre()
            .instantiate(&mut *store)
            .and_then(|instance| self.dispatch(store, &instance, route, settings, request));
        result.map_err(|e| CallError::classify(e, store.data().memory_refused()))
    }

    /// Answers one request on an instance you keep (`instance_pre().instantiate`).
    pub fn call_on(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        route: Route,
        settings: &Settings,
        request: &Request,
    ) -> Result<Response, CallError> {
        self.dispatch(store, instance, route, settings, request)
            .map_err(|e| CallError::classify(e, store.data().memory_refused()))
    }

    fn dispatch(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        route: Route,
        settings: &Settings,
        request: &Request,
    ) -> wasmtime::Result<Response> {
        let func: Func = instance
            .get_func(&mut *store, self.handle)
            .expect("the handle export of this component is a function");
        let settings = conversions::settings_to_wit(settings, store.data_mut().rcpat().code_key());
        let req = ep::Request::from(request);
        // SAFETY: `PatServicePre::new` checked the `handle` export against
        // this signature in `RcpatPre::new`, and `func` is that export.
        let typed = unsafe {
            TypedFunc::<(Route, &ep::Settings, &ep::Request), (ep::Response,)>::new_unchecked(func)
        };
        let (reply,) = typed.call(store, (route, &settings, &req))?;
        Ok(reply.into())
    }

    /// The component's default settings (Rocket.Chat's; its empty code key
    /// is dropped: yours goes in the context).
    pub fn default_settings(&self, store: &mut Store<T>) -> wasmtime::Result<Settings> {
        let s = self
            .pre
            .instantiate(&mut *store)?
            .rcpat_tokens_endpoints()
            .call_default_settings(store)?;
        Ok(s.into())
    }
}
