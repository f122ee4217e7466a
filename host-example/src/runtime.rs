//! Embedding the component the way production wasmtime hosts do: one
//! [`Engine`], the component pre-instantiated once, and per request a fresh
//! [`Store`] from the pooling allocator with a memory cap and an epoch
//! deadline, dropped after the call. The linking and calling are the
//! `rcpat-wasmtime` crate's (what any embedder uses); this module adds the
//! pooling engine, the epoch ticker, the limits and the compile cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Instance, InstancePre, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, StoreLimits, StoreLimitsBuilder,
};

use rcpat::model::{Request, Response, Settings};
use rcpat_wasmtime::{RcpatCtx, RcpatPre, RcpatView, Route};

pub use rcpat_wasmtime::CallError;

use crate::services::{NativeEnv, Services};

/// Per-store data: the request's context and its resource limits.
pub struct HostState {
    ctx: RcpatCtx,
    limits: PeakLimits,
}

impl RcpatView for HostState {
    fn rcpat(&mut self) -> &mut RcpatCtx {
        &mut self.ctx
    }
    fn memory_refused(&self) -> bool {
        self.limits.memory_refused
    }
}

/// `StoreLimits`, remembering the largest linear memory the guest asked for
/// (what one instance really costs) and whether a growth was refused (so a
/// failed call is classified by that fact, not by its error text).
struct PeakLimits {
    inner: StoreLimits,
    peak_memory: usize,
    memory_refused: bool,
}

impl ResourceLimiter for PeakLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        match allowed {
            Ok(true) => self.peak_memory = self.peak_memory.max(desired),
            Ok(false) | Err(_) => self.memory_refused = true,
        }
        allowed
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }
    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }
    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

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
    Audit,
}

impl Endpoint {
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Login,
        Endpoint::Logout,
        Endpoint::Me,
        Endpoint::Regenerate,
        Endpoint::Generate,
        Endpoint::List,
        Endpoint::Remove,
        Endpoint::Audit,
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
            Endpoint::Audit => "/api/v1/audit.personalAccessTokens",
        }
    }

    /// Its `route` in `wit/world.wit`.
    pub fn route(self) -> Route {
        match self {
            Endpoint::Login => Route::Login,
            Endpoint::Logout => Route::Logout,
            Endpoint::Me => Route::Me,
            Endpoint::Regenerate => Route::RegeneratePersonalAccessToken,
            Endpoint::Generate => Route::GeneratePersonalAccessToken,
            Endpoint::List => Route::GetPersonalAccessTokens,
            Endpoint::Remove => Route::RemovePersonalAccessToken,
            Endpoint::Audit => Route::AuditPersonalAccessTokens,
        }
    }

    /// Whether the endpoint is `POST` (with a JSON body) rather than `GET`.
    pub fn is_post(self) -> bool {
        !matches!(self, Endpoint::Me | Endpoint::List | Endpoint::Audit)
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
            Endpoint::Audit => rcpat::audit_route::list(env, settings, req),
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
    pre: RcpatPre<HostState>,
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
        rcpat_wasmtime::add_to_linker(&mut linker)?;
        rcpat_wasmtime::add_wasi_to_linker(&mut linker)?;
        let pre = RcpatPre::new(&linker, &component)?;
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
                ctx: services.ctx().clone(),
                limits: PeakLimits {
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
        let reply = self.pre.call(&mut store, endpoint.route(), settings, req)?;
        Ok((reply, store.data().limits.peak_memory))
    }

    /// The component's default settings (Rocket.Chat's defaults).
    pub fn default_settings(&self, services: &Services) -> wasmtime::Result<Settings> {
        let mut store = self.store(services);
        self.pre.default_settings(&mut store)
    }
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
        self.runtime.pre.call_on(
            &mut self.store,
            &self.instance,
            endpoint.route(),
            settings,
            req,
        )
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
