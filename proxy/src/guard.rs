//! What a request must satisfy before the proxy looks at its tag: origin-form target, our own
//! `Host`, an allowed method, unambiguous framing and a path without traversal.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request};

use crate::error::ProxyError;

/// Refuses requests that could make the proxy talk to anything but a configured backend, or
/// that a backend could frame differently than we do.
pub(crate) fn check_request<B>(
    req: &Request<B>,
    allowed_hosts: &[String],
) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed(req.method().clone()));
    }
    // hyper parses `GET http://evil/ HTTP/1.1` into a URI with scheme and authority; CONNECT's
    // authority-form and `OPTIONS *` have no path to route either.
    let uri = req.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Err(ProxyError::AbsoluteForm);
    }
    check_framing(req.headers())?;
    check_host(req.headers(), allowed_hosts)
}

/// Content-Length together with Transfer-Encoding is the classic request-smuggling shape.
/// hyper refuses differing lengths and non-chunked encodings and drops the length when both
/// are sent (`framing` catches that on the raw bytes); this is the header-level backstop.
fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    let te = headers.get_all(TRANSFER_ENCODING).iter().count();
    let cl = headers.get_all(CONTENT_LENGTH).iter().count();
    if te > 0 && cl > 0 {
        return Err(ProxyError::AmbiguousFraming(
            "both content-length and transfer-encoding",
        ));
    }
    if te > 1 {
        return Err(ProxyError::AmbiguousFraming("repeated transfer-encoding"));
    }
    if cl > 1 {
        return Err(ProxyError::AmbiguousFraming("repeated content-length"));
    }
    if let Some(te) = headers.get(TRANSFER_ENCODING) {
        if !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::AmbiguousFraming(
                "transfer-encoding other than chunked",
            ));
        }
    }
    Ok(())
}

fn check_host(headers: &HeaderMap, allowed_hosts: &[String]) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(ProxyError::ForeignHost);
    };
    let host = host.to_str().map_err(|_| ProxyError::ForeignHost)?;
    let authority: http::uri::Authority = host.parse().map_err(|_| ProxyError::ForeignHost)?;
    if authority.as_str().contains('@') {
        return Err(ProxyError::ForeignHost);
    }
    let name = authority.host().trim_end_matches('.');
    if allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        Ok(())
    } else {
        Err(ProxyError::ForeignHost)
    }
}

/// Checks a raw request path for traversal and encoding tricks and returns it decoded.
/// Decoding may not change the path's segments: no encoded `/`, `\`, `.`-segments, NUL or
/// double encoding.
pub(crate) fn check_path(raw: &str) -> Result<String, ProxyError> {
    if !raw.starts_with('/') {
        return Err(ProxyError::BadPath("must start with '/'"));
    }
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(ProxyError::BadPath("bad percent-encoding"))?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(ProxyError::BadPath("bad percent-encoding"));
            }
            if hex.eq_ignore_ascii_case(b"2f") || hex.eq_ignore_ascii_case(b"5c") {
                return Err(ProxyError::BadPath("encoded slash"));
            }
        }
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ProxyError::BadPath("not UTF-8 once decoded"))?;
    if decoded.contains('%') {
        return Err(ProxyError::BadPath("double percent-encoding"));
    }
    if decoded.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(ProxyError::BadPath("backslash or control character"));
    }
    for segment in decoded.split('/') {
        // `..;/` is read as `..` by some servers (matrix parameters).
        let name = segment.split(';').next().unwrap_or_default();
        if name == "." || name == ".." {
            return Err(ProxyError::BadPath("dot segment"));
        }
    }
    Ok(decoded.into_owned())
}

/// Segment-wise prefix match: `/v1/rides` allows `/v1/rides` and `/v1/rides/7`, not `/v1/ridesx`.
pub(crate) fn prefix_allowed(decoded: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        let p = p.trim_end_matches('/');
        match decoded.strip_prefix(p) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        for bad in [
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2e/admin",
            "/v1/.%2e/admin",
            "/v1/..%2fadmin",
            "/v1/%2fadmin",
            "/v1/..%5cadmin",
            "/v1/%252e%252e/admin",
            "/v1/..;/admin",
            "/v1/./x",
            "/v1/%00",
            "/v1/%zz",
            "/v1/%",
            "/v1/%ff",
            "v1",
        ] {
            assert!(check_path(bad).is_err(), "{bad} passed");
        }
        assert_eq!(check_path("/v1/rides/%41b").unwrap(), "/v1/rides/Ab");
        assert_eq!(check_path("/v1/a..b/c.d").unwrap(), "/v1/a..b/c.d");
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let p = vec!["/v1/rides".to_owned(), "/v2/".to_owned()];
        assert!(prefix_allowed("/v1/rides", &p));
        assert!(prefix_allowed("/v1/rides/7", &p));
        assert!(prefix_allowed("/v2/x", &p));
        assert!(!prefix_allowed("/v1/ridesx", &p));
        assert!(!prefix_allowed("/v1", &p));
        assert!(prefix_allowed("/anything", &["/".to_owned()]));
    }

    #[test]
    fn host_must_be_ours() {
        let allowed = vec!["proxy.internal".to_owned()];
        let req = |host: &str| Request::get("/x").header(HOST, host).body(()).unwrap();
        assert!(check_request(&req("proxy.internal:8090"), &allowed).is_ok());
        assert!(check_request(&req("PROXY.internal."), &allowed).is_ok());
        assert!(check_request(&req("evil.example"), &allowed).is_err());
        assert!(check_request(&req("proxy.internal@evil.example"), &allowed).is_err());
        let two = Request::get("/x")
            .header(HOST, "proxy.internal")
            .header(HOST, "evil.example")
            .body(())
            .unwrap();
        assert!(check_request(&two, &allowed).is_err());
        let none = Request::get("/x").body(()).unwrap();
        assert!(check_request(&none, &allowed).is_err());
    }
}
