//! Security headers on every response of the status API, the dashboard's
//! page and scripts and every refusal alike: no page may frame it (its
//! buttons act with the saved token, so a framing page could trick a click:
//! `X-Frame-Options` and CSP `frame-ancestors`), it runs only its own
//! scripts and styles (no inline script or style, nothing from elsewhere),
//! no content sniffing, no referrer.

use axum::{
    http::{header, HeaderName, HeaderValue},
    response::Response,
};

/// The dashboard's policy: its own scripts, styles and fetches only, no
/// inline script or style, no frame, form or base URL.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The headers, as sent.
pub const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// The middleware: sets the headers on `response`.
pub(super) async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
