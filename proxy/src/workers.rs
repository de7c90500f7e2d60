//! Thread-per-core serving. The accept loops hand each new connection to one worker: a thread
//! running a current-thread runtime that owns the connection's socket, its tasks and its
//! backend pool (`pool`). A request then never wakes another thread, which on a
//! busy machine is most of a proxy's cost (see bench-results/proxy.md); nginx works the
//! same way. Workers take connections in turn; a connection stays where it landed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// Work for a worker: runs inside the worker's runtime, so sockets it registers and tasks it
/// spawns belong to that worker.
pub(crate) type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

pub(crate) struct Workers {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` worker threads (at least one). They stop when `Workers` is dropped, once
    /// the jobs they already started have finished or their runtime is dropped with them.
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let mut senders = Vec::new();
        for i in 0..count.max(1) {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("proxy-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            crate::spawn_job(job);
                        }
                    });
                })?;
            senders.push(tx);
        }
        Ok(Self {
            senders,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands `job` to the next worker in turn; `false` when every worker has gone.
    pub(crate) fn submit(&self, job: Job) -> bool {
        let n = self.senders.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut job = job;
        for k in 0..n {
            match self.senders[(start + k) % n].send(job) {
                Ok(()) => return true,
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        false
    }

    /// The default worker count: one per core this process may use.
    pub(crate) fn default_count() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn jobs_run_on_worker_threads_in_turn() {
        let workers = Workers::start(2).expect("workers start");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for _ in 0..4 {
            let seen = seen.clone();
            let done = done_tx.clone();
            assert!(workers.submit(Box::new(move || {
                Box::pin(async move {
                    // A worker is a current-thread runtime: its jobs may spawn local tasks.
                    let name = std::thread::current().name().map(str::to_owned);
                    seen.lock().expect("lock").push(name);
                    let _ = done.send(());
                })
            })));
        }
        for _ in 0..4 {
            done_rx.recv().await.expect("job finished");
        }
        let seen = seen.lock().expect("lock").clone();
        let names: HashSet<_> = seen.iter().flatten().cloned().collect();
        assert_eq!(seen.len(), 4);
        assert_eq!(
            names,
            HashSet::from(["proxy-worker-0".to_owned(), "proxy-worker-1".to_owned()])
        );
    }
}
