//! Starting the server from its options: storage and keys
//! (`services_from`, `open_backend`), the application (`app_from`), the
//! descriptor limit, and `RunningServer`, which runs the API and admin
//! listeners on a runtime of its own. The one module that reads
//! `config::Options` for the server, so `server.rs` and `config.rs` do not
//! depend on each other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::error::Context;

use crate::runtime::Runtime;
use crate::server::{App, Backend, Limits, Stopped, serve};
use crate::services::Services;

/// Opens the configured storage and mailer.
pub fn services_from(opts: &crate::config::Options) -> crate::error::Result<Services> {
    use crate::config::StorageKind;
    let keys = Arc::new(match opts.storage() {
        // Codes stored in memory die with the process; so may their key.
        StorageKind::Memory if opts.secret_key_file.is_none() => crate::keys::Keys::random(),
        _ => crate::keys::Keys::load(&opts.secret_key_file())?,
    });
    let storage = open_backend(opts, keys.clone())?;
    let from = opts.mail_from();
    let mailer: Arc<dyn crate::mail::Mailer> = match opts.smtp()? {
        Some(smtp) => Arc::new(crate::mail::SmtpMailer::new(&smtp, &from)?),
        None => Arc::new(crate::mail::Outbox::with_sender(opts.outbox(), &from)?),
    };
    Ok(Services::new(storage, mailer).with_keys(keys))
}

/// Opens the configured store, encrypting secrets with `keys`.
pub fn open_backend(
    opts: &crate::config::Options,
    keys: Arc<crate::keys::Keys>,
) -> crate::error::Result<Arc<dyn crate::storage::Backend>> {
    use crate::config::StorageKind;
    let backend: Arc<dyn crate::storage::Backend> = match opts.storage() {
        StorageKind::Sqlite => Arc::new(crate::storage::SqliteStorage::open_with_keys(
            opts.db(),
            keys.clone(),
        )?),
        StorageKind::Memory => Arc::new(crate::storage::MemoryStorage::new()),
        StorageKind::Postgres => {
            let config = opts.postgres().ok_or_else(|| {
                crate::error::Error::invalid(
                    "--storage postgres needs --database-url (or RCPAT_DATABASE_URL)",
                )
            })?;
            Arc::new(crate::storage::PostgresStorage::open(
                &config,
                keys.clone(),
            )?)
        }
    };
    backend.set_host_id(&opts.host_id()?)?;
    // A key file whose key N is not the key N storage sealed secrets under
    // would fail every such user, or write under a key no other host has.
    let missing = keys.check_recorded(&backend.key_fingerprints()?)?;
    if !missing.is_empty() {
        tracing::warn!(
            keys = ?missing,
            "storage holds secrets under keys this key file lacks: copy the newest key file here"
        );
    }
    Ok(backend)
}

/// Builds the application the options describe; also says whether the
/// compiled component came from the cache (`None` for the native backend).
pub fn app_from(
    opts: &crate::config::Options,
) -> wasmtime::Result<(App, Option<crate::cache::CacheOutcome>)> {
    if !opts.settings().token_prefix.is_valid() {
        wasmtime::bail!(
            "--token-prefix must be {} to {} characters of A-Z, a-z, 0-9 and _ (or empty: none)",
            rcpat::token::MIN_PREFIX_LEN,
            rcpat::token::MAX_PREFIX_LEN
        );
    }
    let services = services_from(opts)?;
    let runtime_config = opts.runtime();
    let concurrency = runtime_config.max_instances as usize;
    let (backend, outcome) = if opts.native() {
        (Backend::Native, None)
    } else {
        let owned;
        let wasm: &[u8] = match &opts.component {
            Some(path) => {
                owned = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                &owned
            }
            None => crate::COMPONENT,
        };
        let (runtime, outcome) = Runtime::cached(wasm, runtime_config, opts.cache_dir().as_deref())
            .context("loading the component")?;
        (Backend::Wasm(Box::new(runtime)), Some(outcome))
    };
    let mut limits = Limits {
        concurrency,
        ..opts.limits()
    };
    // Connections beyond what descriptors allow would fail at accept, and
    // starve the database and mail of descriptors: keep a margin.
    if let Some(soft) = descriptor_limit() {
        let room = soft.saturating_sub(256).max(16) as usize;
        limits.max_connections = limits.max_connections.min(room);
    }
    let mut app = App::new(backend, services, opts.settings(), limits)?;
    app.audit_retention = opts.audit_retention();
    app.tls = opts.tls()?.map(tokio_rustls::TlsAcceptor::from);
    app.proxies = opts.proxies()?;
    app.web = opts.web();
    Ok((app, outcome))
}

