//! Reading and classifying the head of an HTTP/1 request on a connection the
//! kernel steered to the agent while its service sleeps.
//!
//! [`read_head`] reads until the blank line that ends the head, under one
//! total deadline (so a slowloris client cannot pin a task forever) and a
//! size cap, and keeps every byte it read so a held connection can be
//! replayed to the app byte for byte once it is ready. [`classify`] decides
//! whether the request is the wait page's own status poll or script, a
//! browser navigation (gets a wait page) or anything else (held and
//! forwarded).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Default cap on the size of a request head.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Default total time a client gets to send its whole head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The path the wait pages poll for the start status.
pub const STATUS_PATH: &str = "/.autostop/status";

/// The path of the wait pages' script (polls [`STATUS_PATH`], reloads when
/// ready), which the agent serves itself.
pub const WAIT_SCRIPT_PATH: &str = "/.autostop/wait.js";

/// Most headers accepted in one head.
const MAX_HEADERS: usize = 100;

/// Why no request head could be read. Every variant that can carry bytes
/// keeps those already read, so the caller may still replay them (for
/// example to a non-HTTP app once it is up).
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The whole head did not arrive within the header timeout.
    #[error("request head not complete within the header timeout ({} bytes read)", .raw.len())]
    Timeout {
        /// Bytes read before the deadline.
        raw: Vec<u8>,
    },
    /// The head grew past the size limit without ending.
    #[error("request head larger than {limit} bytes")]
    TooLarge {
        /// The limit that was hit.
        limit: usize,
        /// Bytes read (exactly `limit`).
        raw: Vec<u8>,
    },
    /// The bytes are not an HTTP/1 request head.
    #[error("malformed request head: {reason}")]
    Malformed {
        /// What the parser objected to.
        reason: String,
        /// Bytes read so far.
        raw: Vec<u8>,
    },
    /// The peer closed (or half-closed) before the head was complete.
    #[error("connection closed after {} bytes, before the request head was complete", .raw.len())]
    Closed {
        /// Bytes read before the end of stream.
        raw: Vec<u8>,
    },
    /// Reading the socket failed.
    #[error("reading request head: {0}")]
    Io(#[from] std::io::Error),
}

impl HeadError {
    /// The bytes read before the failure (empty for I/O errors).
    pub fn raw(&self) -> &[u8] {
        match self {
            HeadError::Timeout { raw }
            | HeadError::TooLarge { raw, .. }
            | HeadError::Malformed { raw, .. }
            | HeadError::Closed { raw } => raw,
            HeadError::Io(_) => &[],
        }
    }

    /// The bytes read before the failure, by value (empty for I/O errors).
    pub fn into_raw(self) -> Vec<u8> {
        match self {
            HeadError::Timeout { raw }
            | HeadError::TooLarge { raw, .. }
            | HeadError::Malformed { raw, .. }
            | HeadError::Closed { raw } => raw,
            HeadError::Io(_) => Vec::new(),
        }
    }
}

/// A parsed request head plus everything read from the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Every byte read, in order: the head and any body bytes that arrived
    /// with it. Replaying exactly this to the app reproduces the request.
    pub raw: Vec<u8>,
    /// Length of the head within `raw` (up to and including the blank line).
    pub head_len: usize,
    /// Request method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Request target as sent (path and query).
    pub path: String,
    /// HTTP minor version (0 or 1).
    pub minor_version: u8,
    /// Headers in order, names as sent; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Body bytes that arrived together with the head.
    pub fn body_prefix(&self) -> &[u8] {
        self.raw.get(self.head_len..).unwrap_or_default()
    }

    /// The request path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or_default()
    }
}

/// What the agent should do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /.autostop/status`: answer with the status JSON.
    StatusPoll,
    /// `GET` (or `HEAD`) `/.autostop/wait.js`: answer with the wait pages'
    /// script.
    WaitScript,
    /// A browser loading a page: answer with the wait page.
    Navigation,
    /// Anything else (API clients, XHR/fetch, POST, WebSocket): hold it and
    /// forward the raw bytes to the app once it is ready.
    Other,
}

