//! What the router tells browsers and anonymous clients: the security
//! headers on every response (pages, scripts, JSON, refusals), a dashboard
//! with no inline script, style or handler (its CSP allows none), and a
//! `/healthz` that tells an anonymous client only ok or not when a token is
//! configured.

use std::sync::Arc;

use axum::{http::StatusCode, Router};

use super::headers::{CONTENT_SECURITY_POLICY, SECURITY_HEADERS};
use super::tests::{exchange, local_router, Fake};

/// `method path` with `headers`: the response's status, headers and body.
async fn send(
    router: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let (status, headers, body) = exchange(router, method, path, headers, "").await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

const HOST: (&str, &str) = ("host", "127.0.0.1:3456");

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let router = local_router(Arc::new(Fake::default()), Some("s3cret".into()));
    let auth = ("authorization", "Bearer s3cret");
    let cases = [
        ("GET", "/", vec![HOST], StatusCode::OK),
        ("GET", "/dashboard.js", vec![HOST], StatusCode::OK),
        ("GET", "/charts.js", vec![HOST], StatusCode::OK),
        ("GET", "/dashboard.css", vec![HOST], StatusCode::OK),
        ("GET", "/api/services", vec![HOST, auth], StatusCode::OK),
        ("GET", "/metrics", vec![HOST, auth], StatusCode::OK),
        ("GET", "/healthz", vec![HOST], StatusCode::OK),
        ("GET", "/api/services", vec![HOST], StatusCode::UNAUTHORIZED),
        ("GET", "/nowhere", vec![HOST], StatusCode::NOT_FOUND),
        (
            "GET",
            "/",
            vec![("host", "evil.example")],
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            "POST",
            "/api/services/web/stop",
            vec![HOST, auth, ("origin", "http://evil.example")],
            StatusCode::FORBIDDEN,
        ),
    ];
    for (method, path, headers, want) in cases {
        let (status, got, _) = send(&router, method, path, &headers).await;
        assert_eq!(status, want, "{method} {path}");
        for (name, value) in SECURITY_HEADERS {
            let values: Vec<_> = got.get_all(&name).iter().collect();
            assert_eq!(values, [value], "{method} {path} ({status}): {name}");
        }
    }
    for directive in [
        "frame-ancestors 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "default-src 'none'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
    }
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
}

#[tokio::test]
async fn the_dashboard_has_no_inline_script_style_or_handler() {
    let router = local_router(Arc::new(Fake::default()), None);
    let (_, headers, page) = send(&router, "GET", "/", &[HOST]).await;
    assert!(
        headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html")),
        "{headers:?}"
    );
    let lower = page.to_ascii_lowercase();
    // Every <script> has a src on this agent and an empty body.
    for script in lower.split("<script").skip(1) {
        assert!(
            script.starts_with(" src=\"/") && script.contains("></script>"),
            "an inline script: <script{script:.60}"
        );
        let body = script
            .split_once('>')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        assert!(body.starts_with("</script>"), "<script{script:.60}");
    }
    assert!(!lower.contains("<style"), "an inline <style>");
    assert!(!lower.contains(" style="), "a style attribute");
    // No on…= handler attribute, nor javascript: URL.
    let handler = lower
        .split(|c: char| c.is_whitespace())
        .find(|word| word.starts_with("on") && word.contains('='));
    assert_eq!(handler, None, "an inline handler");
    assert!(!lower.contains("javascript:"));
    // The styles come from /dashboard.css, served as CSS.
    assert!(lower.contains("<link rel=\"stylesheet\" href=\"/dashboard.css\">"));
    let (status, headers, css) = send(&router, "GET", "/dashboard.css", &[HOST]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert!(css.contains(".legend .swatch-asleep"), "{css:.200}");
    // The scripts do not write style attributes either.
    for path in ["/dashboard.js", "/charts.js"] {
        let (_, _, script) = send(&router, "GET", path, &[HOST]).await;
        for banned in ["setAttribute(\"style\"", ".style.", "innerHTML", "eval("] {
            assert!(!script.contains(banned), "{path} uses {banned}");
        }
    }
}

#[tokio::test]
async fn with_a_token_healthz_tells_anonymous_clients_only_ok_or_not() {
    for unhealthy in [false, true] {
        let fake = Fake {
            unhealthy,
            ..Fake::default()
        };
        let router = local_router(Arc::new(fake), Some("s3cret".into()));
        let want = if unhealthy {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
            let mut headers = vec![HOST];
            headers.extend(auth.map(|a| ("authorization", a)));
            let (status, _, body) = send(&router, "GET", "/healthz", &headers).await;
            assert_eq!(status, want, "{auth:?}");
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(
                json,
                serde_json::json!({ "ok": !unhealthy }),
                "{auth:?}: nothing but ok"
            );
        }
        let (status, _, body) = send(
            &router,
            "GET",
            "/healthz",
            &[HOST, ("authorization", "Bearer s3cret")],
        )
        .await;
        assert_eq!(status, want);
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(json["tasks"]["api"], "running", "details with the token");
    }
    // Without a token configured (loopback only), the details as before.
    let router = local_router(Arc::new(Fake::default()), None);
    let (_, _, body) = send(&router, "GET", "/healthz", &[HOST]).await;
    assert!(body.contains("\"tasks\""), "{body}");
}
