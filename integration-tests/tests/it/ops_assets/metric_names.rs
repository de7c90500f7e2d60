//! Metric names: what a service exports (from prometheus text or the proxy's source) and
//! what a PromQL expression reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use integration_tests::workspace_root;

/// Metric families in prometheus text: a counter `x` is exported as `x_total`, a histogram
/// as `x_bucket`, `x_sum` and `x_count`, anything else under its own name.
pub(super) fn exported_from_text(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        names.extend(exported_names(name, kind));
    }
    names
}

fn exported_names(name: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" if name.ends_with("_total") => vec![name.to_owned()],
        "counter" => vec![format!("{name}_total")],
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        _ => vec![name.to_owned()],
    }
}

/// The proxy's metric names from its source: `pub(crate) const X: &str = "name"` and
/// `registry.register(X, "help", field.clone())` with `pub(crate) field: Family<_, Kind>`
/// (`pub` or `pub(crate)`).
pub(super) fn proxy_exported() -> BTreeSet<String> {
    let src = fs::read_to_string(workspace_root().join("proxy/src/metrics.rs")).unwrap();
    let consts: BTreeMap<&str, &str> = public_items(&src)
        .filter_map(|l| l.strip_prefix("const "))
        .filter_map(|l| {
            let (ident, rest) = l.split_once(": &str = \"")?;
            Some((ident, rest.strip_suffix("\";")?))
        })
        .collect();
    let fields: BTreeMap<&str, &str> = public_items(&src)
        .filter_map(|l| {
            let (field, ty) = l.split_once(": Family<")?;
            let kind = ty.trim_end_matches(">,").rsplit(',').next()?.trim();
            Some((field, kind))
        })
        .collect();
    let mut names = BTreeSet::new();
    for call in src.split("registry.register(").skip(1) {
        let args: Vec<&str> = call
            .split(')')
            .next()
            .unwrap()
            .split(',')
            .map(str::trim)
            .collect();
        let name = consts[args[0]];
        let field = args.last().unwrap().trim_end_matches(".clone(");
        let kind = match fields.get(field).copied() {
            Some("Counter") => "counter",
            Some("Histogram") => "histogram",
            Some("Gauge") => "gauge",
            other => panic!("proxy metric {name}: unknown field type {other:?} of {field}"),
        };
        names.extend(exported_names(name, kind));
    }
    assert!(
        names.len() >= consts.len() - 1,
        "proxy: parsed {names:?} from {consts:?}"
    );
    names
}

/// The lines of `src` that declare a `pub` or `pub(crate)` item, after the visibility.
fn public_items(src: &str) -> impl Iterator<Item = &str> {
    src.lines().filter_map(|l| {
        let l = l.trim();
        l.strip_prefix("pub ")
            .or_else(|| l.strip_prefix("pub(crate) "))
    })
}

/// Metric names in a PromQL expression: identifiers outside strings, label matchers, ranges
/// and grouping clauses that are neither functions, keywords nor numbers.
pub(super) fn promql_metrics(expr: &str) -> BTreeSet<String> {
    /// Operators and aggregations that are not followed by `(` when a grouping comes first.
    const KEYWORDS: [&str; 28] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "e",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_parens = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_parens => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_parens = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let is_call = chars.get(j) == Some(&'(');
                let lower = ident.to_ascii_lowercase();
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&lower.as_str())
                {
                    skip_parens = is_call;
                } else if !is_call && !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(ident);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn promql_metric_extraction() {
    let names = promql_metrics(
        r#"sum by (route) (rate(a_total{status=~"5..", x="y"}[5m])) / on (route) group_left sum without (x) (b_bucket offset 1h) > 0.01 and histogram_quantile(0.99, c) == bool 2e3"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["a_total".into(), "b_bucket".into(), "c".into()])
    );
}
