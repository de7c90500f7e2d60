//! The drift check every service with an HTTP API runs over its committed OpenAPI document.

/// Panics unless `schemas/openapi/<name>.json` (from the workspace root, found from the
/// service's `manifest_dir`, two folders down) equals `document`, the one the code derives; the
/// message names the first line that differs and the command that regenerates the file.
pub fn assert_committed(manifest_dir: &str, package: &str, name: &str, document: &str) {
    let path = format!("{manifest_dir}/../../schemas/openapi/{name}.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == document {
        return;
    }
    let first = committed
        .lines()
        .zip(document.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| committed.lines().count().min(document.lines().count()));
    panic!(
        "schemas/openapi/{name}.json is stale (first difference at line {}): run \
         `cargo run -p {package} -- --print-openapi > schemas/openapi/{name}.json`",
        first + 1
    );
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "first difference at line 2")]
    fn a_stale_document_names_its_first_different_line() {
        let dir = std::env::temp_dir().join(format!("openapi-{}", std::process::id()));
        let manifest = dir.join("a/b/c");
        std::fs::create_dir_all(&manifest).unwrap();
        std::fs::create_dir_all(dir.join("a/schemas/openapi")).unwrap();
        std::fs::write(dir.join("a/schemas/openapi/x.json"), "{\n\"a\": 1\n}").unwrap();
        // The committed file is found two folders above the manifest dir: `a/b/c` -> `a/`.
        super::assert_committed(manifest.to_str().unwrap(), "p", "x", "{\n\"a\": 1\n}");
        super::assert_committed(manifest.to_str().unwrap(), "p", "x", "{\n\"a\": 2\n}");
    }
}
