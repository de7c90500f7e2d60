//! Operator assets in `deploy/`: Kubernetes manifests, the compose file and the observability
//! files, checked without a cluster, a Docker engine or a Prometheus.
//!
//! Where metric names come from: the ingress and the dispatcher are started in-process against
//! the real broker and their `/metrics` is scraped (prometheus-client prints `# TYPE` for every
//! registered family before any sample). deptrans needs Postgres, KRT and four upstream fakes to
//! start, so its registry is rendered with the same function its `/metrics` handler calls. The
//! proxy crate is not a dependency of this crate, so its names are read from
//! `proxy/src/metrics.rs` (constants plus the field each is registered with).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use integration_tests::{
    dispatcher_config, http_subscriber, ingress_config, start_dispatcher, start_ingress, unique,
    workspace_root,
};
use serde::Deserialize;
use serde_json::Value;

mod compose;

mod metric_names;

use metric_names::{exported_from_text, promql_metrics, proxy_exported};

/// The four services every manifest set must cover.
const SERVICES: [&str; 4] = [
    "switchyard-ingress",
    "switchyard-dispatcher",
    "switchyard-deptrans",
    "switchyard-proxy",
];

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

/// Every YAML document of every `.yaml`/`.yml` file in `dir`, with its file name.
fn yaml_docs(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {}", dir.display());
    let mut docs = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let json = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !json.is_null() {
                docs.push((name.clone(), json));
            }
        }
    }
    docs
}

fn str_at<'a>(v: &'a Value, pointer: &str, what: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{what}: missing string {pointer}"))
}

fn labels(v: &Value, pointer: &str, what: &str) -> BTreeMap<String, String> {
    let map = v
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{what}: missing map {pointer}"));
    assert!(!map.is_empty(), "{what}: {pointer} is empty");
    map.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().expect("label values are strings").into(),
            )
        })
        .collect()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Partition count of every topic in `deploy/topics.toml`.
fn topic_partitions() -> BTreeMap<String, i64> {
    let text = fs::read_to_string(deploy("topics.toml")).unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    file["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let partitions = t.get("partitions").and_then(toml::Value::as_integer);
            (
                t["name"].as_str().unwrap().to_owned(),
                partitions.unwrap_or(1),
            )
        })
        .collect()
}

/// The port of a `listen = "host:port"` value.
fn listen_port(toml_text: &str, what: &str) -> i64 {
    let v: toml::Value = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{what}: {e}"));
    let listen = v["listen"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no listen"));
    let (host, port) = listen.rsplit_once(':').unwrap();
    assert_eq!(
        host, "0.0.0.0",
        "{what}: a pod must listen on every interface"
    );
    port.parse().unwrap()
}

/// Writes every ConfigMap's files under `dir/<configmap>/` and returns the path each
/// Deployment mounts them at, so in-cluster absolute paths can be rewritten to the copies.
fn materialize_configmaps(
    configmaps: &BTreeMap<String, Value>,
    dir: &Path,
) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for (name, cm) in configmaps {
        let data = cm["data"].as_object().expect("ConfigMap data");
        fs::create_dir_all(dir.join(name)).unwrap();
        for (key, text) in data {
            let text = text.as_str().expect("ConfigMap values are strings");
            if key.ends_with(".toml") {
                toml::from_str::<toml::Value>(text)
                    .unwrap_or_else(|e| panic!("ConfigMap {name} {key}: not TOML: {e}"));
            }
            fs::write(dir.join(name).join(key), text).unwrap();
            files.insert(format!("{name}/{key}"), text.to_owned());
        }
    }
    files
}

