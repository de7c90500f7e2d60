//! The crate map holds: every dependency between workspace crates is one the layout allows
//! (docs/architecture.md), and no crate grows past a third of the workspace's code. Reads
//! `cargo metadata --no-deps`, so it needs neither the broker nor Postgres.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Workspace crates each crate may depend on. A crate missing here fails the test: place it in
/// the map (and in docs/architecture.md) first. `integration-tests` may use everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("events", &[]),
    ("switchyard-runtime", &["events"]),
    ("switchyard-ingress", &["events", "switchyard-runtime"]),
    ("switchyard-outbox", &["events", "switchyard-runtime"]),
    ("switchyard-dispatcher", &["events", "switchyard-runtime"]),
    ("switchyard-deptrans", &["events", "switchyard-runtime"]),
    ("switchyard-idempotent", &["events", "switchyard-runtime"]),
    ("switchyard-proxy", &["events", "switchyard-runtime"]),
    (
        "switchyard-cli",
        &["events", "switchyard-runtime", "switchyard-dispatcher"],
    ),
    (
        "switchyard-task-tracker",
        &[
            "events",
            "switchyard-runtime",
            "switchyard-outbox",
            "switchyard-idempotent",
        ],
    ),
];

const EVERYTHING: &str = "integration-tests";
const RUNTIME: &str = "switchyard-runtime";
const PROXY: &str = "switchyard-proxy";
/// Crates that talk to Kafka: the proxy must reach none of them.
const KAFKA_CRATES: &[&str] = &["rdkafka", "rdkafka-sys"];

/// One workspace package as `cargo metadata` describes it.
struct Package {
    name: String,
    dir: PathBuf,
    deps: Vec<Dep>,
    /// The runtime's `default` feature list (empty for other crates).
    default_features: Vec<String>,
}

struct Dep {
    name: String,
    features: Vec<String>,
    uses_default_features: bool,
}

fn packages(metadata: &Value) -> Vec<Package> {
    metadata["packages"]
        .as_array()
        .expect("metadata has packages")
        .iter()
        .map(|p| Package {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            dir: Path::new(p["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            deps: p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| Dep {
                    name: d["name"].as_str().unwrap_or_default().to_owned(),
                    features: strings(&d["features"]),
                    uses_default_features: d["uses_default_features"].as_bool().unwrap_or(true),
                })
                .collect(),
            default_features: strings(&p["features"]["default"]),
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Where a crate lives decides which side of the bus it is on.
fn side(root: &Path, p: &Package) -> Option<&'static str> {
    let rel = p.dir.strip_prefix(root).ok()?;
    match rel.components().next()?.as_os_str().to_str()? {
        "producers" => Some("producers"),
        "consumers" => Some("consumers"),
        _ => None,
    }
}

/// Every forbidden edge, as one line each; empty when the map holds.
fn edge_violations(root: &Path, pkgs: &[Package]) -> Vec<String> {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    let by_name: BTreeMap<&str, &Package> = pkgs.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut out = Vec::new();
    for p in pkgs {
        let name = p.name.as_str();
        if name == EVERYTHING {
            continue;
        }
        let Some(may) = allowed.get(name) else {
            out.push(format!(
                "{name} is not in the crate map: add it to ALLOWED and docs/architecture.md"
            ));
            continue;
        };
        for d in &p.deps {
            let Some(target) = by_name.get(d.name.as_str()) else {
                continue;
            };
            if side(root, p) == Some("producers") && side(root, target) == Some("consumers") {
                out.push(format!(
                    "{name} -> {}: producers never use consumers",
                    d.name
                ));
            } else if name == RUNTIME && !may.contains(d.name.as_str()) {
                out.push(format!(
                    "{name} -> {}: runtime never uses a service",
                    d.name
                ));
            } else if !may.contains(d.name.as_str()) {
                out.push(format!("{name} -> {}: not an allowed edge", d.name));
            }
        }
    }
    // The proxy never talks to Kafka: no rdkafka, no runtime with its `kafka` feature.
    if let Some(proxy) = by_name.get(PROXY) {
        let runtime_kafka_by_default = by_name
            .get(RUNTIME)
            .is_some_and(|r| r.default_features.iter().any(|f| f == "kafka"));
        for d in &proxy.deps {
            if KAFKA_CRATES.contains(&d.name.as_str()) {
                out.push(format!("{PROXY} -> {}: the proxy never uses Kafka", d.name));
            }
            if d.name == RUNTIME
                && (d.features.iter().any(|f| f == "kafka")
                    || (d.uses_default_features && runtime_kafka_by_default))
            {
                out.push(format!(
                    "{PROXY} -> {RUNTIME} with feature kafka: the proxy never uses Kafka"
                ));
            }
        }
    }
    out
}

/// Lines of non-test Rust in `dir`: every `.rs` file outside `tests/`, `benches/`, `target/`
/// and nested packages, up to its `#[cfg(test)]` module (by house style, the file's end).
fn code_lines(dir: &Path, top: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let nested_package = path.join("Cargo.toml").exists();
            let skipped = top && matches!(name.as_str(), "tests" | "benches" | "target");
            let hidden = name.starts_with('.');
            if !(skipped || nested_package || hidden) {
                n += code_lines(&path, false);
            }
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            n += text
                .lines()
                .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
                .count();
        }
    }
    n
}

