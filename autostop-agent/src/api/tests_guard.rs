//! The request checks of [`super::guard`] through the real router (tower
//! `oneshot`): DNS rebinding (foreign Host → 421), cross-site mutations
//! (→ 403, nothing reaches the control), and what the dashboard, the CLI
//! and a reverse proxy send (→ accepted).

use std::sync::Arc;

use axum::{http::StatusCode, Router};

use super::tests::{exchange, local_router, Fake};
use super::{router, Action, HostPolicy};
use crate::config::ApiHost;

/// Sends `method path` with `headers` (and `body`); status and JSON body.
async fn send(
    router: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let (status, _, bytes) = exchange(router, method, path, headers, body).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

const OWN: (&str, &str) = ("host", "127.0.0.1:3456");

#[tokio::test]
async fn cross_site_form_posts_are_refused_and_change_nothing() {
    let fake = Arc::new(Fake::default());
    let router = local_router(fake.clone(), None);
    let form = ("content-type", "application/x-www-form-urlencoded");
    let cases: &[(&[(&str, &str)], &str)] = &[
        // What an HTML form on evil.example posts.
        (
            &[
                OWN,
                ("origin", "http://evil.example"),
                form,
                ("sec-fetch-site", "cross-site"),
            ],
            "Sec-Fetch-Site",
        ),
        (&[OWN, ("origin", "http://evil.example"), form], "Origin"),
        // A no-cors fetch with a JSON-looking body but a simple type.
        (
            &[
                OWN,
                ("origin", "http://evil.example"),
                ("content-type", "text/plain"),
            ],
            "Origin",
        ),
        (&[OWN, ("sec-fetch-site", "Cross-Site")], "Sec-Fetch-Site"),
        // Same host, other port: another local web app.
        (&[OWN, ("origin", "http://127.0.0.1:8080")], "Origin"),
        (&[OWN, ("origin", "null")], "Origin"),
        (&[OWN, ("origin", "http://127.0.0.1:3456/x")], "Origin"),
        // Simple content types even without an Origin.
        (&[OWN, form], "Content-Type"),
        (
            &[OWN, ("content-type", "Text/Plain; charset=utf-8")],
            "Content-Type",
        ),
        (
            &[OWN, ("content-type", "multipart/form-data; boundary=x")],
            "Content-Type",
        ),
    ];
    for (headers, reason) in cases {
        let (status, body) = send(&router, "POST", "/api/services/web/hold", headers, "a=b").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(reason), "{headers:?}: {detail}");
    }
    let put = &[
        OWN,
        ("origin", "http://evil.example"),
        ("content-type", "application/json"),
    ];
    let (status, _) = send(
        &router,
        "PUT",
        "/api/services/web/idle-timeout",
        put,
        r#"{"idle_timeout":"10m"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(fake.actions.lock().expect("lock").is_empty());
    assert!(fake.timeouts.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_foreign_host_gets_421_on_every_route() {
    let fake = Arc::new(Fake::default());
    let router = local_router(fake.clone(), None);
    let rebound = ("host", "evil.example:3456");
    for (method, path) in [
        ("GET", "/api/services"),
        ("GET", "/api/services/web"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/"),
        ("GET", "/nope"),
        ("POST", "/api/services/web/start"),
    ] {
        let (status, body) = send(&router, method, path, &[rebound], "").await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{method} {path}");
        assert_eq!(body["status"], 421, "{method} {path}: {body}");
        assert!(body["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Host"));
    }
    // A LAN address is not a loopback name either; nor an absolute-form
    // target naming another host.
    let (status, _) = send(
        &router,
        "GET",
        "/api/services",
        &[("host", "192.168.1.5:3456")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    let (status, _) = send(
        &router,
        "GET",
        "http://evil.example/api/services",
        &[OWN],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    for bad in ["", "a b", "user@127.0.0.1", "127.0.0.1:99999"] {
        let (status, _) = send(&router, "GET", "/api/services", &[("host", bad)], "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "Host {bad:?}");
    }
    let (status, _) = send(&router, "GET", "/api/services", &[], "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no Host");
    assert!(fake.actions.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn loopback_names_with_any_port_are_served() {
    let router = local_router(Arc::new(Fake::default()), None);
    for host in [
        "127.0.0.1:3456",
        "localhost:3456",
        "LOCALHOST",
        "localhost.",
        "[::1]:3456",
        "127.0.0.2",
    ] {
        let (status, _) = send(&router, "GET", "/api/services", &[("host", host)], "").await;
        assert_eq!(status, StatusCode::OK, "Host {host:?}");
    }
}

#[tokio::test]
async fn the_dashboard_and_the_cli_requests_pass() {
    let fake = Arc::new(Fake::default());
    let router = local_router(fake.clone(), None);
    // The dashboard's fetch: same origin, no body.
    let dashboard = [
        ("host", "localhost:3456"),
        ("origin", "http://localhost:3456"),
        ("sec-fetch-site", "same-origin"),
    ];
    let (status, body) = send(&router, "POST", "/api/services/web/hold", &dashboard, "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // The CLI (client.rs): loopback Host, JSON content type, no Origin.
    let cli = [
        OWN,
        ("content-type", "application/json"),
        ("content-length", "0"),
    ];
    let (status, body) = send(&router, "POST", "/api/services/web/start", &cli, "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let json = r#"{"idle_timeout":"10m"}"#;
    let len = json.len().to_string();
    let cli_put = [
        OWN,
        ("content-type", "application/json"),
        ("content-length", &len),
    ];
    let (status, body) = send(
        &router,
        "PUT",
        "/api/services/web/idle-timeout",
        &cli_put,
        json,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A same-origin JSON fetch, default port.
    let same = [
        ("host", "localhost"),
        ("origin", "http://localhost"),
        ("content-type", "application/json; charset=utf-8"),
    ];
    let (status, _) = send(&router, "POST", "/api/services/web/release", &same, "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        *fake.actions.lock().expect("lock"),
        vec![
            ("web".to_owned(), Action::Hold),
            ("web".to_owned(), Action::Start),
            ("web".to_owned(), Action::Release),
        ]
    );
}

#[tokio::test]
async fn api_hosts_and_a_public_listener_widen_the_names() {
    let fake = Arc::new(Fake::default());
    let hosts = [ApiHost::parse_entry("status.example.lan").expect("name")];
    let local = router(
        fake.clone(),
        None,
        HostPolicy::new("127.0.0.1:3456".parse().expect("addr"), &hosts),
    );
    let (status, _) = send(
        &local,
        "GET",
        "/",
        &[("host", "Status.Example.Lan:443")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Behind a reverse proxy that keeps its own Host: the listed name's
    // Origin is accepted.
    let proxied = [
        OWN,
        ("origin", "https://status.example.lan"),
        ("sec-fetch-site", "same-origin"),
    ];
    let (status, _) = send(&local, "POST", "/api/services/web/stop", &proxied, "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = send(&local, "GET", "/", &[("host", "other.example.lan")], "").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);

    let public = router(
        fake.clone(),
        Some("t".into()),
        HostPolicy::new("0.0.0.0:3456".parse().expect("addr"), &[]),
    );
    for host in ["192.168.1.5:3456", "[fd00::1]:3456", "localhost:3456"] {
        // Past the Host check; the token then guards the services' data.
        let (status, _) = send(&public, "GET", "/healthz", &[("host", host)], "").await;
        assert_eq!(status, StatusCode::OK, "Host {host:?}");
        let (status, _) = send(&public, "GET", "/api/services", &[("host", host)], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "Host {host:?}");
    }
    let (status, _) = send(
        &public,
        "GET",
        "/api/services",
        &[("host", "nas.lan:3456")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // The token still guards mutations behind the checks.
    let lan = [
        ("host", "192.168.1.5:3456"),
        ("origin", "http://192.168.1.5:3456"),
    ];
    let (status, _) = send(&public, "POST", "/api/services/web/start", &lan, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn declared_bodies_over_the_cap_get_413() {
    let router = local_router(Arc::new(Fake::default()), None);
    let big = (super::MAX_BODY_BYTES + 1).to_string();
    let headers = [
        OWN,
        ("content-type", "application/json"),
        ("content-length", big.as_str()),
    ];
    let (status, body) = send(
        &router,
        "PUT",
        "/api/services/web/idle-timeout",
        &headers,
        &"x".repeat(super::MAX_BODY_BYTES + 1),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Content-Length"));
    // No length announced (chunked): cut while read, still a JSON problem.
    let headers = [OWN, ("content-type", "application/json")];
    let (status, body) = send(
        &router,
        "PUT",
        "/api/services/web/idle-timeout",
        &headers,
        &"x".repeat(super::MAX_BODY_BYTES + 1),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("body"),
        "{body}"
    );
}
