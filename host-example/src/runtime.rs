//! Embedding the component the way production wasmtime hosts do: one
//! [`Engine`], the component pre-instantiated once, and per request a fresh
//! [`Store`] from the pooling allocator with a memory cap and an epoch
//! deadline, dropped after the call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{
    Component, ComponentExportIndex, Func, HasSelf, Instance, InstancePre, Linker, TypedFunc,
};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder,
};

use rcpat::model::{Request, Response, Settings};

use crate::bindings::exports::rcpat::tokens::endpoints as ep;
use crate::bindings::{PatService, PatServicePre};

use crate::conversions::settings_to_wit;
use crate::imports::HostState;
use crate::services::{NativeEnv, Services};

/// The endpoints the component exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Logout,
    Me,
    Regenerate,
    Generate,
    List,
    Remove,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Login,
        Endpoint::Logout,
        Endpoint::Me,
        Endpoint::Regenerate,
        Endpoint::Generate,
        Endpoint::List,
        Endpoint::Remove,
    ];

    /// Rocket.Chat's path for the endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Login => "/api/v1/login",
            Endpoint::Logout => "/api/v1/logout",
            Endpoint::Me => "/api/v1/me",
            Endpoint::Regenerate => "/api/v1/users.regeneratePersonalAccessToken",
            Endpoint::Generate => "/api/v1/users.generatePersonalAccessToken",
            Endpoint::List => "/api/v1/users.getPersonalAccessTokens",
            Endpoint::Remove => "/api/v1/users.removePersonalAccessToken",
        }
    }

    /// Its `route` in `wit/world.wit`.
    pub fn route(self) -> ep::Route {
        match self {
            Endpoint::Login => ep::Route::Login,
            Endpoint::Logout => ep::Route::Logout,
            Endpoint::Me => ep::Route::Me,
            Endpoint::Regenerate => ep::Route::RegeneratePersonalAccessToken,
            Endpoint::Generate => ep::Route::GeneratePersonalAccessToken,
            Endpoint::List => ep::Route::GetPersonalAccessTokens,
            Endpoint::Remove => ep::Route::RemovePersonalAccessToken,
        }
    }

    /// Whether the endpoint is `POST` (with a JSON body) rather than `GET`.
    pub fn is_post(self) -> bool {
        !matches!(self, Endpoint::Me | Endpoint::List)
    }

    /// Runs the same logic natively (the baseline, and a cross-check).
    pub fn call_native(self, services: &Services, settings: &Settings, req: &Request) -> Response {
        let env = &mut NativeEnv(services);
        match self {
            Endpoint::Login => rcpat::account::login(env, settings, req),
            Endpoint::Logout => rcpat::account::logout(env, settings, req),
            Endpoint::Me => rcpat::account::me(env, settings, req),
            Endpoint::Regenerate => rcpat::endpoints::regenerate(env, settings, req),
            Endpoint::Generate => rcpat::endpoints::generate(env, settings, req),
            Endpoint::List => rcpat::endpoints::list(env, settings, req),
            Endpoint::Remove => rcpat::endpoints::remove(env, settings, req),
        }
    }
}

/// Why a call produced no reply (the host answers 500 with a fixed text).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The epoch deadline passed (`Trap::Interrupt`).
    #[error("the call exceeded its time limit")]
    Timeout,
    /// The guest asked for more linear memory than its cap.
    #[error("the guest exceeded its memory limit")]
    MemoryLimit,
    /// Any other trap (a guest bug, or a hostile guest).
    #[error("the guest trapped: {0}")]
    Trap(wasmtime::Trap),
    /// Instantiation or a host import failed.
    #[error("the call failed: {0:?}")]
    Other(wasmtime::Error),
}

