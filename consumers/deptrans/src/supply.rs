//! Supply loss, the design's key product metric for the non-blocking stage: of the drivers
//! active in the configured regions and categories in the last `supply.window_minutes`, how
//! many KRT sees working. Split by KRT state into the gauge
//! `switchyard_deptrans_active_drivers{krt}`:
//!
//! - `bound_open_shift`: a bound KRT id and an open shift (KRT sees them work);
//! - `bound_no_shift`: a bound id but no open shift (KRT refused or has not opened one);
//! - `unbound`: no bound id (or no licence known), so KRT cannot count them at all.
//!
//! The consumer marks a driver active when an online or busy status of theirs passes the
//! filter, and not active on offline. Every `supply.interval_ms` the split is computed from
//! memory only: the active set (this instance's partitions), the profiles cache (driver to
//! licence) and the mirrors (bound ids, shift states). No table is scanned: the cost is one
//! hash lookup per active driver and cache, whatever the number of profiles (1M profiles cost
//! the mirrors' memory, ~200 MB, not time). Instances sum: each owns its drivers' partitions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::Caches;
use crate::krt::KrtStatus;
use crate::metrics::DeptransMetrics;
use crate::mirror::Mirrors;

/// Drivers seen active, by (park id, driver id), with when.
#[derive(Default)]
pub struct ActiveDrivers {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl ActiveDrivers {
    /// A status of the driver passed the filter.
    pub fn saw(&self, park_id: &str, driver_id: &str, status: KrtStatus) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (park_id.to_owned(), driver_id.to_owned());
        match status {
            KrtStatus::Online | KrtStatus::Busy => {
                seen.insert(key, Instant::now());
            }
            KrtStatus::Offline => {
                seen.remove(&key);
            }
        }
    }

    /// The drivers seen within `window`; older ones are forgotten.
    fn active(&self, window: Duration) -> Vec<(String, String)> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) <= window);
        seen.keys().cloned().collect()
    }
}

/// The three counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub bound_open_shift: i64,
    pub bound_no_shift: i64,
    pub unbound: i64,
}

/// Splits `active` by KRT state.
pub fn split(active: &[(String, String)], caches: &Caches, mirrors: &Mirrors) -> Split {
    let now = Utc::now();
    let mut out = Split::default();
    for (park, driver) in active {
        let Some(pd) = caches.profiles.licence_pd_id(park, driver) else {
            out.unbound += 1;
            continue;
        };
        if mirrors.profiles.get(&pd).is_none() {
            out.unbound += 1;
            continue;
        }
        let open = mirrors.sessions.get(&pd).is_some_and(|(_, s)| {
            s.session_status == "open" && s.ended_at.is_none_or(|end| end > now)
        });
        if open {
            out.bound_open_shift += 1;
        } else {
            out.bound_no_shift += 1;
        }
    }
    out
}

/// Sets the gauges every `every` until `stop`.
pub async fn run(
    active: Arc<ActiveDrivers>,
    caches: Arc<Caches>,
    mirrors: Arc<Mirrors>,
    metrics: Arc<DeptransMetrics>,
    window: Duration,
    every: Duration,
    stop: CancellationToken,
) {
    switchyard_runtime::shutdown::every(every, &stop, || {
        let drivers = active.active(window);
        let s = split(&drivers, &caches, &mirrors);
        metrics.supply("bound_open_shift", s.bound_open_shift);
        metrics.supply("bound_no_shift", s.bound_no_shift);
        metrics.supply("unbound", s.unbound);
        std::future::ready(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn offline_leaves_at_once_and_silence_after_the_window() {
        let a = ActiveDrivers::default();
        a.saw("p", "1", KrtStatus::Online);
        a.saw("p", "2", KrtStatus::Busy);
        a.saw("p", "3", KrtStatus::Online);
        a.saw("p", "3", KrtStatus::Offline);
        let mut now = a.active(Duration::from_secs(60));
        now.sort();
        assert_eq!(now, [("p".into(), "1".into()), ("p".into(), "2".into())]);
        tokio::time::advance(Duration::from_secs(40)).await;
        a.saw("p", "2", KrtStatus::Online);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            a.active(Duration::from_secs(60)),
            [("p".into(), "2".into())]
        );
    }
}
