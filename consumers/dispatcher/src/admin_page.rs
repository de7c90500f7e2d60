//! The admin web page (`GET /admin`): HTML, script and stylesheet built into the binary.
//!
//! The page itself needs no token (it holds no data); every call it makes goes to the token-
//! protected `/admin/api`. Nothing is loaded from outside the dispatcher, which the
//! Content-Security-Policy enforces in the browser.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("admin_page/index.html");
const APP_JS: &str = include_str!("admin_page/app.js");
const STYLE_CSS: &str = include_str!("admin_page/style.css");

/// Only the dispatcher itself: no CDN, no inline script, no framing (the page holds a token).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /admin`, `/admin/assets/app.js`, `/admin/assets/style.css`, whatever the router's state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/assets/app.js", get(app_js))
        .route("/admin/assets/style.css", get(style_css))
}

/// Assets are tied to the binary: revalidate on every load so an upgrade is seen at once.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        asset("text/html; charset=utf-8", INDEX_HTML),
    )
}

async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app: Router = routes::<()>();
        switchyard_runtime::shutdown::spawn_detached("admin-page-test", async move {
            axum::serve(listener, app).await
        });
        format!("http://{addr}")
    }

    async fn get_ok(base: &str, path: &str) -> (String, reqwest::header::HeaderMap) {
        let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let headers = resp.headers().clone();
        (resp.text().await.unwrap(), headers)
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_without_a_token() {
        let base = serve().await;
        for (path, ty, body) in [
            ("/admin", "text/html; charset=utf-8", INDEX_HTML),
            ("/admin/", "text/html; charset=utf-8", INDEX_HTML),
            (
                "/admin/assets/app.js",
                "text/javascript; charset=utf-8",
                APP_JS,
            ),
            (
                "/admin/assets/style.css",
                "text/css; charset=utf-8",
                STYLE_CSS,
            ),
        ] {
            let (text, headers) = get_ok(&base, path).await;
            assert_eq!(headers[header::CONTENT_TYPE], ty, "{path}");
            assert_eq!(text, body, "{path}");
        }
        let (_, headers) = get_ok(&base, "/admin").await;
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let missing = reqwest::get(format!("{base}/admin/assets/other.js"))
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404);
    }

    #[test]
    fn the_page_references_only_served_assets_and_nothing_external() {
        for (name, text) in [("html", INDEX_HTML), ("js", APP_JS), ("css", STYLE_CSS)] {
            for needle in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(needle), "{name} mentions {needle}");
            }
        }
        for src in INDEX_HTML
            .split(['"', '\''])
            .filter(|s| s.starts_with("/admin"))
        {
            assert!(
                matches!(src, "/admin/assets/app.js" | "/admin/assets/style.css"),
                "unknown asset {src}"
            );
        }
        // Inline script would be blocked by the CSP.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains(" onclick="));
    }

    #[test]
    fn every_element_the_script_looks_up_exists() {
        let ids: Vec<&str> = APP_JS
            .split("$('")
            .skip(1)
            .filter_map(|s| s.split('\'').next())
            .collect();
        assert!(ids.len() > 10, "{ids:?}");
        for id in ids {
            assert!(
                INDEX_HTML.contains(&format!("id=\"{id}\"")),
                "app.js uses #{id}, index.html has none"
            );
        }
    }
}
