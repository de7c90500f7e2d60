//! No secret in any test's logs (issue 15.7): after the suite, every test's captured output
//! (nextest's JUnit report, which keeps passing tests' output too) is searched for
//!
//! - the secrets the tests hand to the services: every string constant of the test sources
//!   whose name says it is one (`*TOKEN*`, `*SECRET*`, `*KEY*`, `*PASSWORD*`; not `*_HEADER`),
//!   every `whsec_` literal, and every driver licence given to the deptrans fakes
//!   (`add_driver`) that is long enough to be searched for (5 characters or more);
//! - what is a secret by its shape, whoever made it: a Russian phone number (`+7` and ten
//!   digits) and a JWT (`eyJ…​.eyJ…​.`).
//!
//! The fault run searches its processes' own log files the same way (`faults::run`).

use std::collections::BTreeSet;
use std::path::Path;

/// A secret that appeared in a test's output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Leak {
    pub test: String,
    /// What was found: the secret's name, or the shape that matched.
    pub what: String,
    /// The line it was found in, cut to 200 characters.
    pub line: String,
}

/// The secrets named in the test sources under `dirs` (recursively, `.rs` files).
pub fn secrets_in_sources(dirs: &[&Path]) -> anyhow::Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    let mut stack: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            secrets_in_source(&std::fs::read_to_string(&path)?, &mut found);
        }
    }
    Ok(found)
}

/// The secrets one source file names (see the module doc).
pub fn secrets_in_source(text: &str, found: &mut BTreeSet<String>) {
    for line in text.lines() {
        let line = line.trim();
        if let Some(value) = secret_const(line) {
            found.insert(value.to_owned());
        }
        if let Some(at) = line.find("add_driver(") {
            // add_driver(park, driver, licence, ...): the third literal.
            let licence = literals(&line[at..]).nth(2);
            if let Some(l) = licence.filter(|l| l.len() >= 5) {
                found.insert(l.to_owned());
            }
        }
        for lit in literals(line) {
            if lit.starts_with("whsec_") && lit.len() > 12 {
                found.insert(lit.to_owned());
            }
        }
    }
}

/// `const NAME: &str = "value";` (or `static`) where NAME says it is a secret.
fn secret_const(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("pub(crate) ")
        .or_else(|| line.strip_prefix("pub "))
        .unwrap_or(line);
    let rest = rest
        .strip_prefix("const ")
        .or_else(|| rest.strip_prefix("static "))?;
    let (name, rest) = rest.split_once(':')?;
    let name = name.trim();
    let secret_name = ["TOKEN", "SECRET", "KEY", "PASSWORD"]
        .iter()
        .any(|w| name.contains(w))
        && !name.ends_with("_HEADER");
    if !secret_name || !rest.trim_start().starts_with("&str") {
        return None;
    }
    literals(rest).next().filter(|v| v.len() >= 6)
}

/// The plain string literals of a line (no escapes inside; enough for test constants).
fn literals(line: &str) -> impl Iterator<Item = &str> {
    line.split('"').skip(1).step_by(2)
}

/// Every leak in a nextest JUnit report: the named `secrets`, and phone numbers and JWTs by
/// their shape, in each test case's stored output.
pub fn scan_junit(xml: &str, secrets: &BTreeSet<String>) -> Vec<Leak> {
    let mut leaks = BTreeSet::new();
    for case in xml.split("<testcase ").skip(1) {
        let name = attr(case, "name").unwrap_or("?");
        let class = attr(case, "classname").unwrap_or("?");
        let test = format!("{class} {name}");
        let body = case.split("</testcase>").next().unwrap_or(case);
        for line in body.lines() {
            let line = unescape(line);
            let cut = || line.chars().take(200).collect::<String>();
            for s in secrets {
                if line.contains(s.as_str()) {
                    leaks.insert(Leak {
                        test: test.clone(),
                        what: format!("secret {s:?}"),
                        line: cut(),
                    });
                }
            }
            if let Some(what) = shaped_secret(&line) {
                leaks.insert(Leak {
                    test: test.clone(),
                    what: what.to_owned(),
                    line: cut(),
                });
            }
        }
    }
    leaks.into_iter().collect()
}

/// A phone number (`+7` and ten digits) or a JWT (`eyJ….eyJ….`) in `line`.
pub fn shaped_secret(line: &str) -> Option<&'static str> {
    let b = line.as_bytes();
    for (i, w) in b.windows(2).enumerate() {
        if w == b"+7" {
            let digits = b[i + 2..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 10 {
                return Some("phone number");
            }
        }
    }
    let mut from = 0;
    while let Some(at) = line[from..].find("eyJ") {
        let start = from + at;
        let token: &str = line[start..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .next()
            .unwrap_or_default();
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() >= 3 && parts[0].len() >= 10 && parts[1].starts_with("eyJ") {
            return Some("JWT");
        }
        from = start + 3;
    }
    None
}

/// An attribute of the tag `tag` starts with (the text after `<testcase `).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let head = tag.split('>').next()?;
    let key = format!("{name}=\"");
    let start = if head.starts_with(&key) {
        key.len()
    } else {
        head.find(&format!(" {key}"))? + key.len() + 1
    };
    head[start..].split('"').next()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_taken_from_the_test_sources() {
        let src = r#"
            const CALLER_TOKEN: &str = "test-caller-token-0123456789";
            pub(crate) const PARTNER_SECRET: &str = "partner-callback-secret-0123";
            const TOKEN_HEADER: &str = "x-idempotency-token";
            const TOPIC: &str = "uid-notify-events";
            let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
            fakes.state.add_driver("p1", "in", "L-in", &["econom"], 1.0, 2.0);
            fakes.state.add_driver("p1", "far", "LIC-77-far", &["econom"], 1.0, 2.0);
        "#;
        let mut found = BTreeSet::new();
        secrets_in_source(src, &mut found);
        let want: BTreeSet<String> = [
            "test-caller-token-0123456789",
            "partner-callback-secret-0123",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "LIC-77-far",
        ]
        .map(String::from)
        .into();
        assert_eq!(found, want);
    }

    #[test]
    fn a_leak_is_found_in_the_test_that_printed_it_and_nowhere_else() {
        let secrets: BTreeSet<String> = ["admin-token-0123456789".to_owned()].into();
        let xml = r#"<testsuites><testsuite name="it">
<testcase name="clean" classname="integration-tests::it" time="1.0"><system-out>INFO delivered event_id=e1 &quot;ok&quot;
</system-out></testcase>
<testcase name="leaky" classname="integration-tests::it" time="1.0"><system-out>WARN auth failed token=admin-token-0123456789
</system-out><system-err>INFO lookup phone=+79001234567
DEBUG header=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln
</system-err></testcase>
<testcase name="short-digits" classname="integration-tests::it" time="1.0"><system-out>INFO offset +7123 of +7900123456789 ok
</system-out></testcase>
</testsuite></testsuites>"#;
        let leaks = scan_junit(xml, &secrets);
        let got: Vec<(&str, &str)> = leaks
            .iter()
            .map(|l| (l.test.as_str(), l.what.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("integration-tests::it leaky", "JWT"),
                ("integration-tests::it leaky", "phone number"),
                (
                    "integration-tests::it leaky",
                    "secret \"admin-token-0123456789\""
                ),
            ]
        );
    }
}
