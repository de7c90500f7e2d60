//! Which faults a run injects, when, and for how long: drawn from a seed, so a failing run is
//! replayed by passing its seed again.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `kill -9` of the broker leading a partition of the uid-notify topic; restarted later.
    LeaderKill,
    /// SIGSTOP of a broker, SIGCONT later.
    BrokerPause,
    /// `kill -9` of one of the two ingress processes; restarted later on the same port.
    IngressKill,
    /// `kill -9` of one of the two dispatcher replicas; restarted later.
    DispatcherKill,
    /// The uid-notify subscriber's port closed for a while.
    SubscriberDown,
    /// The uid-notify subscriber answering 503 with `Retry-After` for a while.
    Subscriber503,
    /// The uid-notify subscriber answering 200 only after 3 s, past the dispatcher's 2 s
    /// timeout: it keeps what the dispatcher counts as failed (a redelivery follows).
    SubscriberStall,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::LeaderKill,
        Fault::BrokerPause,
        Fault::IngressKill,
        Fault::DispatcherKill,
        Fault::SubscriberDown,
        Fault::Subscriber503,
        Fault::SubscriberStall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::LeaderKill => "leader-kill",
            Fault::BrokerPause => "broker-pause",
            Fault::IngressKill => "ingress-kill",
            Fault::DispatcherKill => "dispatcher-kill",
            Fault::SubscriberDown => "subscriber-down",
            Fault::Subscriber503 => "subscriber-503",
            Fault::SubscriberStall => "subscriber-stall",
        }
    }

    /// Faults on the brokers: they never overlap each other (one node out at a time keeps
    /// `min.insync.replicas = 2` reachable).
    pub fn on_broker(self) -> bool {
        matches!(self, Fault::LeaderKill | Fault::BrokerPause)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {s:?}; known: {}", known.join(", "))
            })
    }
}

/// How long each fault lasts (a crashed process or node stays down this long).
#[derive(Debug, Clone)]
pub struct Holds {
    pub broker_down: Duration,
    pub broker_pause: Duration,
    pub process_down: Duration,
    pub subscriber_down: Duration,
    /// Also how long a subscriber stalls.
    pub subscriber_503: Duration,
}

impl Holds {
    /// The durations: a subscriber down 60 s, 503 for 30 s, a broker paused 20 s.
    pub fn full() -> Self {
        Self {
            broker_down: Duration::from_secs(20),
            broker_pause: Duration::from_secs(20),
            process_down: Duration::from_secs(10),
            subscriber_down: Duration::from_secs(60),
            subscriber_503: Duration::from_secs(30),
        }
    }

    /// Shorter, for the run in the test command.
    pub fn short() -> Self {
        Self {
            broker_down: Duration::from_secs(10),
            broker_pause: Duration::from_secs(10),
            process_down: Duration::from_secs(5),
            subscriber_down: Duration::from_secs(15),
            subscriber_503: Duration::from_secs(10),
        }
    }

    pub fn of(&self, fault: Fault) -> Duration {
        match fault {
            Fault::LeaderKill => self.broker_down,
            Fault::BrokerPause => self.broker_pause,
            Fault::IngressKill | Fault::DispatcherKill => self.process_down,
            Fault::SubscriberDown => self.subscriber_down,
            Fault::Subscriber503 | Fault::SubscriberStall => self.subscriber_503,
        }
    }
}

/// One fault of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub fault: Fault,
    /// From the start of the load.
    pub at: Duration,
    pub hold: Duration,
    /// Picks the victim (partition, process) among the candidates.
    pub pick: u32,
}

/// The faults of a run: each of `faults` once, in an order and at times drawn from `seed`
/// within `window` (the window is cut into one slot per fault; a fault starts at a random
/// point of the first half of its slot).
pub fn plan(seed: u64, faults: &[Fault], window: Duration, holds: &Holds) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = faults.to_vec();
    order.shuffle(&mut rng);
    let slot = window / u32::try_from(order.len().max(1)).unwrap_or(1);
    order
        .into_iter()
        .enumerate()
        .map(|(i, fault)| {
            let jitter = slot.mul_f64(rng.gen_range(0.0..0.5));
            Planned {
                fault,
                at: slot * u32::try_from(i).unwrap_or(0) + jitter,
                hold: holds.of(fault),
                pick: rng.gen(),
            }
        })
        .collect()
}

/// A fresh seed when none was given.
pub fn new_seed() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_plan_and_every_fault_once() {
        let w = Duration::from_secs(60);
        let a = plan(42, &Fault::ALL, w, &Holds::short());
        assert_eq!(a, plan(42, &Fault::ALL, w, &Holds::short()));
        assert_ne!(a, plan(43, &Fault::ALL, w, &Holds::short()));
        let mut kinds: Vec<&str> = a.iter().map(|p| p.fault.name()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), Fault::ALL.len());
        assert!(a.iter().all(|p| p.at < w));
        assert!(a.windows(2).all(|p| p[0].at <= p[1].at));
    }

    #[test]
    fn faults_parse_by_name() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>(), Ok(f));
        }
        assert!("meteor".parse::<Fault>().is_err());
    }
}
