//! `ProxyState`: everything a request needs, built once from the config (backends with their
//! targets, identity exchange, signer and callback verifier; internal callers; strip rules).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use crate::access;
use crate::config::{BackendConfig, InvalidConfig, ProxyConfig};
use crate::forward::{self, Forwarding, StripRules, Target};
use crate::identity::IdentityExchange;
use crate::jwt::{Signer, Verifier};
use crate::metrics::ProxyMetrics;
use crate::replay::{Seen, SharedStore};

pub(crate) struct Backend {
    pub(crate) target: Target,
    pub(crate) prefixes: Vec<String>,
    pub(crate) identity: Option<Arc<IdentityExchange>>,
    pub(crate) signer: Option<(HeaderName, Signer)>,
    pub(crate) callback: Option<Callback>,
}

pub(crate) struct Callback {
    pub(crate) target: Target,
    pub(crate) prefixes: Vec<String>,
    pub(crate) verifier: Verifier,
}

/// Everything a request needs, built once from the config; key material is loaded here so a
/// bad key fails the start, not the first request.
pub struct ProxyState {
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) trust_forwarded_for: bool,
    pub(crate) strip: StripRules,
    pub(crate) backends: HashMap<String, Backend>,
    pub(crate) identities: Vec<Arc<IdentityExchange>>,
    pub(crate) callers: access::Callers,
    pub(crate) request_timeout: Duration,
    /// The shared memory of used callback tokens, when configured; kept up by `serve`.
    pub(crate) replay_store: Option<Arc<SharedStore>>,
    pub metrics: Arc<ProxyMetrics>,
}

impl ProxyState {
    pub fn new(cfg: &ProxyConfig) -> Result<Arc<Self>, InvalidConfig> {
        cfg.validate()?;
        let metrics = Arc::new(ProxyMetrics::default());
        let mut identities = HashMap::new();
        for (name, id_cfg) in &cfg.identity {
            let exchange = IdentityExchange::new(name, id_cfg, metrics.clone())?;
            identities.insert(name.clone(), Arc::new(exchange));
        }
        let replay_store = cfg
            .replay_store
            .as_ref()
            .map(SharedStore::new)
            .transpose()?;
        let mut backends = HashMap::new();
        for (tag, b) in &cfg.backends {
            let backend = build_backend(
                tag,
                b,
                &identities,
                replay_store.as_ref(),
                cfg.max_body_bytes,
                &metrics,
            )?;
            backends.insert(tag.clone(), backend);
        }
        let names = cfg
            .strip_headers
            .iter()
            .map(|n| {
                HeaderName::try_from(n.as_str()).map_err(|e| InvalidConfig::key("strip_headers", e))
            })
            .collect::<Result<_, _>>()?;
        let prefixes = cfg
            .strip_header_prefixes
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .collect();
        Ok(Arc::new(Self {
            allowed_hosts: cfg.allowed_hosts.clone(),
            trust_forwarded_for: cfg.trust_forwarded_for,
            strip: StripRules { names, prefixes },
            backends,
            identities: identities.into_values().collect(),
            callers: access::Callers::new(&cfg.callers, &metrics)?,
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            replay_store,
            metrics,
        }))
    }
}

impl ProxyState {
    /// What `forward::send` needs to know of a request from `peer` besides the request:
    /// the proxy's header rules and the headers it adds (`extra`).
    pub(crate) fn forwarding<'a>(
        &'a self,
        peer: &'a HeaderValue,
        request_id: &'a HeaderValue,
        extra: Vec<(HeaderName, HeaderValue)>,
    ) -> Forwarding<'a> {
        Forwarding {
            peer,
            request_id,
            trust_forwarded_for: self.trust_forwarded_for,
            strip: &self.strip,
            extra,
        }
    }
}

fn build_backend(
    tag: &str,
    b: &BackendConfig,
    identities: &HashMap<String, Arc<IdentityExchange>>,
    replay_store: Option<&Arc<SharedStore>>,
    max_body: u64,
    metrics: &ProxyMetrics,
) -> Result<Backend, InvalidConfig> {
    let key = |field: &str| format!("backends.{tag}.{field}");
    let mut target = Target::new(tag, &b.base_url, b.timeout_ms, metrics)
        .map_err(|m| InvalidConfig::key(key("base_url"), m))?;
    target.max_body = b.max_body_bytes.unwrap_or(max_body);
    target.api_key = b
        .api_key
        .as_ref()
        .map(|k| forward::api_key_header(&key("api_key"), k))
        .transpose()?;
    let signer = match &b.jwt {
        Some(j) => {
            let header = HeaderName::try_from(j.header.as_str())
                .map_err(|e| InvalidConfig::key(key("jwt.header"), e))?;
            Some((header, Signer::new(&key("jwt"), j)?))
        }
        None => None,
    };
    let callback = match &b.callback {
        Some(cb) => Some(Callback {
            target: Target::new(tag, &cb.upstream, cb.timeout_ms, metrics)
                .map_err(|m| InvalidConfig::key(key("callback.upstream"), m))?
                .max_body(max_body),
            prefixes: cb.allowed_prefixes.clone(),
            verifier: Verifier::new(&key("callback"), cb, Seen::new(tag, replay_store))?,
        }),
        None => None,
    };
    Ok(Backend {
        target,
        prefixes: b.allowed_prefixes.clone(),
        identity: b
            .identity
            .as_ref()
            .and_then(|name| identities.get(name).cloned()),
        signer,
        callback,
    })
}
