//! Property tests of what the API reads from clients: the bearer token
//! (only the exact `Bearer <token>` passes), every request head the guard
//! and handlers read (arbitrary bytes never panic and never get a 5xx),
//! the idle-timeout body (arbitrary JSON and bytes get a 4xx naming the
//! key), and `Last-Event-ID`. Default config: `PROPTEST_CASES` sets the
//! number of cases; failures are kept in `proptest-regressions/`.

use std::{future::Future, sync::Arc};

use axum::{
    body::{to_bytes, Body},
    http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode},
};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;

use super::{
    handlers::authorized,
    sse::last_event_id,
    tests::{local_router, Fake},
    ApiState,
};

const TOKEN: &str = "s3cret";

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
}

fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// Header bytes: anything, printable text, and non-ASCII text.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        "\\PC{0,12}".prop_map(String::into_bytes),
    ]
}

/// What a client may put in `Authorization` for `token`: the exact value,
/// near misses of it, and anything.
fn authorization(token: String) -> impl Strategy<Value = Vec<u8>> {
    let exact = format!("Bearer {token}").into_bytes();
    let near = (any::<prop::sample::Index>(), any::<u8>(), 0..3_u8).prop_map({
        let exact = exact.clone();
        move |(at, byte, how)| {
            let mut near = exact.clone();
            let i = at.index(near.len());
            match how {
                0 => near[i] = byte,
                1 => near.insert(i, byte),
                _ => {
                    near.remove(i);
                }
            }
            near
        }
    });
    prop_oneof![
        Just(exact),
        near,
        Just(format!("bearer {token}").into_bytes()),
        Just(format!("Bearer  {token}").into_bytes()),
        Just(format!("Basic {token}").into_bytes()),
        Just(token.into_bytes()),
        header_bytes(),
    ]
}

proptest! {
    #[test]
    fn prop_only_the_exact_bearer_token_is_authorized(
        (token, given) in "[!-~]{1,24}".prop_flat_map(|t| (Just(t.clone()), authorization(t))),
        twice in any::<bool>(),
    ) {
        let state = ApiState {
            control: Arc::new(Fake::default()),
            token: Some(Arc::from(token.as_str())),
        };
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(&given).ok();
        if let Some(value) = &value {
            headers.append(header::AUTHORIZATION, value.clone());
            if twice {
                headers.append(header::AUTHORIZATION, value.clone());
            }
        }
        let exact = format!("Bearer {token}").into_bytes();
        let passes = value.is_some() && !twice && given == exact;
        prop_assert_eq!(authorized(&state, &headers), passes);
    }
}

/// A method, a path and what the guard and handlers read from a head.
#[derive(Debug, Clone)]
struct Head {
    method: String,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
}

fn head() -> impl Strategy<Value = Head> {
    let method = prop_oneof![
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"
        ])
        .prop_map(str::to_owned),
        "[A-Z]{1,8}",
    ];
    let path = prop_oneof![
        prop::sample::select(vec![
            "/",
            "/dashboard.js",
            "/dashboard.css",
            "/charts.js",
            "/healthz",
            "/metrics",
            "/api/services",
            "/api/services/web",
            "/api/services/web/start",
            "/api/services/web/idle-timeout",
            "/api/problems",
            "/api/events",
            "/api/history",
        ])
        .prop_map(str::to_owned),
        "/api/services/[a-zA-Z0-9%._~!$&'()*+,;=:@-]{0,16}(/[a-z%-]{0,14})?",
        "/[a-zA-Z0-9%._~-]{0,24}",
    ];
    let names = prop::sample::select(vec![
        "host",
        "origin",
        "sec-fetch-site",
        "content-type",
        "content-length",
        "authorization",
        "last-event-id",
    ]);
    let value = prop_oneof![
        header_bytes(),
        prop::sample::select(vec![
            "127.0.0.1:3456",
            "localhost",
            "[::1]:1",
            "http://127.0.0.1:3456",
            "application/json",
            "text/plain",
            "cross-site",
            "Bearer s3cret",
            "18446744073709551616",
            "42",
        ])
        .prop_map(|v| v.as_bytes().to_vec()),
    ];
    (
        method,
        path,
        prop::collection::vec((names, value), 0..8),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(method, path, headers, body)| Head {
            method,
            path,
            headers,
            body,
        })
}

/// Sends `head` through the router of an agent with a token.
fn answer(head: &Head) -> Option<(StatusCode, Value)> {
    let mut request = Request::builder()
        .method(head.method.as_str())
        .uri(head.path.as_str());
    for (name, value) in &head.headers {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request = request.header(HeaderName::from_static(name), value);
        }
    }
    // Heads hyper itself would refuse never reach the router.
    let request = request.body(Body::from(head.body.clone())).ok()?;
    let router = local_router(Arc::new(Fake::default()), Some(TOKEN.into()));
    block_on(async move {
        let response = router.oneshot(request).await.ok()?;
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.ok()?;
        Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    })
}

