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
/// A number with a zero fraction below 2^53 (`121.0`) is taken as the integer it is: JSON Schema,
/// and so every OpenAPI document here, counts it as an integer.
pub fn from_value<T: DeserializeOwned>(mut value: serde_json::Value) -> Result<T, BadRequest> {
    integral_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = render(err.path());
        refusal(path, &err.into_inner().to_string())
    })
}

/// Rewrites every float with a zero fraction whose magnitude is below 2^53 (where a float holds
/// each integer exactly) as that integer.
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < EXACT {
                    #[allow(clippy::cast_possible_truncation)] // exact below 2^53
                    let i = f as i64;
                    *value = Value::from(i);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
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

/// An RFC 3339 time in a request body (`2026-12-07T10:00:00Z`, `2026-12-07T13:00:00.5+03:00`):
/// the schema every time field of every API documents. `format: date-time` alone is only an
/// annotation in OpenAPI 3.1 (JSON Schema 2020-12), so clients and fuzzers may take `""` for a
/// valid time; the pattern states what the parsers take. It leaves out 29 February, which the
/// parsers take in leap years, to stay a plain regular expression.
pub struct Rfc3339;

/// The pattern of [`Rfc3339`].
pub const RFC3339_PATTERN: &str = concat!(
    "^[0-9]{4}-",
    "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))",
    "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?",
    "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
);

impl utoipa::PartialSchema for Rfc3339 {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .pattern(Some(RFC3339_PATTERN))
            .description(Some("An RFC 3339 time, e.g. `2026-12-07T10:00:00Z`"))
            .into()
    }
}

impl utoipa::ToSchema for Rfc3339 {}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn an_integral_float_is_the_integer_json_schema_says_it_is() {
        #[derive(Debug, Deserialize)]
        struct Offsets {
            offset: i64,
            ratio: f64,
        }
        let ok: Offsets = from_value(serde_json::json!({"offset": 121.0, "ratio": 2.0})).unwrap();
        assert_eq!((ok.offset, ok.ratio), (121, 2.0));
        for (bad, why) in [(1.5, "a fraction"), (1e300, "beyond 2^53")] {
            let e = from_value::<Offsets>(serde_json::json!({"offset": bad, "ratio": 1.0}))
                .expect_err(why);
            assert_eq!(e.field.as_deref(), Some("offset"), "{why}");
        }
    }

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