impl CallError {
    /// Classifies by the trap code and the store's own record, never by text.
    fn classify(e: wasmtime::Error, memory_refused: bool) -> Self {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => CallError::Timeout,
            _ if memory_refused => CallError::MemoryLimit,
            Some(trap) => CallError::Trap(*trap),
            None => CallError::Other(e),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Instances that may exist at once (the pool's size).
    pub max_instances: u32,
    /// Cap on one instance's linear memory.
    pub memory_limit_bytes: usize,
    /// Wall-clock budget for one call; a guest past it is trapped.
    pub timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 64,
            memory_limit_bytes: 16 << 20,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Linear memory kept resident between instances of one pool slot: the
/// component's whole initial memory (128 KiB, see build.rs), so resetting a
/// slot is one memset and the next instance neither page-faults nor
/// mprotects (BENCHMARKS.md: 20.6 µs → 12.3 µs per regeneration).
const KEEP_RESIDENT: usize = 128 << 10;

/// How often the epoch advances; the deadline is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

pub struct Runtime {
    engine: Engine,
    pre: PatServicePre<HostState>,
    exports: Exports,
    config: RuntimeConfig,
    ticker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Runtime {
    /// The engine configuration every runtime uses (also the key of
    /// precompiled artifacts).
    pub fn engine(config: &RuntimeConfig) -> wasmtime::Result<Engine> {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n * 4)
            .total_memories(n)
            .total_tables(n * 2)
            .max_memory_size(config.memory_limit_bytes)
            // Reset a slot's first pages by zeroing rather than decommitting,
            // so the next instance does not page-fault them back in.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            // Where Linux has PAGEMAP_SCAN (6.7+), reset only the pages an
            // instance dirtied instead of memsetting all that is kept
            // resident; elsewhere this falls back to the memset.
            .pagemap_scan(Enabled::Auto);
        let mut c = Config::new();
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        c.epoch_interruption(true);
        c.memory_init_cow(true);
        // `perf` can name the component's compiled functions only through a
        // perf map (/tmp/perf-PID.map); BENCHMARKS.md's profiling recipe sets this.
        if std::env::var_os("RCPAT_PERFMAP").is_some() {
            c.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        Engine::new(&c)
    }

    /// Compiles the embedded component.
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Self> {
        Self::from_component(crate::COMPONENT, config)
    }

    /// Compiles `wasm` (a component) and pre-instantiates it.
    pub fn from_component(wasm: &[u8], config: RuntimeConfig) -> wasmtime::Result<Self> {
        Ok(Self::cached(wasm, config, None)?.0)
    }

    /// Like `from_component`, loading and storing the compiled component
    /// under `cache_dir` (see `cache.rs`).
    pub fn cached(
        wasm: &[u8],
        config: RuntimeConfig,
        cache_dir: Option<&std::path::Path>,
    ) -> wasmtime::Result<(Self, crate::cache::CacheOutcome)> {
        let engine = Self::engine(&config)?;
        let (component, outcome) = crate::cache::load(&engine, wasm, cache_dir)?;
        Ok((Self::from_compiled(engine, component, config)?, outcome))
    }

    pub fn from_compiled(
        engine: Engine,
        component: Component,
        config: RuntimeConfig,
    ) -> wasmtime::Result<Self> {
        let mut linker = Linker::<HostState>::new(&engine);
        PatService::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        // `PatServicePre::new` type-checks every export once, here.
        let pre = PatServicePre::new(linker.instantiate_pre(&component)?)?;
        let exports = Exports::find(&component)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| wasmtime::format_err!("cannot start the epoch thread: {e}"))?
        };
        Ok(Runtime {
            engine,
            pre,
            exports,
            config,
            ticker: Some((stop, ticker)),
        })
    }

    pub fn engine_ref(&self) -> &Engine {
        &self.engine
    }

    fn store(&self, services: &Services) -> Store<HostState> {
        let limits: StoreLimits = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_limit_bytes)
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                services: services.clone(),
                limits: crate::imports::PeakLimits {
                    inner: limits,
                    peak_memory: 0,
                    memory_refused: false,
                },
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        store
    }

    /// The per-call time limit in epoch ticks.
    fn deadline_ticks(&self) -> u64 {
        (self.config.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// One instance kept for many calls, as hosts that instantiate once do
    /// (jco, most plugin systems); `host-example` itself uses a fresh
    /// instance per request. For measuring the guest under reuse.
    pub fn reused_instance(&self, services: &Services) -> wasmtime::Result<ReusedInstance<'_>> {
        let mut store = self.store(services);
        let instance = self.instance_pre().instantiate(&mut store)?;
        Ok(ReusedInstance {
            runtime: self,
            store,
            instance,
        })
    }

    /// Instantiates a fresh instance and drops it (what each request pays).
    pub fn instantiate_only(&self, services: &Services) -> wasmtime::Result<()> {
        let mut store = self.store(services);
        self.instance_pre().instantiate(&mut store).map(drop)
    }

    fn instance_pre(&self) -> &InstancePre<HostState> {
        self.pre.instance_pre()
    }

    /// Runs `endpoint` in a fresh instance. An `Err` is a trap or host
    /// failure (the host answers 500); client errors are `Ok` replies.
    pub fn call(
        &self,
        services: &Services,
        endpoint: Endpoint,
        settings: &Settings,
        req: &Request,
    ) -> Result<Response, CallError> {
        self.call_measuring_memory(services, endpoint, settings, req)
            .map(|(r, _)| r)
    }

    /// Like `call`, also returning the guest's peak linear memory in bytes.
    pub fn call_measuring_memory(
        &self,
        services: &Services,
        endpoint: Endpoint,
        settings: &Settings,
        req: &Request,
    ) -> Result<(Response, usize), CallError> {
        let mut store = self.store(services);
        let result = self.call_in(&mut store, endpoint, settings, req);
        let limits = &store.data().limits;
        match result {
            Ok(r) => Ok((r.into(), limits.peak_memory)),
            Err(e) => Err(CallError::classify(e, limits.memory_refused)),
        }
    }

    fn call_in(
        &self,
        store: &mut Store<HostState>,
        endpoint: Endpoint,
        settings: &Settings,
        req: &Request,
    ) -> wasmtime::Result<ep::Response> {
        let instance = self.instance_pre().instantiate(&mut *store)?;
        dispatch(
            self.exports.handle(&instance, store),
            store,
            endpoint,
            settings,
            req,
        )
    }

    /// The component's default settings (Rocket.Chat's defaults).
    pub fn default_settings(&self, services: &Services) -> wasmtime::Result<Settings> {
        let mut store = self.store(services);
        let s = self
            .pre
            .instantiate(&mut store)?
            .rcpat_tokens_endpoints()
            .call_default_settings(&mut store)?;
        Ok(s.into())
    }
}

/// Where the `handle` export sits in the component, found once by name.
///
/// bindgen's `PatServicePre::instantiate` looks up and type-checks both
/// exports again on every instance (a tenth of an instantiation in `perf`);
/// a request needs one, and its type was checked at start.
struct Exports {
    handle: ComponentExportIndex,
}

impl Exports {
    fn find(component: &Component) -> wasmtime::Result<Self> {
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
        Ok(Exports { handle })
    }

    fn handle(&self, instance: &Instance, store: &mut Store<HostState>) -> Func {
        instance
            .get_func(store, self.handle)
            .expect("the handle export of this component is a function")
    }
}

/// Calls the `handle` export for `endpoint`.
fn dispatch(
    func: Func,
    store: &mut Store<HostState>,
    endpoint: Endpoint,
    settings: &Settings,
    req: &Request,
) -> wasmtime::Result<ep::Response> {
    let settings = settings_to_wit(settings, store.data().services.code_key());
    let req = ep::Request::from(req);
    // SAFETY: `PatServicePre::new` checked the `handle` export against this
    // signature when the runtime was built, and `func` is that export.
    let typed = unsafe {
        TypedFunc::<(ep::Route, &ep::Settings, &ep::Request), (ep::Response,)>::new_unchecked(func)
    };
    let (reply,) = typed.call(store, (endpoint.route(), &settings, &req))?;
    Ok(reply)
}

/// See [`Runtime::reused_instance`].
pub struct ReusedInstance<'a> {
    runtime: &'a Runtime,
    store: Store<HostState>,
    instance: Instance,
}

impl ReusedInstance<'_> {
    /// Calls `endpoint` on the kept instance, with a fresh time limit.
    pub fn call(
        &mut self,
        endpoint: Endpoint,
        settings: &Settings,
        req: &Request,
    ) -> Result<Response, CallError> {
        self.store.set_epoch_deadline(self.runtime.deadline_ticks());
        let func = self.runtime.exports.handle(&self.instance, &mut self.store);
        let result = dispatch(func, &mut self.store, endpoint, settings, req);
        let refused = self.store.data().limits.memory_refused;
        result
            .map(Into::into)
            .map_err(|e| CallError::classify(e, refused))
    }

    /// The guest's linear memory now, in bytes.
    pub fn memory_size(&mut self) -> usize {
        self.store.data().limits.peak_memory
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}
