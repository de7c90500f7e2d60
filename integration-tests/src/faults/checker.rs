//! The checker: compares the ground-truth log of what the ingress acknowledged with what each
//! sink recorded, and counts lost, duplicated and reordered events and the time to drain.
//!
//! Pure over its inputs (no I/O), so it is unit-tested on synthetic logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

/// One event the ingress answered 2xx for: it promised the event is durable.
#[derive(Debug, Clone)]
pub struct Ack {
    pub event_id: String,
    /// The flow that published it (`uid-notify`, `mark-seen`, ...).
    pub flow: String,
    /// The record key the flow partitions by (order is promised per key).
    pub key: String,
    /// Position of the event in its key's sequence: the caller sends one key's events one
    /// after the other, each only once the previous one was acknowledged.
    pub seq: u64,
    pub at: Instant,
}

/// One request a sink received (or, for a topic read back, one record).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub sink: String,
    pub event_id: String,
    /// The idempotency token the delivery carried.
    pub token: Option<String>,
    /// The HTTP status the sink answered; only 2xx counts as delivered.
    pub status: u16,
    /// Arrival time; `None` where it means nothing (records read back from a topic).
    pub at: Option<Instant>,
}

/// Which acknowledged flows a sink must receive, and whether it is promised key order.
#[derive(Debug, Clone)]
pub struct Route {
    pub sink: String,
    pub flow: String,
    pub ordered: bool,
}

/// The checker's verdict for one sink.
#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    pub sink: String,
    /// Acknowledged events routed to this sink.
    pub acknowledged: usize,
    /// Acknowledged events delivered at least once.
    pub delivered: usize,
    /// Acknowledged, never delivered: the promise broken.
    pub lost: Vec<String>,
    /// Requests answered 2xx, every copy counted.
    pub deliveries: usize,
    /// Requests answered otherwise (the sink refused or failed them on purpose).
    pub refused: usize,
    /// Extra 2xx deliveries of an event already delivered, carrying the same token.
    pub duplicates_same_token: usize,
    /// Extra 2xx deliveries of an event already delivered with a different token (a bug:
    /// the subscriber cannot deduplicate them).
    pub duplicates_other_token: usize,
    /// Distinct events delivered that were never acknowledged (the caller gave up or its
    /// answer was lost, and it retried).
    pub unacknowledged: usize,
    /// Of those, the ones whose token is also carried by an acknowledged event: a caller's
    /// retry stored twice, which the subscriber's deduplication by token absorbs.
    pub unacknowledged_same_token: usize,
    /// Per-key order inversions of first deliveries (ordered sinks only).
    pub inversions: Option<usize>,
    /// From the end of the last fault (or of the load, if later) to the first delivery of the
    /// last acknowledged event to arrive; zero when everything arrived before.
    pub drain: Option<Duration>,
}

/// The checker's verdict over every sink.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sinks: Vec<SinkReport>,
}

impl Report {
    pub fn lost(&self) -> usize {
        self.sinks.iter().map(|s| s.lost.len()).sum()
    }

    pub fn acknowledged(&self) -> usize {
        self.sinks.iter().map(|s| s.acknowledged).sum()
    }

    pub fn duplicates(&self) -> usize {
        self.sinks
            .iter()
            .map(|s| s.duplicates_same_token + s.duplicates_other_token)
            .sum()
    }

    pub fn duplicates_other_token(&self) -> usize {
        self.sinks.iter().map(|s| s.duplicates_other_token).sum()
    }

    /// The longest drain of any sink.
    pub fn drain(&self) -> Option<Duration> {
        self.sinks.iter().filter_map(|s| s.drain).max()
    }
}

/// Checks `deliveries` against `acks` along `routes`. `faults_over` is when the last fault
/// ended (or the load, if later): the drain time is measured from it.
pub fn check(
    acks: &[Ack],
    deliveries: &[Delivery],
    routes: &[Route],
    faults_over: Option<Instant>,
) -> Report {
    let mut by_sink: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in deliveries {
        by_sink.entry(d.sink.as_str()).or_default().push(d);
    }
    let sinks = routes
        .iter()
        .map(|r| {
            let routed: Vec<&Ack> = acks.iter().filter(|a| a.flow == r.flow).collect();
            let got = by_sink.get(r.sink.as_str()).map_or(&[][..], Vec::as_slice);
            check_sink(r, &routed, got, faults_over)
        })
        .collect();
    Report { sinks }
}

