//! Accepting and keeping HTTP connections, for the API listener and the
//! admin listener alike: what one client may hold and how a connection ends.
//!
//! - **Caps.** At most `max_connections` open, and at most
//!   `max_per_address` from one client address (trusted proxies exempt), so
//!   one client cannot hold every slot. A connection over either cap gets a 503 and is closed;
//!   refusals are logged as one rate-limited line (`RefusalLog`), not one
//!   line each.
//! - **Idle limits.** HTTP/1.1: the header-read timeout (hyper's), which also
//!   ends idle keep-alive connections. HTTP/2: a connection with no stream
//!   for the same time gets GOAWAY and closes (hyper's PINGs alone would keep
//!   a client that only answers them forever).
//! - **Drain.** On shutdown the listener closes, but open connections keep
//!   being read: each connection's next HTTP/1.1 reply carries
//!   `Connection: close`, HTTP/2 connections get GOAWAY, and an idle
//!   connection is closed only once it has been idle for `drain_grace` since
//!   the shutdown began (or when `shutdown_timeout` ends), so a request a
//!   client sends on a keep-alive connection just as the server stops still
//!   gets its reply.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use rcpat::reply::ApiError;

/// What bounds a listener's connections.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_per_address: usize,
    /// Peers the per-address cap does not apply to: trusted reverse
    /// proxies, whose connections carry many clients.
    pub exempt: crate::client_address::Proxies,
    /// Time to send a request's headers; also the idle limit of a
    /// keep-alive (HTTP/1.1) or stream-less (HTTP/2) connection.
    pub idle_timeout: Duration,
    /// During a shutdown, how long a connection may stay idle before it is
    /// closed.
    pub drain_grace: Duration,
    /// How long a shutdown waits for connections to finish.
    pub shutdown_timeout: Duration,
}

/// How a listener stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished (every request in flight was answered).
    Drained,
    /// `shutdown_timeout` passed with connections still open; they were cut.
    TimedOut,
}

/// Serves `router` on `listener` (over TLS when `tls` is given: HTTP/2 or
/// HTTP/1.1 by ALPN) until `shutdown` completes, then drains (see the
/// module's notes).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Stopped {
    let gate = Arc::new(Gate::new(&limits));
    let refusals = RefusalLog::default();
    let draining = Arc::new(Drain::default());
    let conn_template = Template {
        router,
        tls,
        draining: draining.clone(),
        limits: limits.clone(),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, for one: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        admit(stream, peer, &gate, &refusals, &conn_template);
    }
    // Connections the kernel completed but we had not accepted yet are
    // served too (closing the listener would reset them).
    while let Ok(Ok((stream, peer))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await
    {
        admit(stream, peer, &gate, &refusals, &conn_template);
    }
    drop(listener);
    draining.begin();
    // Every connection holds a permit of the total cap until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.shutdown_timeout, gate.total.acquire_many(all)).await {
        Ok(_) => Stopped::Drained,
        Err(_) => Stopped::TimedOut,
    }
}

/// What every connection of a listener shares.
#[derive(Clone)]
struct Template {
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    draining: Arc<Drain>,
    limits: ConnLimits,
}

/// Admits an accepted connection under the caps and serves it on a task of
/// its own, or answers it 503.
fn admit(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    gate: &Arc<Gate>,
    refusals: &RefusalLog,
    template: &Template,
) {
    let ticket = match gate.admit(peer.ip()) {
        Ok(ticket) => ticket,
        Err(why) => {
            refusals.record(peer.ip(), why);
            crate::telemetry::connection_refused();
            tokio::spawn(refuse(stream));
            return;
        }
    };
    let conn = Connection {
        router: template.router.clone(),
        peer,
        activity: Arc::new(Activity::new()),
        draining: template.draining.clone(),
        limits: template.limits.clone(),
    };
    let tls = template.tls.clone();
    tokio::spawn(async move {
        let _ticket = ticket;
        match tls {
            None => conn.http1(stream).await,
            Some(acceptor) => {
                // The handshake is bounded like a request's headers.
                let handshake = acceptor.accept(stream);
                let Ok(Ok(tls)) = tokio::time::timeout(conn.limits.idle_timeout, handshake).await
                else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    conn.http2(tls).await;
                } else {
                    conn.http1(tls).await;
                }
            }
        }
    });
}

/// Answers a connection over a cap with a 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let reply = ApiError::Unavailable.to_response();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        reply.body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(reply.body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// The caps: a permit of the total, and a count per address.
struct Gate {
    total: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
    exempt: crate::client_address::Proxies,
}

#[derive(Clone, Copy, Debug)]
enum Refusal {
    Total,
    Address,
}

/// One admitted connection's hold on the caps, given back when dropped.
struct Ticket {
    _total: OwnedSemaphorePermit,
    gate: Arc<Gate>,
    /// The address counted against the per-address cap, if any.
    ip: Option<IpAddr>,
}