/// Reads a request head from `stream`: until the blank line, at most
/// `max_bytes`, all within `header_timeout` in total.
pub async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
    header_timeout: Duration,
    max_bytes: usize,
) -> Result<Head, HeadError> {
    read_head_from(stream, Vec::new(), header_timeout, max_bytes).await
}

/// Like [`read_head`], for a head whose first bytes (`raw`) were already
/// read from `stream`; they stay the start of the returned `raw`.
pub async fn read_head_from(
    stream: &mut (impl AsyncRead + Unpin),
    mut raw: Vec<u8>,
    header_timeout: Duration,
    max_bytes: usize,
) -> Result<Head, HeadError> {
    let now = tokio::time::Instant::now();
    let deadline = now.checked_add(header_timeout).unwrap_or(now);
    let mut chunk = vec![0u8; max_bytes.clamp(1, 4096)];
    loop {
        if !raw.is_empty() {
            if let Some(head) = parse(&raw).map_err(|reason| HeadError::Malformed {
                reason,
                raw: raw.clone(),
            })? {
                return Ok(Head { raw, ..head });
            }
        }
        if raw.len() >= max_bytes {
            return Err(HeadError::TooLarge {
                limit: max_bytes,
                raw,
            });
        }
        let want = chunk.len().min(max_bytes.saturating_sub(raw.len()));
        let buf = chunk.get_mut(..want).unwrap_or_default();
        let n = match tokio::time::timeout_at(deadline, stream.read(buf)).await {
            Err(_elapsed) => return Err(HeadError::Timeout { raw }),
            Ok(Err(e)) => return Err(HeadError::Io(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(HeadError::Closed { raw });
        }
        raw.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Parses `raw`; `Ok(None)` when the head is not complete yet. The returned
/// head has an empty `raw` for the caller to fill.
fn parse(raw: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let (Some(method), Some(path), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err("incomplete request line".to_string());
    };
    Ok(Some(Head {
        raw: Vec::new(),
        head_len,
        method: method.to_string(),
        path: path.to_string(),
        minor_version,
        headers: req
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_string(), value)
            })
            .collect(),
    }))
}

/// Decides how to treat a request (see [`Kind`]).
pub fn classify(head: &Head) -> Kind {
    let method = head.method.as_str();
    if method == "GET" && head.path_only() == STATUS_PATH {
        return Kind::StatusPoll;
    }
    if method != "GET" && method != "HEAD" {
        return Kind::Other;
    }
    if head.path_only() == WAIT_SCRIPT_PATH {
        return Kind::WaitScript;
    }
    if head.header("upgrade").is_some() {
        return Kind::Other;
    }
    // Browsers send Sec-Fetch-Mode on every request; it says exactly
    // whether this is a page load or a script's fetch.
    if let Some(mode) = head.header("sec-fetch-mode") {
        return if mode.trim().eq_ignore_ascii_case("navigate") {
            Kind::Navigation
        } else {
            Kind::Other
        };
    }
    if head.header("x-requested-with").is_some() {
        return Kind::Other;
    }
    match head.header("accept") {
        Some(accept) if accepts_html(accept) => Kind::Navigation,
        _ => Kind::Other,
    }
}

/// True if an Accept header lists `text/html` explicitly with a non-zero
/// quality (`*/*` alone, as curl sends, does not count).
fn accepts_html(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("text/html") {
            return false;
        }
        // Split at '=', never at a byte offset: values are client bytes and
        // may hold multi-byte characters (issue #25 item 1).
        !parts.any(|p| {
            p.split_once('=').is_some_and(|(name, q)| {
                name.trim().eq_ignore_ascii_case("q")
                    && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            })
        })
    })
}
