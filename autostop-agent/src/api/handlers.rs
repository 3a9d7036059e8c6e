//! Request handlers of the status API: thin translations between HTTP and
//! [`Control`](super::Control), with problem-JSON errors.

use axum::{
    body::Bytes,
    extract::rejection::BytesRejection,
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use super::{Action, ApiState, ControlError};

/// The dashboard page (self-contained: no request leaves the agent).
static DASHBOARD: &str = include_str!("dashboard.html");
/// Its table, actions and live updates.
static DASHBOARD_JS: &str = include_str!("dashboard.js");
/// Its SVG charts.
static CHARTS_JS: &str = include_str!("charts.js");
/// Its styles.
static DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// A JSON problem body (RFC 9457 shape) with `status`.
pub(super) fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn control_error(error: ControlError) -> Response {
    match error {
        ControlError::UnknownService(_) => problem(StatusCode::NOT_FOUND, error.to_string()),
        ControlError::Unavailable(_) => problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// Whether the request may see the services: no token configured, or
/// `Authorization: Bearer <token>` with exactly the token.
pub(super) fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(token) = state.token.as_ref() else {
        return true;
    };
    let mut given = headers.get_all(header::AUTHORIZATION).iter();
    match (given.next(), given.next()) {
        (Some(value), None) => value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .is_some_and(|g| constant_time_eq(g, token.as_bytes())),
        _ => false,
    }
}

/// Checks the bearer token when one is configured (every route but the
/// dashboard's static files and `/healthz`, which then says only ok or not:
/// with a token, nothing about the services is shown to an anonymous
/// client); `Some` is the refusal to send back.
pub(super) fn refusal(state: &ApiState, headers: &HeaderMap) -> Option<Response> {
    if authorized(state, headers) {
        None
    } else {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "this agent needs Authorization: Bearer <token>",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Some(response)
    }
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) async fn dashboard() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(DASHBOARD))
}

pub(super) async fn dashboard_js() -> impl IntoResponse {
    script(DASHBOARD_JS)
}

pub(super) async fn charts_js() -> impl IntoResponse {
    script(CHARTS_JS)
}

pub(super) async fn dashboard_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD_CSS,
    )
}

fn script(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

/// 200 when healthy, else 503; the body lists every task, except to an
/// anonymous client of an agent with a token: `{"ok": true|false}` only
/// (task names carry service names).
pub(super) async fn healthz(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let health = state.control.health();
    let ok = health.ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if authorized(&state, &headers) {
        (status, Json(health)).into_response()
    } else {
        (status, Json(json!({ "ok": ok }))).into_response()
    }
}

pub(super) async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&state, &headers) {
        return denied;
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.control.metrics(),
    )
        .into_response()
}

pub(super) async fn list(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&state, &headers) {
        return denied;
    }
    Json(state.control.services()).into_response()
}

pub(super) async fn problems(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&state, &headers) {
        return denied;
    }
    Json(serde_json::json!({ "problems": state.control.problems() })).into_response()
}

pub(super) async fn show(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = refusal(&state, &headers) {
        return denied;
    }
    match state.control.service(&name) {
        Some(view) => Json(view).into_response(),
        None => control_error(ControlError::UnknownService(name)),
    }
}

pub(super) async fn act(
    State(state): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    crate::test_hooks::panic_point(crate::test_hooks::Site::Api);
    let action = match action.as_str() {
        "start" => Action::Start,
        "stop" => Action::Stop,
        "hold" => Action::Hold,
        "release" => Action::Release,
        other => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}: use start, stop, hold or release"),
            )
        }
    };
    if let Some(denied) = refusal(&state, &headers) {
        return denied;
    }
    match state.control.act(&name, action).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "service": name, "accepted": format!("{action:?}").to_lowercase() })),
        )
            .into_response(),
        Err(e) => control_error(e),
    }
}

pub(super) async fn set_idle_timeout(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(denied) = refusal(&state, &headers) {
        return denied;
    }
    // A body over the cap (sent chunked, so not refused up front).
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return problem(
                rejection.status(),
                format!("body: {}", rejection.body_text()),
            )
        }
    };
    if state.control.service(&name).is_none() {
        return control_error(ControlError::UnknownService(name));
    }
    let timeout = match parse_idle_timeout(&body) {
        Ok(timeout) => timeout,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, detail),
    };
    match state.control.set_idle_timeout(&name, timeout).await {
        Ok(()) => {
            Json(json!({ "service": name, "idle_timeout_s": timeout.as_secs() })).into_response()
        }
        Err(e) => control_error(e),
    }
}

/// Parses `{"idle_timeout":"10m"}`; the error names the field.
fn parse_idle_timeout(body: &[u8]) -> Result<std::time::Duration, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body: not valid JSON ({e})"))?;
    let object = value.as_object().ok_or("body: expected a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| k.as_str() != "idle_timeout") {
        return Err(format!(
            "{unknown}: unknown field (expected only idle_timeout)"
        ));
    }
    let text = object
        .get("idle_timeout")
        .ok_or("idle_timeout: missing field")?
        .as_str()
        .ok_or("idle_timeout: expected a duration string such as \"10m\"")?;
    let timeout = humantime::parse_duration(text)
        .map_err(|e| format!("idle_timeout: invalid duration {text:?} ({e})"))?;
    crate::config::check_timeout(timeout, text).map_err(|e| format!("idle_timeout: {e}"))
}

pub(super) async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such endpoint")
}
