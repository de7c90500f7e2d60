//! Strict JSON bodies: size-limited, and every serde error reported with the field's path
//! (`a.b[0].c`; a missing field at its parent's path plus its name), the same everywhere.

use axum::body::{Body, Bytes};
use serde::de::DeserializeOwned;

use super::BadRequest;

/// Reads at most `limit` bytes of `body`; more is a 400 `body_too_large`.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, BadRequest> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| BadRequest {
            code: "body_too_large",
            field: None,
            message: format!("request body exceeds {limit} bytes"),
        })
}

/// Parses `bytes` as `T`, naming the field at fault (missing, unknown, wrong type).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BadRequest> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return BadRequest {
                code: "invalid_json",
                field: None,
                message: format!("body is not valid JSON: {inner}"),
            };
        }
        let msg = strip_position(&inner.to_string());
        if path == "." && backticked(&msg).is_none() {
            return BadRequest {
                code: "invalid_body",
                field: None,
                message: msg,
            };
        }
        BadRequest::field(field_path(&path, &msg), msg)
    })
}

/// Parses an already-decoded JSON `value` as `T` with the same field naming as [`parse`].
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, BadRequest> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let msg = strip_position(&err.into_inner().to_string());
        if path == "." && backticked(&msg).is_none() {
            return BadRequest {
                code: "invalid_body",
                field: None,
                message: msg,
            };
        }
        BadRequest::field(field_path(&path, &msg), msg)
    })
}

/// A missing field is reported at its parent's path; serde names it in the message. An
/// unknown field is reported at the object's path, with its name in the message too.
fn field_path(path: &str, msg: &str) -> String {
    let named = backticked(msg)
        .filter(|_| msg.starts_with("missing field") || msg.starts_with("unknown field"));
    match named {
        Some(name) if path == "." => name.to_owned(),
        Some(name) if msg.starts_with("missing field") => format!("{path}.{name}"),
        _ => path.to_owned(),
    }
}

fn strip_position(msg: &str) -> String {
    msg.split(" at line ").next().unwrap_or(msg).to_owned()
}

fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        a: u64,
        b: Option<String>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        c: Vec<u32>,
        d: u8,
    }

    fn field_of(json: &str) -> Option<String> {
        parse::<Body>(json.as_bytes()).unwrap_err().field
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"b":"x"}"#).as_deref(), Some("a"));
        assert_eq!(field_of(r#"{"a":1,"zz":2}"#).as_deref(), Some("zz"));
        assert_eq!(field_of(r#"{"a":"1"}"#).as_deref(), Some("a"));
        assert_eq!(field_of(r#"{"a":1,"b":5}"#).as_deref(), Some("b"));
        assert_eq!(field_of(r#"{"a":1"#), None);
        assert_eq!(field_of("[]"), None);
    }

    #[test]
    fn nested_paths_are_the_same_for_bytes_and_values() {
        let cases = [
            (r#"{"a":1,"inner":{"c":[1,"x"],"d":1}}"#, "inner.c[1]"),
            (r#"{"a":1,"inner":{"c":[]}}"#, "inner.d"),
            (r#"{"a":1,"inner":{"c":[],"d":300}}"#, "inner.d"),
        ];
        for (json, field) in cases {
            let from_bytes = parse::<Body>(json.as_bytes()).unwrap_err();
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            let from_value = from_value::<Body>(value).unwrap_err();
            assert_eq!(from_bytes.field.as_deref(), Some(field), "{json}");
            assert_eq!(from_value.field.as_deref(), Some(field), "{json}");
            assert_eq!(from_bytes.code, "invalid_field");
        }
    }
}