#[test]
fn k8s_manifests_are_complete_and_consistent() {
    let docs = yaml_docs(&deploy("k8s"));
    let mut by_kind: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (file, doc) in &docs {
        let what = format!("{file}: {}", doc["kind"]);
        str_at(doc, "/apiVersion", &what);
        let kind = str_at(doc, "/kind", &what).to_owned();
        let name = str_at(doc, "/metadata/name", &what).to_owned();
        if kind != "Namespace" {
            assert_eq!(
                str_at(doc, "/metadata/namespace", &what),
                "switchyard",
                "{what}"
            );
        }
        let previous = by_kind
            .entry(kind.clone())
            .or_default()
            .insert(name, doc.clone());
        assert!(previous.is_none(), "{what}: duplicate name");
    }
    let kind = |k: &str| by_kind.get(k).cloned().unwrap_or_default();
    let (deployments, services, configmaps) =
        (kind("Deployment"), kind("Service"), kind("ConfigMap"));
    let (pdbs, hpas) = (kind("PodDisruptionBudget"), kind("HorizontalPodAutoscaler"));
    for svc in SERVICES {
        for (k, set) in [
            ("Deployment", &deployments),
            ("Service", &services),
            ("ConfigMap", &configmaps),
            ("PodDisruptionBudget", &pdbs),
            ("HorizontalPodAutoscaler", &hpas),
        ] {
            assert!(set.contains_key(svc), "no {k} named {svc}");
        }
    }

    let tmp = std::env::temp_dir().join(unique("ops-assets"));
    let cm_files = materialize_configmaps(&configmaps, &tmp);

    // Deployments: selector matches the pod labels; containers are complete; mounts resolve.
    let mut pod_labels = BTreeMap::new();
    let mut container_ports = BTreeMap::new();
    let mut named_ports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut mounted_configs = BTreeMap::new();
    for (name, d) in &deployments {
        let what = format!("Deployment {name}");
        assert_eq!(str_at(d, "/apiVersion", &what), "apps/v1");
        let selector = labels(d, "/spec/selector/matchLabels", &what);
        let template = labels(d, "/spec/template/metadata/labels", &what);
        assert!(
            selects(&selector, &template),
            "{what}: selector does not match template labels"
        );
        let spec = &d["spec"]["template"]["spec"];
        let volumes: BTreeMap<String, Value> = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (str_at(v, "/name", &what).to_owned(), v.clone()))
            .collect();
        for v in volumes.values() {
            if let Some(cm) = v.pointer("/configMap/name").and_then(Value::as_str) {
                assert!(
                    configmaps.contains_key(cm),
                    "{what}: volume uses missing ConfigMap {cm}"
                );
            }
        }
        let containers = spec["containers"].as_array().expect("containers");
        assert!(!containers.is_empty(), "{what}: no containers");
        for c in containers {
            let what = format!("{what} container {}", str_at(c, "/name", &what));
            str_at(c, "/image", &what);
            let binary = str_at(c, "/command/0", &what);
            assert_eq!(binary, name, "{what}: runs {binary}, not {name}");
            let ports = c["ports"].as_array().expect("ports");
            assert!(!ports.is_empty(), "{what}: no ports");
            let port_names: BTreeSet<&str> =
                ports.iter().filter_map(|p| p["name"].as_str()).collect();
            for probe in ["readinessProbe", "livenessProbe"] {
                let p = &c[probe];
                assert!(p.is_object(), "{what}: no {probe}");
                let port = &p["httpGet"]["port"];
                if let Some(port) = port.as_str() {
                    assert!(
                        port_names.contains(port),
                        "{what}: {probe} names unknown port {port}"
                    );
                }
                str_at(p, "/httpGet/path", &what);
            }
            for path in [
                "/resources/requests/cpu",
                "/resources/requests/memory",
                "/resources/limits/memory",
            ] {
                str_at(c, path, &what);
            }
            named_ports
                .entry(name.clone())
                .or_default()
                .extend(port_names.iter().map(|p| p.to_string()));
            container_ports.insert(
                name.clone(),
                ports[0]["containerPort"].as_i64().expect("containerPort"),
            );
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let vol = str_at(m, "/name", &what);
                let volume = volumes
                    .get(vol)
                    .unwrap_or_else(|| panic!("{what}: mounts unknown volume {vol}"));
                let mount = str_at(m, "/mountPath", &what);
                if let (Some(cm), Some(key)) = (
                    volume.pointer("/configMap/name").and_then(Value::as_str),
                    m["subPath"].as_str(),
                ) {
                    assert!(
                        cm_files.contains_key(&format!("{cm}/{key}")),
                        "{what}: {cm} has no {key}"
                    );
                    mounted_configs.insert(name.clone(), (mount.to_owned(), format!("{cm}/{key}")));
                }
            }
            // The config file the command passes is the one mounted from the ConfigMap.
            let args: Vec<&str> = c["command"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let config_arg = args.windows(2).find(|w| w[0] == "--config").map(|w| w[1]);
            assert_eq!(
                config_arg,
                mounted_configs.get(name).map(|(m, _)| m.as_str()),
                "{what}: --config is not the mounted ConfigMap file"
            );
        }
        pod_labels.insert(name.clone(), template);
    }

    // Every ConfigMap-mounted config listens on the container port and loads with the real
    // loader (deny_unknown_fields), in-cluster paths rewritten to the written copies.
    for (name, (_, key)) in &mounted_configs {
        let text = &cm_files[key];
        assert_eq!(
            listen_port(text, key),
            container_ports[name],
            "{key}: listen vs containerPort"
        );
        let local = text.replace(
            "/etc/switchyard/integrations/",
            &format!("{}/switchyard-integrations/", tmp.display()),
        );
        let file = tmp.join(format!("{name}.toml"));
        fs::write(&file, local).unwrap();
        match name.as_str() {
            "switchyard-ingress" => {
                switchyard_ingress::IngressConfig::load(Some(&file))
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
            }
            "switchyard-dispatcher" => {
                switchyard_dispatcher::DispatcherConfig::load(Some(&file))
                    .and_then(switchyard_dispatcher::Plan::resolve)
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
            }
            "switchyard-deptrans" => {
                switchyard_deptrans::DeptransConfig::load(Some(&file))
                    .unwrap_or_else(|e| panic!("{key}: {e}"));
            }
            // Parsed as TOML above; ProxyConfig lives in a crate this one does not depend on.
            _ => {}
        }
    }
    assert_eq!(
        mounted_configs.len(),
        SERVICES.len(),
        "every service mounts its config"
    );

    for (name, s) in &services {
        let what = format!("Service {name}");
        let selector = labels(s, "/spec/selector", &what);
        let target = pod_labels
            .iter()
            .find(|(_, l)| selects(&selector, l))
            .unwrap_or_else(|| panic!("{what}: selects no Deployment"));
        for p in s["spec"]["ports"].as_array().expect("ports") {
            assert!(p["port"].as_i64().is_some(), "{what}: port without number");
            match &p["targetPort"] {
                Value::Number(t) => assert_eq!(t.as_i64(), Some(container_ports[target.0])),
                Value::String(t) => assert!(
                    named_ports[target.0].contains(t),
                    "{what}: targetPort {t} is no port of {}",
                    target.0
                ),
                other => panic!("{what}: targetPort {other}"),
            }
        }
    }

    for (name, p) in &pdbs {
        let what = format!("PodDisruptionBudget {name}");
        assert_eq!(str_at(p, "/apiVersion", &what), "policy/v1");
        let selector = labels(p, "/spec/selector/matchLabels", &what);
        assert!(
            pod_labels.values().any(|l| selects(&selector, l)),
            "{what}: selects no pods"
        );
        assert!(p["spec"]["minAvailable"].is_number() || p["spec"]["maxUnavailable"].is_number());
    }

    // HPAs: target a Deployment; a consumer's maxReplicas never exceeds the partitions of the
    // topics it reads (extra consumers in a group get no partition and sit idle).
    let partitions = topic_partitions();
    let configs = |name: &str| -> toml::Value {
        toml::from_str(&cm_files[&mounted_configs[name].1]).unwrap()
    };
    let dispatcher = configs("switchyard-dispatcher");
    let mut dispatcher_topics: BTreeSet<String> = dispatcher["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["topics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
        })
        .collect();
    if let Some(mark) = dispatcher.get("mark_notify") {
        dispatcher_topics.insert(mark["topic"].as_str().unwrap().to_owned());
    }
    let deptrans = configs("switchyard-deptrans");
    let consumer_topics: BTreeMap<&str, (Vec<String>, Option<i64>)> = BTreeMap::from([
        (
            "switchyard-dispatcher",
            (
                dispatcher_topics.into_iter().collect(),
                dispatcher
                    .get("retry_partitions")
                    .and_then(toml::Value::as_integer),
            ),
        ),
        (
            "switchyard-deptrans",
            (vec![deptrans["topic"].as_str().unwrap().to_owned()], None),
        ),
    ]);
    for (name, h) in &hpas {
        let what = format!("HorizontalPodAutoscaler {name}");
        assert_eq!(str_at(h, "/apiVersion", &what), "autoscaling/v2");
        assert_eq!(str_at(h, "/spec/scaleTargetRef/kind", &what), "Deployment");
        let target = str_at(h, "/spec/scaleTargetRef/name", &what);
        assert!(
            deployments.contains_key(target),
            "{what}: targets missing Deployment {target}"
        );
        let min = h["spec"]["minReplicas"].as_i64().unwrap_or(1);
        let max = h["spec"]["maxReplicas"].as_i64().expect("maxReplicas");
        assert!(
            1 <= min && min <= max,
            "{what}: minReplicas {min} maxReplicas {max}"
        );
        assert!(
            h["spec"]["metrics"]
                .as_array()
                .is_some_and(|m| !m.is_empty()),
            "{what}: no metrics"
        );
        if let Some((topics, retry_partitions)) = consumer_topics.get(target) {
            assert!(!topics.is_empty());
            for topic in topics {
                let n = *partitions
                    .get(topic)
                    .unwrap_or_else(|| panic!("{what}: {topic} is not in deploy/topics.toml"));
                assert!(
                    max <= n,
                    "{what}: maxReplicas {max} > {n} partitions of {topic}"
                );
            }
            if let Some(n) = retry_partitions {
                assert!(
                    max <= *n,
                    "{what}: maxReplicas {max} > retry_partitions {n}"
                );
            }
        }
        // A PDB must leave room to drain a node at the HPA's floor.
        if let Some(min_available) = pdbs
            .get(target)
            .and_then(|p| p["spec"]["minAvailable"].as_i64())
        {
            assert!(
                min_available < min,
                "{what}: PDB minAvailable {min_available} blocks drains"
            );
        }
    }
    assert_eq!(
        consumer_topics
            .keys()
            .filter(|c| hpas
                .values()
                .any(|h| h["spec"]["scaleTargetRef"]["name"] == **c))
            .count(),
        2,
        "both consumers have an HPA"
    );
    let _ = fs::remove_dir_all(&tmp);
}

