//! Graceful shutdown: one cancellation token for the process, signals that trip it, and a
//! supervisor that stops everything when one task fails.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
        tokio::spawn(async move {
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

/// Runs `tasks` until all finish. The first task that fails (or ends while others still run)
/// trips `shutdown`; the rest then get `drain` to finish before they are aborted.
pub async fn supervise<E>(
    mut tasks: JoinSet<Result<(), E>>,
    shutdown: &Shutdown,
    drain: Duration,
) -> Result<(), E>
where
    E: From<tokio::task::JoinError> + Send + 'static,
{
    let mut first_error: Option<E> = None;
    loop {
        let next = if shutdown.is_triggered() {
            match tokio::time::timeout(drain, tasks.join_next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!(left = tasks.len(), "drain deadline passed, aborting tasks");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        } else {
            tasks.join_next().await
        };
        let Some(joined) = next else { break };
        shutdown.trigger();
        let result = joined.map_err(E::from).and_then(|r| r);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
