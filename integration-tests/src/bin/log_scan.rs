//! `log_scan <junit.xml>`: searches every test's captured output in a nextest JUnit report for
//! the secrets the test sources name and for phone numbers and JWTs (issue 15.7; see
//! `integration_tests::log_scan`). Prints what it searched for and every leak; exits 1 on a
//! leak. `deploy/local/test.sh` runs it after the tests.

use std::path::{Path, PathBuf};

use anyhow::Context;
use integration_tests::log_scan;

/// Every `tests/` directory of the workspace, and the harness's own sources.
fn test_source_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = vec![root.join("integration-tests/src")];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !path.is_dir()
                || name.starts_with('.')
                || ["target", "node_modules", "fuzz"].contains(&name)
            {
                continue;
            }
            if name == "tests" {
                dirs.push(path);
            } else {
                stack.push(path);
            }
        }
    }
    Ok(dirs)
}

fn main() -> anyhow::Result<()> {
    let junit = std::env::args()
        .nth(1)
        .context("usage: log_scan <junit.xml>")?;
    let xml = std::fs::read_to_string(&junit).with_context(|| format!("reading {junit}"))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let dirs = test_source_dirs(root)?;
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let secrets = log_scan::secrets_in_sources(&refs)?;
    let cases = xml.matches("<testcase ").count();
    let with_output = xml.matches("<system-out>").count() + xml.matches("<system-err>").count();
    anyhow::ensure!(
        cases > 0 && with_output > 0,
        "{junit} holds {cases} test cases and {with_output} stored outputs: nothing to search"
    );
    let leaks = log_scan::scan_junit(&xml, &secrets);
    println!(
        "log scan: {cases} tests' output ({} MB) searched for {} secrets named in {} test source \
         dirs, phone numbers and JWTs: {} found",
        xml.len() / 1_000_000,
        secrets.len(),
        dirs.len(),
        leaks.len()
    );
    for leak in &leaks {
        println!("  {}: {} in: {}", leak.test, leak.what, leak.line);
    }
    if !leaks.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
