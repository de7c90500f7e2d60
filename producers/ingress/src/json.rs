//! Strict JSON bodies: size-limited, and every serde error reported with the field's path.

use axum::body::{Body, Bytes};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Reads at most `limit` bytes of `body`; more is a 400 `body_too_large`.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::BadRequest {
            code: "body_too_large",
            field: None,
            message: format!("request body exceeds {limit} bytes"),
        })
}

/// Parses `bytes` as `T`, naming the field at fault (missing, unknown, wrong type).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest {
                code: "invalid_json",
                field: None,
                message: format!("body is not valid JSON: {inner}"),
            };
        }
        let msg = strip_position(&inner.to_string());
        // A missing field is reported at its parent's path; serde names it in the message.
        let field = match backticked(&msg).filter(|_| msg.starts_with("missing field")) {
            Some(name) if path == "." => name.to_owned(),
            Some(name) => format!("{path}.{name}"),
            None => path,
        };
        if field == "." {
            ApiError::BadRequest {
                code: "invalid_body",
                field: None,
                message: msg,
            }
        } else {
            ApiError::field(field, msg)
        }
    })
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
    }

    fn field_of(json: &str) -> Option<String> {
        match parse::<Body>(json.as_bytes()).unwrap_err() {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("{other:?}"),
        }
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
}
