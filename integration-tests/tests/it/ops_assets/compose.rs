//! The compose file: Kafka in KRaft mode, PostgreSQL, the services, and configs that load.

use std::fs;
use std::path::{Path, PathBuf};

use integration_tests::workspace_root;
use serde_json::Value;

use super::{deploy, str_at, yaml_docs};

#[test]
fn compose_runs_kafka_kraft_postgres_and_the_services() {
    let docs = yaml_docs(&deploy("compose"));
    assert_eq!(docs.len(), 1, "one compose file");
    let compose = &docs[0].1;
    let services = compose["services"].as_object().expect("services");
    for s in [
        "kafka",
        "postgres",
        "topics",
        "ingress",
        "dispatcher",
        "deptrans",
        "proxy",
    ] {
        assert!(services.contains_key(s), "compose has no service {s}");
    }
    let kafka = &services["kafka"];
    assert_eq!(
        str_at(kafka, "/image", "kafka"),
        format!("apache/kafka:{}", pinned_kafka_version()),
        "compose runs the Apache Kafka version of deploy/kafka/pom.xml"
    );
    assert_eq!(
        str_at(kafka, "/environment/KAFKA_PROCESS_ROLES", "kafka"),
        "broker,controller",
        "KRaft"
    );
    assert!(kafka
        .pointer("/environment/KAFKA_ZOOKEEPER_CONNECT")
        .is_none());
    assert!(str_at(&services["postgres"], "/image", "postgres").starts_with("postgres"));
    for s in ["kafka", "postgres"] {
        assert!(
            services[s]["healthcheck"]["test"].is_array(),
            "{s} has no healthcheck"
        );
    }

    let dockerfile = fs::read_to_string(deploy("compose/Dockerfile")).unwrap();
    let build = str_at(&services["topics"], "/build/dockerfile", "topics");
    assert_eq!(build, "deploy/compose/Dockerfile");
    for (name, s) in services {
        str_at(s, "/image", name);
        for dep in s["depends_on"]
            .as_object()
            .into_iter()
            .flat_map(|d| d.keys())
        {
            assert!(
                services.contains_key(dep),
                "{name} depends on unknown {dep}"
            );
        }
        if let Some(binary) = s.pointer("/command/0").and_then(Value::as_str) {
            assert!(
                dockerfile.contains(&format!("--bin {binary}")),
                "{name}: the image does not build {binary}"
            );
        }
    }

    // The configs the services run with load with their env overrides applied. nextest runs
    // each test in its own process, so setting env vars and the working directory is local.
    std::env::set_current_dir(workspace_root()).unwrap();
    let env = |svc: &str| -> Vec<(String, String)> {
        services[svc]["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect()
    };
    let config_of = |svc: &str| -> Option<PathBuf> {
        let args: Vec<&str> = services[svc]["command"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let file = args.windows(2).find(|w| w[0] == "--config").map(|w| w[1])?;
        assert!(Path::new(file).exists(), "{svc}: {file} does not exist");
        Some(PathBuf::from(file))
    };
    for (k, v) in env("ingress")
        .into_iter()
        .chain(env("dispatcher"))
        .chain(env("deptrans"))
    {
        std::env::set_var(k, v);
    }
    let ingress = switchyard_ingress::IngressConfig::load(config_of("ingress").as_deref())
        .expect("ingress config");
    assert_eq!(ingress.kafka.bootstrap_servers, "kafka:29092");
    assert_eq!(ingress.listen, "0.0.0.0:8080");
    let dispatcher =
        switchyard_dispatcher::DispatcherConfig::load(config_of("dispatcher").as_deref())
            .and_then(switchyard_dispatcher::Plan::resolve)
            .expect("dispatcher config");
    assert_eq!(dispatcher.config.kafka.bootstrap_servers, "kafka:29092");
    let deptrans = switchyard_deptrans::DeptransConfig::load(config_of("deptrans").as_deref())
        .expect("deptrans config");
    assert!(deptrans.postgres.url.contains("@postgres:5432/"));
    let proxy = config_of("proxy").expect("proxy config");
    toml::from_str::<toml::Value>(&fs::read_to_string(proxy).unwrap())
        .expect("proxy config is TOML");
}

/// The Kafka version every test runs against (`deploy/kafka/pom.xml`).
pub(crate) fn pinned_kafka_version() -> String {
    let pom = fs::read_to_string(deploy("kafka/pom.xml")).unwrap();
    let start = pom
        .find("<kafka.version>")
        .expect("kafka.version in the pom")
        + 15;
    let end = start + pom[start..].find('<').unwrap();
    pom[start..end].trim().to_owned()
}

#[test]
fn k8s_names_the_pinned_kafka_version() {
    let docs = yaml_docs(&deploy("k8s"));
    let ns = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "Namespace")
        .expect("a Namespace");
    assert_eq!(
        str_at(
            ns,
            "/metadata/annotations/switchyard.dev~1kafka-version",
            "namespace"
        ),
        pinned_kafka_version()
    );
}