fn check_sink(
    route: &Route,
    acks: &[&Ack],
    got: &[&Delivery],
    faults_over: Option<Instant>,
) -> SinkReport {
    let acked: HashMap<&str, &Ack> = acks.iter().map(|a| (a.event_id.as_str(), *a)).collect();
    let mut report = SinkReport {
        sink: route.sink.clone(),
        acknowledged: acks.len(),
        ..Default::default()
    };
    // First delivery of each event, in arrival order, with its token.
    let mut first: HashMap<&str, (usize, Option<&str>, Option<Instant>)> = HashMap::new();
    for (i, d) in got.iter().enumerate() {
        if !(200..300).contains(&d.status) {
            report.refused += 1;
            continue;
        }
        report.deliveries += 1;
        match first.get(d.event_id.as_str()) {
            None => {
                first.insert(&d.event_id, (i, d.token.as_deref(), d.at));
            }
            Some((_, token, _)) if *token == d.token.as_deref() => {
                report.duplicates_same_token += 1;
            }
            Some(_) => report.duplicates_other_token += 1,
        }
    }
    let acked_tokens: HashSet<&str> = first
        .iter()
        .filter(|(id, _)| acked.contains_key(*id))
        .filter_map(|(_, (_, token, _))| *token)
        .collect();
    for (id, (_, token, _)) in &first {
        if !acked.contains_key(id) {
            report.unacknowledged += 1;
            if token.is_some_and(|t| acked_tokens.contains(t)) {
                report.unacknowledged_same_token += 1;
            }
        }
    }
    let mut last_arrival: Option<Instant> = None;
    for a in acks {
        match first.get(a.event_id.as_str()) {
            Some((_, _, at)) => {
                report.delivered += 1;
                last_arrival = last_arrival.max(*at);
            }
            None => report.lost.push(a.event_id.clone()),
        }
    }
    report.lost.sort();
    if route.ordered {
        report.inversions = Some(inversions(acks, &first));
    }
    report.drain = match (faults_over, last_arrival) {
        (Some(end), Some(last)) => Some(last.saturating_duration_since(end)),
        _ => None,
    };
    report
}