proptest! {
    #[test]
    fn prop_no_request_head_panics_or_gets_a_5xx(head in head()) {
        let Some((status, _)) = answer(&head) else {
            return Ok(());
        };
        prop_assert!(!status.is_server_error(), "{status} for {head:?}");
        let public = ["/", "/dashboard.js", "/dashboard.css", "/charts.js", "/healthz"];
        if status.is_success() && !public.contains(&head.path.as_str()) {
            let bearer = head
                .headers
                .iter()
                .filter(|(n, _)| *n == "authorization")
                .map(|(_, v)| v.as_slice())
                .collect::<Vec<_>>();
            prop_assert_eq!(bearer, [b"Bearer s3cret".as_slice()], "{:?}", head);
        }
    }
}

/// Text humantime may read, sizes from tiny to overflowing.
fn duration_text() -> impl Strategy<Value = String> {
    "[0-9]{1,22} ?(ns|us|ms|s|sec|m|min|h|d|w|months|y|)( [0-9]{1,3}[a-z]{0,3})?"
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        duration_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let key = prop_oneof![Just("idle_timeout".to_owned()), "\\PC{0,8}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies for `PUT …/idle-timeout`: bytes, JSON of any shape, and objects
/// close to the expected one.
fn idle_timeout_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..96),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| serde_json::json!({ "idle_timeout": v })
            .to_string()
            .into_bytes()),
        duration_text().prop_map(|t| serde_json::json!({ "idle_timeout": t })
            .to_string()
            .into_bytes()),
    ]
}

proptest! {
    #[test]
    fn prop_idle_timeout_bodies_get_a_4xx_naming_the_key_never_a_panic_or_5xx(
        body in idle_timeout_body(),
    ) {
        let head = Head {
            method: "PUT".into(),
            path: "/api/services/web/idle-timeout".into(),
            headers: vec![
                ("host", b"127.0.0.1:3456".to_vec()),
                ("authorization", b"Bearer s3cret".to_vec()),
                ("content-type", b"application/json".to_vec()),
            ],
            body: body.clone(),
        };
        let (status, problem) = answer(&head).expect("a well-formed request");
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if status == StatusCode::OK {
            let object = parsed.as_ref().and_then(Value::as_object);
            prop_assert!(
                object.is_some_and(|o| o.len() == 1 && o.get("idle_timeout").is_some_and(Value::is_string)),
                "200 for {}", String::from_utf8_lossy(&body)
            );
            return Ok(());
        }
        prop_assert!(status.is_client_error(), "{status} for {}", String::from_utf8_lossy(&body));
        let detail = problem["detail"].as_str().unwrap_or_default();
        let mut named = vec!["body".to_owned(), "idle_timeout".to_owned()];
        if let Some(object) = parsed.as_ref().and_then(Value::as_object) {
            named.extend(object.keys().cloned());
        }
        prop_assert!(
            named.iter().any(|key| detail.starts_with(&format!("{key}: "))),
            "{detail:?} names none of {named:?}"
        );
    }
}

proptest! {
    #[test]
    fn prop_last_event_id_is_an_event_number_or_an_error_naming_the_header(
        value in header_bytes(),
        id in any::<u64>(),
        pad in "[ \t]{0,3}",
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            let trimmed = value_text(&value);
            headers.insert("last-event-id", value);
            match last_event_id(&headers) {
                Ok(None) => prop_assert!(trimmed.is_empty()),
                Ok(Some(n)) => prop_assert!(
                    trimmed.bytes().all(|b| b.is_ascii_digit()) && trimmed.parse::<u64>() == Ok(n),
                    "{trimmed:?} read as {n}"
                ),
                Err(e) => {
                    prop_assert!(e.starts_with("Last-Event-ID: "), "{e}");
                    prop_assert!(
                        !trimmed.bytes().all(|b| b.is_ascii_digit()) || trimmed.parse::<u64>().is_err(),
                        "{trimmed:?} refused: {e}"
                    );
                }
            }
        }
        let mut headers = HeaderMap::new();
        let text = format!("{pad}{id}{pad}");
        headers.insert("last-event-id", HeaderValue::from_str(&text).expect("ASCII"));
        prop_assert_eq!(last_event_id(&headers), Ok(Some(id)));
        headers.append("last-event-id", HeaderValue::from_static("1"));
        prop_assert!(last_event_id(&headers).is_err_and(|e| e.starts_with("Last-Event-ID: ")));
    }
}

/// A header value's bytes without surrounding blanks, lossily as text.
fn value_text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes().trim_ascii()).into_owned()
}
