//! Graceful shutdown and the one way to start a task: one cancellation token for the
//! process, signals that trip it, tasks spawned by name into [`Tasks`], a supervisor that
//! stops everything when one task fails, and [`every`], the one periodic loop.
//!
//! `tokio::spawn` is called only here (clippy's `disallowed-methods` enforces it), so every
//! task of a service has a name in its logs and an owner that waits for it.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The process-wide stop signal; clone it into every long-running task.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown that trips on SIGINT or SIGTERM.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let token = shutdown.token.clone();
        spawn_detached("signals", async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            token.cancel();
        });
        shutdown
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown was triggered.
    pub fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A service's long-running tasks, each under a name its logs carry.
pub struct Tasks<E> {
    set: JoinSet<Result<(), E>>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl<E: Send + 'static> Default for Tasks<E> {
    fn default() -> Self {
        Self {
            set: JoinSet::new(),
            names: HashMap::new(),
        }
    }
}

impl<E: Send + 'static> Tasks<E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `task` as `name`: a failure is reported with the name, and under a span
    /// exporter the task runs in a `task` span (see [`spawn_detached`]).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        #[allow(clippy::disallowed_methods)] // the one supervisor
        let handle = self.set.spawn(task.instrument(task_span(name)));
        self.names.insert(handle.id(), name);
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Starts `task` on its own, for work whose end nobody waits for (a signal listener, a
/// job whose progress is read elsewhere, one proxied connection). When spans are exported it
/// runs in a `task` span named `name`; when not, in none: log lines never show spans
/// (`telemetry::init_tracing`), and entering a span on every poll of a connection's task was
/// measurable on the proxy's hot path (bench-results/proxy.md).
pub fn spawn_detached<F>(name: &'static str, task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[allow(clippy::disallowed_methods)] // the one factory of detached tasks
    tokio::spawn(task.instrument(task_span(name)))
}

/// The span a spawned task runs in: `task` with its name when spans are exported, none
/// otherwise (see [`spawn_detached`]).
fn task_span(name: &'static str) -> tracing::Span {
    if crate::telemetry::spans_exported() {
        tracing::info_span!("task", task = name)
    } else {
        tracing::Span::none()
    }
}

/// Calls `f` every `period` (the first time at once) until `stop`; a call that overruns
/// delays the next one instead of bursting to catch up.
pub async fn every<F, Fut>(period: Duration, stop: &CancellationToken, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = f() => {}
        }
    }
}

/// Runs `tasks` until all finish. The first task that fails (or ends while others still run)
/// trips `shutdown`; the rest then get `drain` to finish before they are aborted.
pub async fn supervise<E>(tasks: Tasks<E>, shutdown: &Shutdown, drain: Duration) -> Result<(), E>
where
    E: From<tokio::task::JoinError> + std::fmt::Display + Send + 'static,
{
    let Tasks {
        set: mut tasks,
        names,
    } = tasks;
    let mut first_error: Option<E> = None;
    loop {
        let next = if shutdown.is_triggered() {
            match tokio::time::timeout(drain, tasks.join_next_with_id()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(left = tasks.len(), "drain deadline passed, aborting tasks");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        } else {
            tasks.join_next_with_id().await
        };
        let Some(joined) = next else { break };
        let (name, result) = match joined {
            Ok((id, r)) => (names.get(&id).copied().unwrap_or("?"), r),
            Err(e) => (names.get(&e.id()).copied().unwrap_or("?"), Err(E::from(e))),
        };
        match &result {
            Ok(()) if !shutdown.is_triggered() => {
                tracing::warn!(
                    task = name,
                    "task ended before shutdown; stopping the service"
                )
            }
            Ok(()) => tracing::debug!(task = name, "task finished"),
            Err(e) => tracing::error!(task = name, error = %e, "task failed; stopping the service"),
        }
        shutdown.trigger();
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Failed(&'static str);

    impl From<tokio::task::JoinError> for Failed {
        fn from(_: tokio::task::JoinError) -> Self {
            Self("panicked")
        }
    }

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    #[tokio::test]
    async fn one_failing_task_stops_the_others_and_its_error_is_returned() {
        let shutdown = Shutdown::new();
        let mut tasks = Tasks::new();
        let stop = shutdown.token();
        let drained = Arc::new(AtomicUsize::new(0));
        let d = drained.clone();
        tasks.spawn("waits", async move {
            stop.cancelled().await;
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        tasks.spawn("fails", async { Err(Failed("broken")) });
        let result = supervise(tasks, &shutdown, Duration::from_secs(5)).await;
        assert_eq!(result, Err(Failed("broken")));
        assert!(shutdown.is_triggered());
        assert_eq!(drained.load(Ordering::SeqCst), 1, "the other task drained");
    }

    #[tokio::test]
    async fn a_task_that_outlives_the_drain_window_is_aborted() {
        let shutdown = Shutdown::new();
        let mut tasks: Tasks<Failed> = Tasks::new();
        tasks.spawn("stuck", std::future::pending());
        shutdown.trigger();
        let started = std::time::Instant::now();
        let result = supervise(tasks, &shutdown, Duration::from_millis(100)).await;
        assert_eq!(result, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn every_runs_at_once_then_each_period_until_stopped() {
        let stop = CancellationToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let (c, s) = (calls.clone(), stop.clone());
        let looping = spawn_detached("every", async move {
            every(Duration::from_secs(10), &s, || {
                c.fetch_add(1, Ordering::SeqCst);
                async {}
            })
            .await;
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "at 0 s, 10 s and 20 s");
        stop.cancel();
        looping.await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "nothing after stop");
    }
}
