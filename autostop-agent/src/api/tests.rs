//! API tests against a fake [`Control`], through the real router.

use std::{sync::Mutex, time::Duration};

use axum::{
    body::{to_bytes, Body},
    http::{Request, StatusCode},
};
use tower::ServiceExt as _;

use super::*;

/// What a fake's events stream gives a subscriber (after an id).
pub(super) type FakeFeed = Arc<dyn Fn(Option<u64>) -> crate::events::Feed + Send + Sync>;

/// A [`Control`] that records what it is asked to do.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) actions: Mutex<Vec<(String, Action)>>,
    pub(super) timeouts: Mutex<Vec<(String, Duration)>>,
    /// Its events stream; `None`: it has none (404).
    pub(super) feed: Option<FakeFeed>,
    /// Its health is bad (503).
    pub(super) unhealthy: bool,
}

#[async_trait::async_trait]
impl Control for Fake {
    fn services(&self) -> Vec<ServiceView> {
        vec![ServiceView {
            name: "web".into(),
            state: "stopped".into(),
            port: 8080,
            ..ServiceView::default()
        }]
    }
    fn service(&self, name: &str) -> Option<ServiceView> {
        self.services().into_iter().find(|s| s.name == name)
    }
    async fn act(&self, name: &str, action: Action) -> Result<(), ControlError> {
        self.service(name)
            .ok_or_else(|| ControlError::UnknownService(name.into()))?;
        self.actions
            .lock()
            .expect("lock")
            .push((name.into(), action));
        Ok(())
    }
    async fn set_idle_timeout(&self, name: &str, timeout: Duration) -> Result<(), ControlError> {
        self.timeouts
            .lock()
            .expect("lock")
            .push((name.into(), timeout));
        Ok(())
    }
    fn events(&self, after: Option<u64>) -> Option<crate::events::Feed> {
        self.feed.as_ref().map(|feed| feed(after))
    }
    fn health(&self) -> Health {
        Health {
            docker_reachable: !self.unhealthy,
            datapath_attached: true,
            tasks: [("api".to_owned(), "running".to_owned())].into(),
        }
    }
    fn metrics(&self) -> String {
        "# EOF\n".into()
    }
    fn history(&self) -> Option<HistoryView> {
        let mut memory = crate::state::ServiceMemory::default();
        memory.timeline.transitions.push(crate::state::Transition {
            at_ms: 1_000_000,
            state: crate::service::StateName::Starting,
            cause: Some("api".into()),
        });
        Some(HistoryView {
            now_ms: 2_000_000,
            window_start_ms: 2_000_000 - history::WINDOW_MS,
            days: history::days(2_000_000),
            host: HostMemoryView {
                total_bytes: 8,
                used_bytes: 3,
                saved_bytes: 2,
            },
            services: vec![history::service_history(
                "web",
                &memory,
                crate::service::StateName::Ready,
                2_000_000,
            )],
        })
    }
}

/// The router of a loopback listener, as the agent builds it.
pub(super) fn local_router(control: Arc<dyn Control>, token: Option<String>) -> Router {
    let listen: SocketAddr = "127.0.0.1:3456".parse().expect("addr");
    router(control, token, HostPolicy::new(listen, &[]))
}

/// `method uri` with `headers` and `body` through the router: status,
/// headers and body bytes (the one way every API test sends a request).
pub(super) async fn exchange(
    router: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, 1 << 20).await.expect("body");
    (parts.status, parts.headers, bytes.to_vec())
}

