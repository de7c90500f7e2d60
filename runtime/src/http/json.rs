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
        let path = render(err.path());
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return BadRequest {
                code: "invalid_json",
                field: None,
                message: format!("body is not valid JSON: {inner}"),
            };
        }
        refusal(path, &inner.to_string())
    })
}

/// Parses an already-decoded JSON `value` as `T` with the same field naming as [`parse`].
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, BadRequest> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = render(err.path());
        refusal(path, &err.into_inner().to_string())
    })
}

/// Appends the object key `key` to the field path `path`: a plain key (letters, digits, `_`,
/// `-`) after a dot, any other (empty, dotted, spaced, quoted) as `["…"]` in JSON string
/// syntax, so that every path names one field and never reads as empty.
pub fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&serde_json::Value::from(key).to_string());
        path.push(']');
    }
}

/// `a.b[0].c` (empty at the root), keys as [`push_key`] writes them.
fn render(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => push_key(&mut out, key),
            Segment::Enum { variant } => push_key(&mut out, variant),
            Segment::Unknown => push_key(&mut out, "?"),
        }
    }
    out
}

fn refusal(path: String, inner: &str) -> BadRequest {
    let msg = strip_position(inner);
    match (path.is_empty(), named_field(&msg)) {
        (true, None) => BadRequest {
            code: "invalid_body",
            field: None,
            message: msg,
        },
        (_, named) => BadRequest::field(field_path(path, named), msg),
    }
}

/// A missing field is reported at its parent's path; serde names it in the message. An
/// unknown field is reported at the object's path (its name is in the message), except at
/// the root, where the path is its name.
fn field_path(mut path: String, named: Option<(&str, bool)>) -> String {
    match named {
        Some((name, missing)) if missing || path.is_empty() => {
            push_key(&mut path, name);
            path
        }
        _ => path,
    }
}

/// The field a "missing field `x`" (true) or "unknown field `x`, expected ..." (false) message
/// names. Serde writes the name between backticks; a name may hold backticks itself, so an
/// unknown field's name runs to the last backtick before ", expected" (or the end).
fn named_field(msg: &str) -> Option<(&str, bool)> {
    let (rest, missing) = if let Some(rest) = msg.strip_prefix("missing field `") {
        (rest, true)
    } else {
        (msg.strip_prefix("unknown field `")?, false)
    };
    let body = rest.split(", expected").next().unwrap_or(rest);
    let end = body.rfind('`')?;
    Some((&rest[..end], missing))
}

fn strip_position(msg: &str) -> String {
    msg.split(" at line ").next().unwrap_or(msg).to_owned()
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
    fn odd_keys_are_named_in_json_string_syntax_never_empty() {
        // Found by the uid_notify fuzz target: `{"":1}` was refused with field "".
        assert_eq!(field_of(r#"{"a":1,"":2}"#).as_deref(), Some(r#"[""]"#));
        assert_eq!(
            field_of(r#"{"a":1,"x.y":2}"#).as_deref(),
            Some(r#"["x.y"]"#)
        );
        assert_eq!(
            field_of(r#"{"a":1,"a`b":2}"#).as_deref(),
            Some(r#"["a`b"]"#)
        );
        assert_eq!(
            field_of(r#"{"a":1,"se\"q":2}"#).as_deref(),
            Some(r#"["se\"q"]"#)
        );
        let mut path = "inner".to_owned();
        push_key(&mut path, "");
        assert_eq!(path, r#"inner[""]"#);
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
