//! Query parameters refused the way bodies are: a 400 that names the parameter.

use axum::extract::rejection::QueryRejection;

use super::BadRequest;

/// A page size `name`: absent is `default`; else an integer in `1..=max`, or a 400 naming it.
pub fn page_limit(
    name: &str,
    raw: Option<&str>,
    default: i64,
    max: i64,
) -> Result<i64, BadRequest> {
    match raw {
        None => Ok(default),
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| BadRequest::field(name, format!("must be an integer in 1..={max}"))),
    }
}

/// A query string axum's `Query` extractor refused, as a 400 naming the parameter when the
/// error does (`limit: invalid digit found in string`, ``unknown field `x` ``).
pub fn rejection(rejection: QueryRejection) -> BadRequest {
    let text = rejection.body_text();
    let msg = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    let plain =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let by_path = msg.split_once(": ").map(|(p, _)| p).filter(|p| plain(p));
    let by_quote = || {
        let s = msg.find('`')?;
        let l = msg[s + 1..].find('`')?;
        Some(&msg[s + 1..s + 1 + l])
    };
    match by_path.or_else(by_quote) {
        Some(field) if by_path.is_some() => BadRequest {
            code: "invalid_field",
            field: Some(field.to_owned()),
            message: msg.to_owned(),
        },
        Some(field) => BadRequest::field(field, msg),
        None => BadRequest {
            code: "invalid_query",
            field: None,
            message: msg.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_limit_is_absent_or_in_range() {
        assert_eq!(page_limit("limit", None, 50, 500), Ok(50));
        assert_eq!(page_limit("limit", Some("500"), 50, 500), Ok(500));
        for bad in ["0", "501", "-1", "x", "", "1.0"] {
            let e = page_limit("limit", Some(bad), 50, 500).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("limit"), "{bad}");
            assert_eq!(e.message, "limit: must be an integer in 1..=500");
        }
    }
}
