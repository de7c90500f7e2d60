//! The OpenAPI documents in `schemas/openapi/`, and the check that an answer matches one.

use serde_json::{json, Value};

pub(crate) struct OpenApi(Value);

impl OpenApi {
    /// `schemas/openapi/<file>`, a service's generated contract.
    pub(crate) fn load(file: &str) -> Self {
        let path = format!("{}/../schemas/openapi/{file}", env!("CARGO_MANIFEST_DIR"));
        Self(serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json"))
    }

    /// Asserts that `body` is valid against the schema the document gives for `status` of
    /// `method path` (OpenAPI 3.1 schemas are JSON Schema 2020-12; `$ref`s resolve against the
    /// document's components).
    pub(crate) fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let response = &self.0["paths"][path][method]["responses"][status.to_string()];
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "the OpenAPI document has no JSON answer for {method} {path} {status}"
        );
        let mut root = schema.clone();
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["components"] = self.0["components"].clone();
        let validator = jsonschema::validator_for(&root).expect("schema");
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status} does not match the OpenAPI document: {errors:#?}\n{body:#}"
        );
    }
}
