//! Password checks (bcrypt, about 70 ms each in the component) run on a
//! small pool of their own, so a flood of logins cannot starve token
//! requests: a few worker threads (one core's worth by default) at a lower
//! scheduling priority, and a login that finds no free worker within a short
//! wait is refused with 429 instead of queueing without bound.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

type Job = Box<dyn FnOnce() + Send>;

pub struct PasswordPool {
    free: Arc<Semaphore>,
    wait: Duration,
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// The `nice` value of the workers: the scheduler gives token requests
/// (nice 0) about ten times their share of a contended core.
const WORKER_NICE: i32 = 10;

impl PasswordPool {
    /// `workers` threads; a job waits at most `wait` for one.
    pub fn new(workers: usize, wait: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    // SAFETY: setpriority on this thread's own id; a failure
                    // only leaves the default priority.
                    unsafe {
                        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                        libc::setpriority(libc::PRIO_PROCESS, tid, WORKER_NICE);
                    }
                    loop {
                        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        job();
                    }
                })?;
        }
        Ok(PasswordPool {
            free: Arc::new(Semaphore::new(workers.max(1))),
            wait,
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on a worker.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let permit = tokio::time::timeout(self.wait, self.free.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy)?
            .map_err(|_| PoolError::Failed)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            // A panic fails this job only; the worker stays.
            if let Ok(value) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = tx.send(value);
            }
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| PoolError::Failed)?;
        rx.await.map_err(|_| PoolError::Failed)
    }
}

/// Why a job did not run to completion.
#[derive(Debug, PartialEq, Eq)]
pub enum PoolError {
    /// No worker was free within the wait.
    Busy,
    /// The job panicked or the pool is gone.
    Failed,
}