impl Gate {
    fn new(limits: &ConnLimits) -> Self {
        Gate {
            total: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_address: Mutex::new(HashMap::new()),
            max_per_address: limits.max_per_address.max(1),
            exempt: limits.exempt.clone(),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Total)?;
        let counted = !self.exempt.trusts(ip);
        if counted {
            let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let count = counts.entry(ip).or_insert(0);
            if *count >= self.max_per_address {
                return Err(Refusal::Address);
            }
            *count += 1;
        }
        Ok(Ticket {
            _total: total,
            gate: self.clone(),
            ip: counted.then_some(ip),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut counts = self
            .gate
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// Refused connections, logged at most once a second with how many were
/// refused since the last line (a flood of refusals is one line a second,
/// not one each).
#[derive(Default)]
struct RefusalLog {
    since_last: AtomicU64,
    last_line: Mutex<Option<Instant>>,
}

impl RefusalLog {
    fn record(&self, ip: IpAddr, why: Refusal) {
        let refused = self.since_last.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        self.since_last.fetch_sub(refused, Ordering::Relaxed);
        let reason = match why {
            Refusal::Total => "too many open connections",
            Refusal::Address => "too many open connections from one address",
        };
        tracing::warn!(event = "connection_refused", client = %ip, refused, "{reason}");
    }
}

/// Whether the listener is draining, and since when.
#[derive(Default)]
struct Drain {
    on: AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Drain {
    fn begin(&self) {
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.on.store(true, Ordering::SeqCst);
    }

    fn since(&self) -> Option<Instant> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        *self.since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Requests running on one connection, and when it last had none.
struct Activity {
    running: AtomicU32,
    /// Milliseconds since `epoch` at the end of the last request.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity {
            running: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Since when the connection has had no request running; `None` while
    /// one runs.
    fn idle_since(&self) -> Option<Instant> {
        if self.running.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst)))
    }
}

/// Counts one request as running until dropped (also when the client goes
/// away mid-request and the request's future is dropped).
struct Running(Arc<Activity>);

impl Running {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.running.fetch_add(1, Ordering::SeqCst);
        Running(activity.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let now = self.0.epoch.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(now, Ordering::SeqCst);
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One accepted connection, before its protocol is known.
struct Connection {
    router: axum::Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    draining: Arc<Drain>,
    limits: ConnLimits,
}

/// The router as a hyper service for connection `$conn`: it records the
/// connection's activity and, on HTTP/1.1 (`$http1`) while draining, closes
/// the connection after the reply. (A macro: the closure's type cannot be
/// named, and boxing would cost an allocation per request.)
macro_rules! service {
    ($conn:expr, $http1:expr) => {{
        use tower::Service;
        let (router, peer) = ($conn.router.clone(), $conn.peer);
        let (activity, draining) = ($conn.activity.clone(), $conn.draining.clone());
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let running = Running::start(&activity);
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            let draining = draining.clone();
            async move {
                let mut resp = router.call(req.map(Body::new)).await?;
                if $http1 && draining.since().is_some() {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                drop(running);
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    }};
}

impl Connection {
    async fn http1<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use hyper_util::rt::{TokioIo, TokioTimer};
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(self.limits.idle_timeout);
        let conn = b.serve_connection(TokioIo::new(io), service!(self, true));
        // Idle HTTP/1.1 connections end by the header-read timeout.
        self.drive(conn, None, |c| c.graceful_shutdown()).await;
    }

    async fn http2<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        let idle = self.limits.idle_timeout;
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .keep_alive_interval(Some(idle))
            .keep_alive_timeout(idle)
            .max_concurrent_streams(64);
        let conn = b.serve_connection(TokioIo::new(io), service!(self, false));
        self.drive(conn, Some(idle), |c| c.graceful_shutdown())
            .await;
    }

    /// Runs `conn` to its end, starting its graceful shutdown (`shut`: the
    /// reply in flight finishes, then HTTP/1.1 closes; HTTP/2 sends GOAWAY)
    /// once it has been idle for `idle_limit`, or, while draining, for the
    /// drain grace since the later of its last request and the drain's
    /// start. HTTP/2 connections are shut as soon as a drain begins: GOAWAY
    /// lets clients finish their streams and go elsewhere.
    async fn drive<C>(
        &self,
        conn: C,
        idle_limit: Option<Duration>,
        mut shut: impl FnMut(Pin<&mut C>),
    ) where
        C: Future,
    {
        let mut conn = std::pin::pin!(conn);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let http2 = idle_limit.is_some();
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = tick.tick() => {}
            }
            let draining = self.draining.since();
            let shut_now = if http2 && draining.is_some() {
                true
            } else if let Some(idle_since) = self.activity.idle_since() {
                idle_limit.is_some_and(|limit| idle_since.elapsed() >= limit)
                    || draining.is_some_and(|began| {
                        idle_since.max(began).elapsed() >= self.limits.drain_grace
                    })
            } else {
                false
            };
            if shut_now {
                shut(conn.as_mut());
                break;
            }
        }
        // Shutting down: the connection ends once its replies are written.
        conn.await;
    }
}
