//! The circuit breaker of one subscriber. Closed: every record gets its in-process attempts.
//! After `consecutive_failures` failed attempts in a row, or a failure ratio of at least
//! `failure_ratio` over the last `window` attempts, it opens: records go straight to a retry
//! tier with no attempt, so a dead target's backlog parks at produce speed instead of one
//! timeout per record. After `open_ms` it is half-open: one record at a time probes the target
//! (one attempt); a success closes the breaker, a failure opens it for another `open_ms`.
//!
//! Only failures that say something about the target count: no answer (connect error,
//! timeout), 5xx, 408 and 429. Any other 4xx is about the record, not the target.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use crate::metrics::{BreakerLabels, DispatchMetrics, SubscriberLabels};

/// Per-subscriber breaker settings (`[subscribers.breaker]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Off: every record always gets its in-process attempts.
    pub enabled: bool,
    /// Failed attempts in a row that open the breaker (0: this rule is off).
    pub consecutive_failures: u32,
    /// Share of failed attempts over the last `window` attempts that opens the breaker
    /// (checked only once `window` attempts were seen; 0 or above 1: this rule is off).
    pub failure_ratio: f64,
    /// Attempts the failure ratio is computed over.
    pub window: u32,
    /// How long the breaker stays open before one probe may test the target.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 10,
            failure_ratio: 0.5,
            window: 100,
            open_ms: 5_000,
        }
    }
}

/// Where a breaker stands; the gauge exports the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }
}

/// What the breaker lets one record do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: the usual in-process attempts.
    Attempts,
    /// Half-open and this record is the probe: one attempt, then [`Breaker::record`].
    Probe,
    /// Open (or a probe is already out): park without an attempt.
    Park,
}

struct Inner {
    state: State,
    opened_at: Option<Instant>,
    probing: bool,
    consecutive: u32,
    /// The last `window` outcomes, `true` for a failure.
    recent: VecDeque<bool>,
    failures_in_window: u32,
    transitions: u64,
}

pub struct Breaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
    state_gauge: Gauge,
    to_open: Counter,
    to_half_open: Counter,
    to_closed: Counter,
    short_circuited: Counter,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig, subscriber: &str, metrics: &DispatchMetrics) -> Self {
        let labels = SubscriberLabels {
            subscriber: subscriber.to_owned(),
        };
        let to = |to: &str| {
            metrics
                .breaker_transitions
                .get_or_create(&BreakerLabels {
                    subscriber: subscriber.to_owned(),
                    to: to.to_owned(),
                })
                .clone()
        };
        let state_gauge = metrics.breaker_state.get_or_create(&labels).clone();
        state_gauge.set(0);
        Self {
            inner: Mutex::new(Inner {
                state: State::Closed,
                opened_at: None,
                probing: false,
                consecutive: 0,
                recent: VecDeque::with_capacity(cfg.window as usize),
                failures_in_window: 0,
                transitions: 0,
            }),
            cfg,
            state_gauge,
            to_open: to(State::Open.name()),
            to_half_open: to(State::HalfOpen.name()),
            to_closed: to(State::Closed.name()),
            short_circuited: metrics.short_circuited.get_or_create(&labels).clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Transitions since start-up.
    pub fn transitions(&self) -> u64 {
        self.lock().transitions
    }

    /// Decides what the next record may do.
    pub fn admit(&self) -> Admit {
        if !self.cfg.enabled {
            return Admit::Attempts;
        }
        let mut g = self.lock();
        match g.state {
            State::Closed => Admit::Attempts,
            State::Open => {
                let due = g
                    .opened_at
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(self.cfg.open_ms));
                if due {
                    self.go(&mut g, State::HalfOpen);
                    g.probing = true;
                    Admit::Probe
                } else {
                    self.short_circuited.inc();
                    Admit::Park
                }
            }
            State::HalfOpen if !g.probing => {
                g.probing = true;
                Admit::Probe
            }
            State::HalfOpen => {
                self.short_circuited.inc();
                Admit::Park
            }
        }
    }

    /// Whether a record in its in-process retries should stop and park: the breaker opened
    /// meanwhile.
    pub fn is_open(&self) -> bool {
        self.cfg.enabled && self.lock().state != State::Closed
    }

    /// The outcome of one attempt; `probe` when it was the half-open probe. `failure` is
    /// `None` for an outcome that says nothing about the target (a 4xx about the record).
    pub fn record(&self, probe: bool, failure: Option<bool>) {
        if !self.cfg.enabled {
            return;
        }
        let mut g = self.lock();
        if probe {
            g.probing = false;
            match failure {
                Some(true) => self.open(&mut g),
                Some(false) => self.close(&mut g),
                // The target answered: it is up.
                None => self.close(&mut g),
            }
            return;
        }
        let Some(failed) = failure else {
            return;
        };
        if g.state != State::Closed {
            return; // outcomes of attempts begun before the breaker opened
        }
        g.consecutive = if failed { g.consecutive + 1 } else { 0 };
        let window = self.cfg.window.max(1) as usize;
        if g.recent.len() == window && g.recent.pop_front() == Some(true) {
            g.failures_in_window -= 1;
        }
        g.recent.push_back(failed);
        g.failures_in_window += u32::from(failed);
        let by_count =
            self.cfg.consecutive_failures > 0 && g.consecutive >= self.cfg.consecutive_failures;
        let by_ratio = self.cfg.failure_ratio > 0.0
            && self.cfg.failure_ratio <= 1.0
            && g.recent.len() == window
            && f64::from(g.failures_in_window) / window as f64 >= self.cfg.failure_ratio;
        if by_count || by_ratio {
            self.open(&mut g);
        }
    }

    /// A probe that ended without an outcome (shutdown): let the next record probe.
    pub fn abandon_probe(&self) {
        self.lock().probing = false;
    }

    fn open(&self, g: &mut Inner) {
        g.opened_at = Some(Instant::now());
        if g.state != State::Open {
            self.go(g, State::Open);
        }
    }

    fn close(&self, g: &mut Inner) {
        g.consecutive = 0;
        g.recent.clear();
        g.failures_in_window = 0;
        g.opened_at = None;
        if g.state != State::Closed {
            self.go(g, State::Closed);
        }
    }

    fn go(&self, g: &mut Inner, to: State) {
        tracing::info!(from = g.state.name(), to = to.name(), "circuit breaker");
        g.state = to;
        g.transitions += 1;
        self.state_gauge.set(to as i64);
        match to {
            State::Open => self.to_open.inc(),
            State::HalfOpen => self.to_half_open.inc(),
            State::Closed => self.to_closed.inc(),
        };
    }
}

