//! Schema evolution check (runs in `.ci/run` with the other tests): every version of an event
//! must stay readable by consumers of the previous one, and a committed schema file must never
//! change incompatibly; an incompatible change needs a new event type instead.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use switchyard_ingress::domain_events::Registry;

/// Why `new` cannot replace `old`: removed or retyped fields, new required fields. Only the
/// top-level object is compared (every shipped schema is flat); nested schemas must be equal.
fn incompatibilities(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let props = |s: &Value| {
        s.get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone()
    };
    let required = |s: &Value| -> Vec<String> {
        s.get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (old_props, new_props) = (props(old), props(new));
    let mut out = Vec::new();
    for (name, schema) in &old_props {
        match new_props.get(name) {
            None => out.push(format!("field {name} was removed")),
            Some(s) if s != schema => out.push(format!("field {name} changed: {schema} -> {s}")),
            Some(_) => {}
        }
    }
    let old_required = required(old);
    for name in required(new) {
        if !old_required.contains(&name) {
            out.push(format!("field {name} became required"));
        }
    }
    if old.get("type") != new.get("type") {
        out.push("the top-level type changed".into());
    }
    out
}

fn registry() -> Registry {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Registry::load(&root.join("deploy/events.toml")).unwrap()
}

#[test]
fn each_version_is_compatible_with_the_previous_one() {
    let reg = registry();
    let mut by_type: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for e in reg.iter() {
        by_type
            .entry(e.entry.event_type.as_str())
            .or_default()
            .push(e);
    }
    let mut problems = Vec::new();
    for (name, versions) in by_type {
        for pair in versions.windows(2) {
            let (old, new) = (&pair[0], &pair[1]);
            assert_eq!(
                new.entry.version,
                old.entry.version + 1,
                "{name}: versions must not skip"
            );
            assert_eq!(
                new.entry.key, old.entry.key,
                "{name}: the key field is part of the contract"
            );
            for p in incompatibilities(&old.schema, &new.schema) {
                problems.push(format!(
                    "{name} v{} -> v{}: {p}",
                    old.entry.version, new.entry.version
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "incompatible versions (add a new event type instead):\n{}",
        problems.join("\n")
    );
}

/// Compares each schema file with the content it had when it was first committed. Needs the
/// git history; a checkout without it (no git, shallow clone) skips with a note.
#[test]
fn committed_schema_versions_never_change_incompatibly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if git(&["rev-parse", "--is-shallow-repository"]).map(|s| s.trim() == "false") != Some(true) {
        eprintln!("no full git history: skipping the committed-schema comparison");
        return;
    }
    let mut problems = Vec::new();
    for e in registry().iter() {
        let rel = e.schema_path.strip_prefix(&root).unwrap_or(&e.schema_path);
        let rel = rel.to_string_lossy();
        let Some(log) = git(&["log", "--diff-filter=A", "--format=%H", "--", &rel]) else {
            continue;
        };
        let Some(first) = log.lines().last() else {
            continue;
        }; // not committed yet
        let Some(text) = git(&["show", &format!("{first}:{rel}")]) else {
            continue;
        };
        let committed: Value = serde_json::from_str(&text).unwrap();
        for p in incompatibilities(&committed, &e.schema) {
            problems.push(format!("{rel}: {p}"));
        }
    }
    assert!(
        problems.is_empty(),
        "committed schema versions changed incompatibly:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_catches_removed_retyped_and_newly_required_fields() {
    let old = serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"]});
    let ok = serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}, "c": {"type": "integer"}}, "required": ["a"]});
    assert!(incompatibilities(&old, &ok).is_empty());
    let bad = serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}, "c": {"type": "integer"}}, "required": ["a", "c"]});
    let found = incompatibilities(&old, &bad);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("field a changed"));
    assert_eq!(found[1], "field b was removed");
    assert_eq!(found[2], "field c became required");
}
