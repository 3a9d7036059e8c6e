//! Dynamic mode's side of a cold start: what the agent says to a client whose
//! connection the kernel steered to it while the service sleeps.
//!
//! - [`request`]: reads the request head (timeout and size cap, every byte
//!   kept for replay) and classifies it: the wait page's status poll, a
//!   browser navigation, or anything else (held, then forwarded).
//! - [`theme`]: the themes (built-ins embedded from `themes/*.html`, user
//!   themes from the themes directory) and rendering them.
//! - [`template`]: the `{{ variable }}` language and its escaping.
//! - [`response`]: the complete HTTP/1.1 responses (wait page, status JSON,
//!   502/504 errors, 400).
//!
//! A typical connection: `read_head` → `classify` → `StatusPoll`: write
//! `status_json`; `Navigation`: write `wait_page(themes.render(..))`;
//! `Other`: hold `head.raw` and replay it to the app when ready (or write
//! `error_reply` if the start fails). On `HeadError::Malformed` write
//! `bad_request`.

pub mod request;
pub mod response;
pub mod template;
pub mod theme;

#[cfg(test)]
mod tests_request;
#[cfg(test)]
mod tests_theme;

pub use request::{
    classify, looks_like_http, read_head, Head, HeadError, Kind, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEAD_BYTES, STATUS_PATH,
};
pub use response::{bad_request, error_reply, status_json, wait_page, ErrorStatus, StatusBody};
pub use template::{escape_html, TemplateError};
pub use theme::{PageState, PageVars, ThemeError, ThemeProblem, ThemeSet, MAX_THEME_BYTES};