/// Whether a failed attempt with `status` counts against the target (`None`: no answer).
pub(crate) fn counts_against_target(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => s >= 500 || s == 408 || s == 429,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cfg: BreakerConfig) -> Breaker {
        Breaker::new(cfg, "t", &DispatchMetrics::default())
    }

    #[test]
    fn opens_after_consecutive_failures_and_parks_until_the_probe() {
        let b = breaker(BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.0,
            open_ms: 60_000,
            ..Default::default()
        });
        b.record(false, Some(true));
        b.record(false, Some(true));
        b.record(false, Some(false)); // a success resets the run
        b.record(false, Some(true));
        b.record(false, Some(true));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(), Admit::Attempts);
        b.record(false, Some(true));
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(), Admit::Park);
        assert!(b.is_open());
        assert_eq!(b.transitions(), 1);
    }

    #[test]
    fn one_probe_at_a_time_and_success_closes() {
        let b = breaker(BreakerConfig {
            consecutive_failures: 1,
            open_ms: 0,
            ..Default::default()
        });
        b.record(false, Some(true));
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.admit(), Admit::Park, "a second probe while one is out");
        b.record(true, Some(false));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(), Admit::Attempts);
        // closed -> open -> half-open -> closed
        assert_eq!(b.transitions(), 3);
    }

    #[test]
    fn failed_probe_opens_again() {
        let b = breaker(BreakerConfig {
            consecutive_failures: 1,
            open_ms: 0,
            ..Default::default()
        });
        b.record(false, Some(true));
        assert_eq!(b.admit(), Admit::Probe);
        b.record(true, Some(true));
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(), Admit::Probe, "open_ms 0: the next record probes");
    }

    #[test]
    fn opens_on_the_failure_ratio_over_a_full_window() {
        let b = breaker(BreakerConfig {
            consecutive_failures: 0,
            failure_ratio: 0.5,
            window: 10,
            open_ms: 60_000,
            ..Default::default()
        });
        for i in 0..9 {
            b.record(false, Some(i % 2 == 0)); // 5 failures of 9: window not full
        }
        assert_eq!(b.state(), State::Closed);
        b.record(false, Some(false)); // 5 of 10
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn record_errors_and_a_disabled_breaker_never_open() {
        let b = breaker(BreakerConfig {
            consecutive_failures: 1,
            ..Default::default()
        });
        b.record(false, None);
        assert_eq!(b.state(), State::Closed);
        let off = breaker(BreakerConfig {
            enabled: false,
            consecutive_failures: 1,
            ..Default::default()
        });
        off.record(false, Some(true));
        assert_eq!(off.admit(), Admit::Attempts);
        assert!(counts_against_target(None));
        assert!(counts_against_target(Some(503)));
        assert!(counts_against_target(Some(429)));
        assert!(!counts_against_target(Some(400)));
        assert!(!counts_against_target(Some(410)));
    }
}