/// The soft limit on open descriptors.
pub fn descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// Raises the soft descriptor limit to the hard one (the default soft limit
/// of 1,024 lets a thousand idle sockets stop a server); returns the new one.
pub fn raise_descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    descriptor_limit()
}

/// A server running on its own thread and tokio runtime (tests, benches).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Whether it serves HTTPS.
    pub https: bool,
    pub cache: Option<crate::cache::CacheOutcome>,
    pub startup: Duration,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Stopped>>,
}

impl RunningServer {
    /// Starts a server for `opts` (listening where they say; port 0 picks one).
    pub fn start(opts: &crate::config::Options) -> wasmtime::Result<Self> {
        Self::start_with_admin(opts, None)
    }

    /// The same, also serving `/metrics`, `/health` and `/ready` on `admin`
    /// (stopped with the server, after its requests have drained).
    pub fn start_with_admin(
        opts: &crate::config::Options,
        admin: Option<(
            std::net::TcpListener,
            metrics_exporter_prometheus::PrometheusHandle,
        )>,
    ) -> wasmtime::Result<Self> {
        let started = Instant::now();
        let (app, cache) = app_from(opts)?;
        let https = app.tls.is_some();
        crate::telemetry::instance_pool(app.limits.concurrency);
        if let Some(outcome) = cache {
            crate::telemetry::cache(outcome.label());
        }
        if let Some((listener, _)) = &admin {
            listener.set_nonblocking(true)?;
        }
        let listener = std::net::TcpListener::bind(opts.listen())
            .with_context(|| format!("bind {}", opts.listen()))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Arc::new(app);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let stopped = rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
                let admin_task = admin.map(|(admin_listener, handle)| {
                    let router = crate::admin_listener::router(app.clone(), handle);
                    let admin_listener =
                        tokio::net::TcpListener::from_std(admin_listener).expect("admin listener");
                    tokio::spawn(crate::admin_listener::serve(
                        admin_listener,
                        router,
                        app.limits.connections(),
                        async move {
                            let _ = admin_stopped.await;
                        },
                    ))
                });
                // Dies with the runtime; each batch is its own short write.
                let pruner = app
                    .audit_retention
                    .map(|keep| tokio::spawn(crate::audit::prune_every(app.clone(), keep)));
                let stopped = serve(listener, app, async move {
                    let _ = rx.await;
                })
                .await;
                if let Some(p) = pruner {
                    p.abort();
                }
                // Probes answer until the requests have drained.
                let _ = admin_stop.send(());
                if let Some(task) = admin_task {
                    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
                }
                stopped
            });
            // Requests cut by the timeout may still run on blocking threads;
            // they finish their storage call (each is atomic) or are abandoned
            // here. Storage closes when the last of them drops the app.
            rt.shutdown_timeout(Duration::from_secs(1));
            stopped
        });
        Ok(RunningServer {
            addr,
            https,
            cache,
            startup: started.elapsed(),
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Stops gracefully (see `serve`) and closes storage; answers how.
    pub fn shutdown(mut self) -> Stopped {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(stopped)) => stopped,
            Some(Err(_)) => Stopped::TimedOut,
            None => Stopped::Drained,
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}