/// `method uri` from the loopback host, with the bearer token when given:
/// status and JSON body (null when not JSON).
pub(super) async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    body: &str,
    auth: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let bearer = auth.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("host", "127.0.0.1:3456")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    let (status, _, bytes) = exchange(router, method, uri, &headers, body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn lists_and_shows_services() {
    let router = local_router(Arc::new(Fake::default()), None);
    let (status, body) = call(&router, "GET", "/api/services", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["name"], "web");
    assert_eq!(body[0]["port"], 8080);
    let (status, body) = call(&router, "GET", "/api/services/web", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "stopped");
}

#[tokio::test]
async fn unknown_names_and_actions_get_404_problems() {
    let router = local_router(Arc::new(Fake::default()), None);
    let (status, body) = call(&router, "GET", "/api/services/nope", "", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    assert!(
        body["detail"].as_str().unwrap_or("").contains("nope"),
        "{body}"
    );
    let (status, _) = call(&router, "POST", "/api/services/nope/start", "", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&router, "POST", "/api/services/web/explode", "", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["detail"].as_str().unwrap_or("").contains("explode"),
        "{body}"
    );
}

#[tokio::test]
async fn actions_reach_the_control() {
    let fake = Arc::new(Fake::default());
    let router = local_router(fake.clone(), None);
    for (path, action) in [
        ("start", Action::Start),
        ("stop", Action::Stop),
        ("hold", Action::Hold),
        ("release", Action::Release),
    ] {
        let (status, _) = call(
            &router,
            "POST",
            &format!("/api/services/web/{path}"),
            "",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}");
        assert_eq!(
            fake.actions.lock().expect("lock").last(),
            Some(&("web".to_owned(), action))
        );
    }
}

#[tokio::test]
async fn idle_timeout_body_errors_name_the_field() {
    let fake = Arc::new(Fake::default());
    let router = local_router(fake.clone(), None);
    let put = |body: &'static str| {
        let router = router.clone();
        async move { call(&router, "PUT", "/api/services/web/idle-timeout", body, None).await }
    };
    let (status, _) = put(r#"{"idle_timeout":"10m"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fake.timeouts.lock().expect("lock")[0],
        ("web".to_owned(), Duration::from_secs(600))
    );
    for (body, field) in [
        (r#"{"idle_timeout":"ten minutes"}"#, "idle_timeout"),
        (r#"{"idle_timeout":600}"#, "idle_timeout"),
        (r#"{}"#, "idle_timeout"),
        (r#"{"idle_timeout":"10m","extra":1}"#, "extra"),
        ("not json", "body"),
        // Issue #25 item 2: answered 200, then every start panicked.
        (
            r#"{"idle_timeout":"18446744073709551615s"}"#,
            "idle_timeout",
        ),
        (r#"{"idle_timeout":"31days"}"#, "idle_timeout"),
    ] {
        let (status, problem) = put(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let detail = problem["detail"].as_str().unwrap_or("");
        assert!(detail.starts_with(field), "{body}: {detail}");
    }
}

#[tokio::test]
async fn a_token_guards_mutations_and_reads_but_not_health() {
    let fake = Arc::new(Fake::default());
    let router = local_router(fake.clone(), Some("s3cret".into()));
    let (status, _) = call(&router, "POST", "/api/services/web/start", "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &router,
        "POST",
        "/api/services/web/start",
        "",
        Some("wrong"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(fake.actions.lock().expect("lock").is_empty());
    let (status, _) = call(
        &router,
        "POST",
        "/api/services/web/start",
        "",
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Anonymous clients see nothing about the services.
    for path in [
        "/api/services",
        "/api/services/web",
        "/api/problems",
        "/api/events",
        "/api/history",
        "/metrics",
    ] {
        let (status, _) = call(&router, "GET", path, "", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _) = call(&router, "GET", path, "", Some("s3cret")).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in [
        "/healthz",
        "/",
        "/dashboard.js",
        "/charts.js",
        "/dashboard.css",
    ] {
        let (status, _) = call(&router, "GET", path, "", None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn history_shows_the_timeline_and_the_host() {
    let router = local_router(Arc::new(Fake::default()), None);
    let (status, body) = call(&router, "GET", "/api/history", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["host"]["used_bytes"], 3);
    assert_eq!(body["days"].as_array().map(Vec::len), Some(14));
    let web = &body["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["state_at_start"], "unknown");
    assert_eq!(web["transitions"][0]["state"], "starting");
    assert_eq!(web["transitions"][0]["cause"], "api");
    assert_eq!(web["transitions"][0]["at_ms"], 1_000_000);
}

#[tokio::test]
async fn the_dashboard_loads_nothing_from_elsewhere() {
    let router = local_router(Arc::new(Fake::default()), None);
    for path in ["/", "/dashboard.js", "/charts.js", "/dashboard.css"] {
        let response = router
            .clone()
            .oneshot(
                Request::get(path)
                    .header("host", "127.0.0.1:3456")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8_lossy(&bytes);
        // The SVG namespace is a name, never fetched.
        let urls: Vec<&str> = text
            .split(['"', '\'', '`', ' ', '('])
            .filter(|w| w.starts_with("http") && !w.contains("www.w3.org/2000/svg"))
            .collect();
        assert!(urls.is_empty(), "{path} names {urls:?}");
        for src in text.split("src=\"").skip(1) {
            assert!(
                src.starts_with('/'),
                "{path}: a script from elsewhere: {src:.40}"
            );
        }
    }
}

#[test]
fn health_fails_when_a_task_ended_or_panicked() {
    let health = |state: &str| Health {
        docker_reachable: true,
        datapath_attached: true,
        tasks: [
            ("api".to_owned(), "running".to_owned()),
            ("coldstart".to_owned(), state.to_owned()),
        ]
        .into(),
    };
    assert!(health("running").ok());
    assert!(health("stopped").ok());
    assert!(!health("ended").ok());
    assert!(!health("panicked").ok());
    let json = serde_json::to_value(health("ended")).expect("json");
    assert_eq!(json["tasks"]["coldstart"], "ended");
}