/// Every PromQL expression of the dashboard (`targets[].expr`) and the alert rules (`expr`).
fn observability_exprs() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(deploy("observability/grafana-dashboard.json")).unwrap(),
    )
    .expect("dashboard is JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            exprs.push((
                format!("panel {title}"),
                str_at(t, "/expr", title).to_owned(),
            ));
        }
    }
    assert!(exprs.len() >= 10, "dashboard has {} queries", exprs.len());
    let rules: Value =
        serde_yaml::from_str(&fs::read_to_string(deploy("observability/alerts.yaml")).unwrap())
            .expect("alert rules are YAML");
    let mut alerts = BTreeSet::new();
    for g in rules["groups"].as_array().expect("groups") {
        let group = str_at(g, "/name", "rule group");
        for r in g["rules"].as_array().expect("rules") {
            let alert = str_at(r, "/alert", group).to_owned();
            str_at(r, "/labels/severity", &alert);
            str_at(r, "/annotations/summary", &alert);
            exprs.push((
                format!("alert {alert}"),
                str_at(r, "/expr", &alert).to_owned(),
            ));
            assert!(alerts.insert(alert), "duplicate alert");
        }
    }
    // The alerts: 5xx rate, lag (dispatcher and deptrans consumers), dead-letter
    // growth, KRT queue age.
    for wanted in [
        "SwitchyardIngress5xxRate",
        "SwitchyardProxy5xxRate",
        "SwitchyardConsumerLagHigh",
        "DeptransConsumerLagHigh",
        "SwitchyardDeadLetterGrowth",
        "DeptransQueueStale",
    ] {
        assert!(alerts.contains(wanted), "no alert {wanted}");
    }
    exprs
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alerts_reference_only_exported_metrics() {
    let exprs = observability_exprs();

    let topic = unique("ops-metrics");
    let ingress = start_ingress(ingress_config(&topic), None)
        .await
        .expect("ingress starts");
    let dispatcher = start_dispatcher(dispatcher_config(vec![http_subscriber(
        "ops-metrics",
        &topic,
        "http://127.0.0.1:9/unused",
    )]))
    .await
    .expect("dispatcher starts");
    let client = reqwest::Client::new();
    let mut exported = BTreeSet::new();
    for (service, url) in [
        ("ingress", ingress.url("/metrics")),
        ("dispatcher", dispatcher.url("/metrics")),
    ] {
        let resp = client.get(&url).send().await.expect("scrape");
        assert!(
            resp.status().is_success(),
            "{service} /metrics: {}",
            resp.status()
        );
        let names = exported_from_text(&resp.text().await.unwrap());
        assert!(names.len() >= 5, "{service} exports only {names:?}");
        exported.extend(names);
    }
    ingress.stop().await.expect("ingress stops");
    dispatcher.stop().await.expect("dispatcher stops");

    let deptrans = switchyard_deptrans::metrics::DeptransMetrics::default();
    exported.extend(exported_from_text(&switchyard_runtime::metrics::render(
        &deptrans.registry,
    )));
    exported.extend(proxy_exported());
    for sample in [
        "switchyard_ingress_requests_total",
        "switchyard_dispatch_delivery_seconds_bucket",
        "switchyard_deptrans_krt_failures_total",
        "switchyard_proxy_server_errors_total",
        "switchyard_proxy_identity_cache_size",
    ] {
        assert!(
            exported.contains(sample),
            "{sample} not found in {exported:?}"
        );
    }

    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in &exprs {
        let names = promql_metrics(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            if !exported.contains(&name) {
                missing.push(format!("{place}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by any service: {missing:#?}"
    );
    // Every service shows up on the dashboard.
    for prefix in [
        "switchyard_ingress_",
        "switchyard_dispatch_",
        "switchyard_deptrans_",
        "switchyard_proxy_",
    ] {
        assert!(
            used.iter().any(|n| n.starts_with(prefix)),
            "nothing from {prefix}*"
        );
    }
}