/// Per key, walks first deliveries in arrival order and counts each event that arrives after
/// a later event of its key had already arrived.
fn inversions(
    acks: &[&Ack],
    first: &HashMap<&str, (usize, Option<&str>, Option<Instant>)>,
) -> usize {
    let mut arrivals: Vec<(usize, &str, u64)> = acks
        .iter()
        .filter_map(|a| {
            first
                .get(a.event_id.as_str())
                .map(|(i, _, _)| (*i, a.key.as_str(), a.seq))
        })
        .collect();
    arrivals.sort_unstable();
    let mut highest: HashMap<&str, u64> = HashMap::new();
    let mut n = 0;
    for (_, key, seq) in arrivals {
        let top = highest.entry(key).or_insert(seq);
        if seq < *top {
            n += 1;
        } else {
            *top = seq;
        }
    }
    n
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>8} {:>9} {:>5} {:>10} {:>8} {:>8} {:>7} {:>8} {:>10} {:>9}",
            "sink",
            "acked",
            "delivered",
            "lost",
            "deliveries",
            "refused",
            "dup-same",
            "dup-oth",
            "unacked",
            "inversions",
            "drain"
        )?;
        for s in &self.sinks {
            writeln!(
                f,
                "{:<14} {:>8} {:>9} {:>5} {:>10} {:>8} {:>8} {:>7} {:>8} {:>10} {:>9}",
                s.sink,
                s.acknowledged,
                s.delivered,
                s.lost.len(),
                s.deliveries,
                s.refused,
                s.duplicates_same_token,
                s.duplicates_other_token,
                format!("{}/{}", s.unacknowledged, s.unacknowledged_same_token),
                s.inversions.map_or("-".into(), |n| n.to_string()),
                s.drain
                    .map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64())),
            )?;
        }
        for s in self.sinks.iter().filter(|s| !s.lost.is_empty()) {
            let shown = &s.lost[..s.lost.len().min(10)];
            writeln!(
                f,
                "{}: lost {} events, first {shown:?}",
                s.sink,
                s.lost.len()
            )?;
        }
        write!(
            f,
            "total: acknowledged {}, lost {}, duplicates {} ({} with another token), drain {}",
            self.acknowledged(),
            self.lost(),
            self.duplicates(),
            self.duplicates_other_token(),
            self.drain()
                .map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64()))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: &str, key: &str, seq: u64, at: Instant) -> Ack {
        Ack {
            event_id: id.into(),
            flow: "f".into(),
            key: key.into(),
            seq,
            at,
        }
    }

    fn got(id: &str, token: &str, status: u16, at: Instant) -> Delivery {
        Delivery {
            sink: "s".into(),
            event_id: id.into(),
            token: Some(token.into()),
            status,
            at: Some(at),
        }
    }

    fn route(ordered: bool) -> Vec<Route> {
        vec![Route {
            sink: "s".into(),
            flow: "f".into(),
            ordered,
        }]
    }

    #[test]
    fn clean_run_has_nothing_to_report() {
        let t = Instant::now();
        let acks = [ack("a", "k", 0, t), ack("b", "k", 1, t)];
        let log = [got("a", "ta", 200, t), got("b", "tb", 200, t)];
        let r = check(&acks, &log, &route(true), None);
        let s = &r.sinks[0];
        assert_eq!((s.acknowledged, s.delivered, s.lost.len()), (2, 2, 0));
        assert_eq!(r.duplicates(), 0);
        assert_eq!(s.inversions, Some(0));
    }

    #[test]
    fn finds_a_loss_and_ignores_refused_attempts() {
        let t = Instant::now();
        let acks = [ack("a", "k", 0, t), ack("b", "k", 1, t)];
        // b was attempted but refused (503): not delivered.
        let log = [got("a", "ta", 200, t), got("b", "tb", 503, t)];
        let r = check(&acks, &log, &route(false), None);
        assert_eq!(r.lost(), 1);
        assert_eq!(r.sinks[0].lost, vec!["b".to_owned()]);
        assert_eq!(r.sinks[0].refused, 1);
        assert!(r.to_string().contains("lost 1 events"), "{r}");
    }

    #[test]
    fn finds_duplicates_and_tells_tokens_apart() {
        let t = Instant::now();
        let acks = [ack("a", "k", 0, t), ack("b", "k", 1, t)];
        let log = [
            got("a", "ta", 200, t),
            got("a", "ta", 200, t),
            got("b", "tb", 200, t),
            got("b", "other", 200, t),
        ];
        let r = check(&acks, &log, &route(false), None);
        let s = &r.sinks[0];
        assert_eq!(s.duplicates_same_token, 1);
        assert_eq!(s.duplicates_other_token, 1);
        assert_eq!(s.deliveries, 4);
        assert_eq!(r.lost(), 0);
    }

    #[test]
    fn counts_unacknowledged_retries_by_token() {
        let t = Instant::now();
        let acks = [ack("b", "k", 0, t)];
        // "a" was stored but its answer lost; the caller retried and got "b" acknowledged.
        let log = [got("a", "tok", 200, t), got("b", "tok", 200, t)];
        let r = check(&acks, &log, &route(false), None);
        assert_eq!(r.sinks[0].unacknowledged, 1);
        assert_eq!(r.sinks[0].unacknowledged_same_token, 1);
        assert_eq!(r.lost(), 0);
    }

    #[test]
    fn finds_an_inversion_per_key_only() {
        let t = Instant::now();
        let acks = [
            ack("a0", "a", 0, t),
            ack("a1", "a", 1, t),
            ack("b0", "b", 0, t),
            ack("b1", "b", 1, t),
        ];
        // Key a arrives 1 then 0 (an inversion); key b is interleaved but in order; a later
        // redelivery of a1 does not count again.
        let log = [
            got("b0", "1", 200, t),
            got("a1", "2", 200, t),
            got("b1", "3", 200, t),
            got("a0", "4", 200, t),
            got("a1", "2", 200, t),
        ];
        let r = check(&acks, &log, &route(true), None);
        assert_eq!(r.sinks[0].inversions, Some(1));
        let unordered = check(&acks, &log, &route(false), None);
        assert_eq!(unordered.sinks[0].inversions, None);
    }

    #[test]
    fn drain_runs_from_the_last_fault_to_the_last_first_delivery() {
        let t = Instant::now();
        let end = t + Duration::from_secs(10);
        let acks = [ack("a", "k", 0, t), ack("b", "k", 1, t)];
        let log = [
            got("a", "ta", 200, t + Duration::from_secs(2)),
            got("b", "tb", 200, t + Duration::from_secs(13)),
            // A late duplicate does not stretch the drain.
            got("a", "ta", 200, t + Duration::from_secs(30)),
        ];
        let r = check(&acks, &log, &route(false), Some(end));
        assert_eq!(r.drain(), Some(Duration::from_secs(3)));
    }
}
