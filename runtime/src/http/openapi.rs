//! A service's OpenAPI document as committed (`schemas/openapi/<name>.json`) and the drift test
//! every service with an HTTP API runs over it ([`crate::openapi_drift_test`]).

/// `api` as committed: pretty JSON and a final newline.
pub fn render(api: &utoipa::openapi::OpenApi) -> String {
    let mut json = api.to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// The test `committed_openapi_matches_code`: fails when `schemas/openapi/<name>.json` drifts
/// from `$document()`, naming the command that regenerates it (`cargo run -p <package> --
/// --print-openapi`).
#[macro_export]
macro_rules! openapi_drift_test {
    ($package:literal, $name:literal, $document:path) => {
        #[cfg(test)]
        #[test]
        fn committed_openapi_matches_code() {
            $crate::http::openapi::assert_committed(
                env!("CARGO_MANIFEST_DIR"),
                $package,
                $name,
                &$document(),
            );
        }
    };
}

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