/// `(crate, lines)` of every crate but the test suite, largest first.
fn sizes(pkgs: &[Package]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = pkgs
        .iter()
        .filter(|p| p.name != EVERYTHING)
        .map(|p| (p.name.clone(), code_lines(&p.dir, true)))
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.1));
    out
}

fn size_violations(sizes: &[(String, usize)]) -> Vec<String> {
    let total: usize = sizes.iter().map(|(_, n)| n).sum();
    sizes
        .iter()
        .filter(|(_, n)| n * 3 > total)
        .map(|(name, n)| format!("{name} holds {n} of {total} lines of code, over a third"))
        .collect()
}

fn workspace_metadata() -> (PathBuf, Value) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits in the workspace root")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = root.canonicalize().unwrap_or(root);
    (
        root,
        serde_json::from_slice(&out.stdout).expect("metadata is JSON"),
    )
}

#[test]
fn workspace_crates_depend_only_along_allowed_edges() {
    let (root, metadata) = workspace_metadata();
    let pkgs = packages(&metadata);
    assert!(
        pkgs.len() >= ALLOWED.len(),
        "cargo metadata listed {} packages",
        pkgs.len()
    );
    let bad = edge_violations(&root, &pkgs);
    assert!(bad.is_empty(), "forbidden crate edges:\n{}", bad.join("\n"));
}

#[test]
fn no_crate_holds_more_than_a_third_of_the_code() {
    let (_, metadata) = workspace_metadata();
    let sizes = sizes(&packages(&metadata));
    let total: usize = sizes.iter().map(|(_, n)| n).sum();
    let table: String = sizes
        .iter()
        .map(|(name, n)| {
            format!(
                "{name:<26} {n:>6} {:>5.1}%\n",
                100.0 * *n as f64 / total as f64
            )
        })
        .collect();
    println!("{table}{:<26} {total:>6}", "total");
    assert!(
        sizes.iter().all(|(_, n)| *n > 0),
        "a crate with no code:\n{table}"
    );
    let bad = size_violations(&sizes);
    assert!(bad.is_empty(), "{}\n{table}", bad.join("\n"));
}

/// The checks themselves catch what they are for, on a made-up workspace.
#[test]
fn the_checks_catch_forbidden_edges_and_oversized_crates() {
    let root = Path::new("/ws");
    let pkg = |name: &str, dir: &str, deps: &[(&str, &[&str])]| Package {
        name: name.to_owned(),
        dir: root.join(dir),
        deps: deps
            .iter()
            .map(|(d, f)| Dep {
                name: (*d).to_owned(),
                features: f.iter().map(|s| (*s).to_owned()).collect(),
                uses_default_features: true,
            })
            .collect(),
        default_features: Vec::new(),
    };
    let clean = [
        pkg("events", "proto", &[]),
        pkg(RUNTIME, "runtime", &[("events", &[]), ("rdkafka", &[])]),
        pkg(
            "switchyard-dispatcher",
            "consumers/dispatcher",
            &[(RUNTIME, &["kafka"])],
        ),
        pkg(PROXY, "proxy", &[(RUNTIME, &[])]),
    ];
    assert_eq!(edge_violations(root, &clean), Vec::<String>::new());

    let bad = [
        pkg("events", "proto", &[]),
        pkg(RUNTIME, "runtime", &[("switchyard-dispatcher", &[])]),
        pkg(
            "switchyard-ingress",
            "producers/ingress",
            &[("switchyard-idempotent", &[])],
        ),
        pkg("switchyard-idempotent", "consumers/idempotent", &[]),
        pkg(
            "switchyard-dispatcher",
            "consumers/dispatcher",
            &[("switchyard-deptrans", &[])],
        ),
        pkg(
            "switchyard-deptrans",
            "consumers/deptrans",
            &[("switchyard-dispatcher", &[])],
        ),
        pkg(PROXY, "proxy", &[("rdkafka", &[]), (RUNTIME, &["kafka"])]),
        pkg("switchyard-new", "consumers/new", &[]),
    ];
    let found = edge_violations(root, &bad);
    for expected in [
        "switchyard-runtime -> switchyard-dispatcher: runtime never uses a service",
        "switchyard-ingress -> switchyard-idempotent: producers never use consumers",
        "switchyard-dispatcher -> switchyard-deptrans: not an allowed edge",
        "switchyard-deptrans -> switchyard-dispatcher: not an allowed edge",
        "switchyard-proxy -> rdkafka: the proxy never uses Kafka",
        "switchyard-proxy -> switchyard-runtime with feature kafka: the proxy never uses Kafka",
        "switchyard-new is not in the crate map: add it to ALLOWED and docs/architecture.md",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "missed {expected:?} in {found:#?}"
        );
    }

    let sizes = [
        ("a".to_owned(), 40),
        ("b".to_owned(), 30),
        ("c".to_owned(), 30),
    ];
    assert_eq!(
        size_violations(&sizes),
        ["a holds 40 of 100 lines of code, over a third"]
    );
    let even = [
        ("a".to_owned(), 33),
        ("b".to_owned(), 33),
        ("c".to_owned(), 33),
    ];
    assert_eq!(size_violations(&even), Vec::<String>::new());
}
