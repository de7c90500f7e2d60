//! The load driver: calls the public ingress endpoints the way their real callers do. One key
//! (an account, a person, a driver, a user) has one request in flight at a time, so the order
//! of its acknowledgements is the order the bus promised to keep. Errors, timeouts, 429 and
//! 5xx are retried (on the next ingress) with the same body and idempotency key until a 2xx;
//! the event id of every 2xx goes into the ground-truth log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::checker::Ack;

/// Mark-notify tag the driver sends (the integrations file must route it).
pub const SEEN_TAG: &str = "faults";
/// Domain event type the driver sends (the registry must list it, version 1).
pub const DOMAIN_EVENT: &str = "users.user_created";

/// A public ingress flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    UidNotify,
    MarkSeen,
    DriverStatus,
    DomainEvent,
}

impl Flow {
    pub const ALL: [Flow; 4] = [
        Flow::UidNotify,
        Flow::MarkSeen,
        Flow::DriverStatus,
        Flow::DomainEvent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flow::UidNotify => "uid-notify",
            Flow::MarkSeen => "mark-seen",
            Flow::DriverStatus => "driver-status",
            Flow::DomainEvent => "domain-event",
        }
    }
}

/// What to send and where.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Base URLs of the ingress replicas (`http://127.0.0.1:8080`); requests rotate over them
    /// and a retry moves to the next.
    pub ingress: Vec<String>,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer: Option<String>,
    /// Events in total, spread evenly over `flows`.
    pub events: u64,
    pub flows: Vec<Flow>,
    /// Keys per flow; each key is one sequential caller.
    pub keys: u64,
    /// Offered events per second over all keys.
    pub rate: u64,
    /// Bound on one request; longer than the ingress's produce timeout.
    pub request_timeout: Duration,
    /// An event still unacknowledged after this long is given up (counted in `gave_up`).
    pub give_up_after: Duration,
    /// Distinguishes this run's ids and idempotency keys from earlier runs'.
    pub run_id: String,
    /// Client phone id sent in mark-notify gateway headers (the logs must never show it).
    pub phone_id: String,
}

/// What the driver achieved.
#[derive(Debug, Default)]
pub struct DriverOutcome {
    pub acks: Vec<Ack>,
    /// Requests that failed and were retried, by reason.
    pub retries: std::collections::BTreeMap<String, usize>,
    /// Events never acknowledged within `give_up_after`.
    pub gave_up: usize,
    /// Events answered 4xx (a bug in the driver or the ingress; never retried).
    pub rejected: Vec<String>,
    pub elapsed: Duration,
}

/// The ground-truth log as it grows (the fault plan watches its length).
#[derive(Clone, Default)]
pub struct AckLog(Arc<Mutex<DriverOutcome>>);

