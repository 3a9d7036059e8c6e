//! Dynamic mode's side of a cold start: what the agent says to a client whose
//! connection the kernel steered to it while the service sleeps.
//!
//! - [`opening`]: what the first bytes say about the protocol (HTTP/1,
//!   HTTP/2 preface, TLS, other, not yet known); only HTTP/1 clients are
//!   ever answered by the agent, every other one is held and replayed.
//! - [`request`]: reads the request head (timeout and size cap, every byte
//!   kept for replay) and classifies it: the wait page's status poll or
//!   script, a browser navigation, or anything else (held, then forwarded).
//! - [`theme`]: the themes (built-ins embedded from `themes/*.html`, user
//!   themes from the themes directory) and rendering them.
//! - [`template`]: the `{{ variable }}` language and its escaping.
//! - [`response`]: the complete HTTP/1.1 responses (wait page, its script
//!   `themes/wait.js`, status JSON, 502/503/504 errors) with their fixed
//!   public texts.
//!
//! A typical connection: `opening` says `Http1` → `read_head_from` →
//! `classify` → `StatusPoll`: write `status_json`; `WaitScript`: write
//! `wait_script`; `Navigation`: write `wait_page(themes.render(..))`; `Other`: hold `head.raw` and replay it
//! to the app when ready (or write `error_reply` if the start fails). A
//! head that does not parse is held and replayed too: the app, not the
//! agent, answers what it makes of it.
//!
//! Anonymous visitors see the service's configured name (the label the
//! administrator gave the site they asked for) and the fixed texts of
//! [`PUBLIC_FAILURE`] / [`PUBLIC_TIMEOUT`], never the cause of a failure.
//!
//! Every byte a client sends arrives here, and themes are files an
//! operator drops in: no string slicing, indexing or unchecked arithmetic
//! (denied below; tests may panic, it is their failure).

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

pub mod opening;
pub mod request;
pub mod response;
pub mod template;
pub mod theme;

#[cfg(test)]
mod tests_progress;
#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_request;
#[cfg(test)]
mod tests_theme;

pub use opening::{eof_is_hang_up, looks_like_http, opening, Opening};
pub use request::{
    classify, read_head, read_head_from, Head, HeadError, Kind, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEAD_BYTES, STATUS_PATH, WAIT_SCRIPT_PATH,
};
pub use response::{
    error_reply, status_json, wait_page, wait_script, ErrorStatus, StatusBody, PUBLIC_FAILURE,
    PUBLIC_TIMEOUT, WAIT_SCRIPT,
};
pub use template::{escape_html, TemplateError, VARIABLES};
pub use theme::{PageState, PageVars, ThemeError, ThemeProblem, ThemeSet, MAX_THEME_BYTES};