impl AckLog {
    pub fn acknowledged(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).acks.len()
    }

    fn with<R>(&self, f: impl FnOnce(&mut DriverOutcome) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Sends every event of `cfg`, recording into `log`; returns when each was acknowledged or
/// given up.
pub async fn drive(cfg: &DriverConfig, log: &AckLog) -> anyhow::Result<DriverOutcome> {
    anyhow::ensure!(!cfg.ingress.is_empty() && !cfg.flows.is_empty() && cfg.keys > 0);
    let client = reqwest::Client::builder()
        .timeout(cfg.request_timeout)
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()?;
    let started = Instant::now();
    let callers = cfg.flows.len() as u64 * cfg.keys;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let (client, cfg, log) = (client.clone(), cfg.clone(), log.clone());
        tasks.spawn(async move {
            let flow = cfg.flows[(c % cfg.flows.len() as u64) as usize];
            let key = c / cfg.flows.len() as u64;
            // Event i belongs to caller i % callers and is due at i / rate.
            let mut seq = 0;
            let mut i = c;
            while i < cfg.events {
                let due = started + Duration::from_nanos(i * 1_000_000_000 / cfg.rate.max(1));
                tokio::time::sleep_until(due.into()).await;
                send_one(&client, &cfg, log.clone(), flow, key, seq, i).await;
                seq += 1;
                i += callers;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    let mut out = log.with(std::mem::take);
    out.elapsed = started.elapsed();
    Ok(out)
}

/// One event: retried until acknowledged, rejected, or given up.
async fn send_one(
    client: &reqwest::Client,
    cfg: &DriverConfig,
    log: AckLog,
    flow: Flow,
    key: u64,
    seq: u64,
    i: u64,
) {
    let (path, body, headers, record_key) = request(cfg, flow, key, seq, i);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut target = i as usize;
    loop {
        let base = &cfg.ingress[target % cfg.ingress.len()];
        let mut req = client.post(format!("{base}{path}")).json(&body);
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        if let Some(token) = &cfg.bearer {
            req = req.bearer_auth(token);
        }
        let failure = match req.send().await {
            Ok(resp) if resp.status().is_success() => match resp.json::<Value>().await {
                Ok(v) => match v["event_id"].as_str() {
                    Some(id) => {
                        log.with(|o| {
                            o.acks.push(Ack {
                                event_id: id.to_owned(),
                                flow: flow.name().to_owned(),
                                key: record_key.clone(),
                                seq,
                                at: Instant::now(),
                            })
                        });
                        return;
                    }
                    None => {
                        log.with(|o| {
                            o.rejected
                                .push(format!("{}: 2xx without event_id: {v}", flow.name()))
                        });
                        return;
                    }
                },
                Err(_) => "2xx body unreadable".to_owned(),
            },
            Ok(resp) if resp.status().as_u16() == 429 || resp.status().is_server_error() => {
                format!("http {}", resp.status().as_u16())
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                log.with(|o| {
                    o.rejected
                        .push(format!("{}: http {status}: {text}", flow.name()))
                });
                return;
            }
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(e) if e.is_connect() => "connect".to_owned(),
            Err(_) => "transport".to_owned(),
        };
        log.with(|o| *o.retries.entry(failure).or_default() += 1);
        if started.elapsed() > cfg.give_up_after {
            log.with(|o| o.gave_up += 1);
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        target += 1;
    }
}

type Request = (&'static str, Value, Vec<(&'static str, String)>, String);

/// Path, body, extra headers and the record key the ingress will use, for event `i` (the
/// `seq`-th of `key` in `flow`). Bodies differ per event so idempotency keys do too.
fn request(cfg: &DriverConfig, flow: Flow, key: u64, seq: u64, i: u64) -> Request {
    match flow {
        Flow::UidNotify => {
            let phonish = 7_000_000 + key;
            let body = json!({
                "portal_uid": 1_000_000_000 + i,
                "phonish_uid": phonish,
                "event_type": if seq.is_multiple_of(2) { "bind" } else { "unbind" },
            });
            ("/v1/uid-notify", body, Vec::new(), phonish.to_string())
        }
        Flow::MarkSeen => {
            let user = format!("fault-user-{key}");
            let body = json!({"tag": SEEN_TAG, "id": format!("{}-{i}", cfg.run_id)});
            let headers = vec![
                ("x-yataxi-userid", user.clone()),
                ("x-yataxi-phoneid", cfg.phone_id.clone()),
            ];
            (
                "/4.0/mark-notify/v1/seen",
                body,
                headers,
                format!("client:{user}"),
            )
        }
        Flow::DriverStatus => {
            let driver = format!("fdrv{key}");
            let statuses = ["online", "busy", "offline"];
            let at = chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0)
                .unwrap_or_default()
                .to_rfc3339();
            let body = json!({
                "park_id": "faultpark",
                "driver_profile_id": driver,
                "status": statuses[(seq % 3) as usize],
                "updated_at": at,
            });
            (
                "/v1/driver-status",
                body,
                Vec::new(),
                format!("faultpark/{driver}"),
            )
        }
        Flow::DomainEvent => {
            // A fixed user per key (the record key), a fresh idempotency key per event.
            let user = uuid::Uuid::from_u64_pair(0x5157_0000_0000_0000, key).to_string();
            let body = json!({"user_id": user, "role": "worker", "active": false});
            let headers = vec![("idempotency-key", format!("{}-{i}", cfg.run_id))];
            ("/v1/events/users.user_created.v1", body, headers, user)
        }
    }
}
