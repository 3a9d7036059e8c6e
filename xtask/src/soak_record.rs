//! What a soak run records: the run's clock, every client request's
//! outcome, every injected fault with its window, and anomalies (an agent
//! that died, a check a fault makes that failed). The report
//! (`soak_report.rs`) reads these.

use std::{
    fmt,
    io::{Error, ErrorKind},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};

/// Milliseconds since the run began, and the wall clock at that moment (to
/// place the agent's log lines, stamped in UTC, on the same axis).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    began: Instant,
    /// Unix time of `began`, in ms.
    pub unix_ms: u64,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            began: Instant::now(),
            unix_ms,
        }
    }

    /// Milliseconds since the run began.
    pub fn now(&self) -> u64 {
        self.began.elapsed().as_millis() as u64
    }

    /// The run time of a Unix time in ms (0 before the run).
    pub fn of_unix(&self, unix_ms: u64) -> u64 {
        unix_ms.saturating_sub(self.unix_ms)
    }
}

/// Formats run milliseconds as seconds with one decimal (`12.3s`).
pub fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailKind {
    /// The connection was refused.
    Refused,
    /// Reset, or closed before a whole answer came.
    Reset,
    /// No whole answer within the client's timeout.
    Timeout,
    /// An HTTP status other than the expected one.
    BadStatus,
    /// An answer, but not the service's.
    WrongBody,
    /// Any other I/O error.
    Other,
}

impl FailKind {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            FailKind::Refused => "refused",
            FailKind::Reset => "reset",
            FailKind::Timeout => "timeout",
            FailKind::BadStatus => "bad status",
            FailKind::WrongBody => "wrong body",
            FailKind::Other => "other",
        }
    }

    /// The kind of an I/O error of a client.
    pub fn of(error: &Error) -> Self {
        match error.kind() {
            ErrorKind::ConnectionRefused => FailKind::Refused,
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => FailKind::Reset,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => FailKind::Timeout,
            // The fixture's HTTP client: the connection ended before a
            // whole response head.
            ErrorKind::InvalidData if error.to_string().contains("no end of the response head") => {
                FailKind::Reset
            }
            _ => FailKind::Other,
        }
    }
}

/// A failed request: its kind and what was seen.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its kind.
    pub kind: FailKind,
    /// What was seen (status and a bit of the body, or the error).
    pub detail: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// The failure an I/O error is.
    pub fn io(error: &Error) -> Self {
        Self::new(FailKind::of(error), error.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

/// One request of one client.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The client (`blk`, `dyn-json`, …).
    pub client: &'static str,
    /// The service it reaches.
    pub service: &'static str,
    /// The request (`GET /`, `status poll`, `echo`).
    pub op: &'static str,
    /// When it began and ended (run ms).
    pub start: u64,
    /// When it ended.
    pub end: u64,
    /// `None` when it succeeded.
    pub failure: Option<Failure>,
}

impl Outcome {
    /// The report's JSON of a failed request.
    pub fn to_json(&self) -> Value {
        json!({
            "client": self.client,
            "service": self.service,
            "op": self.op,
            "start_s": self.start as f64 / 1000.0,
            "end_s": self.end as f64 / 1000.0,
            "kind": self.failure.as_ref().map(|f| f.kind.name()),
            "detail": self.failure.as_ref().map(|f| f.detail.clone()),
        })
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// Its kind's name (`docker-kill`, …).
    pub kind: &'static str,
    /// What it hit (a service, a config variant).
    pub target: String,
    /// When it was injected (run ms).
    pub injected: u64,
    /// When the system was seen recovered, if it was within the cap.
    pub recovered: Option<u64>,
    /// The window in which client failures are explained by this fault
    /// (run ms), or `None` for a fault clients must never notice.
    pub window: Option<(u64, u64)>,
    /// What the fault saw (its checks, notes).
    pub notes: Vec<String>,
}

impl FaultRecord {
    /// The report's JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.kind,
            "target": self.target,
            "injected_s": self.injected as f64 / 1000.0,
            "recovered_s": self.recovered.map(|t| t as f64 / 1000.0),
            "window_s": self.window.map(|(a, b)| [a as f64 / 1000.0, b as f64 / 1000.0]),
            "notes": self.notes,
        })
    }
}

/// Something wrong that is not a client's failed request: the agent died,
/// or a check of a fault failed (an invalid config applied, a held service
/// stopped, a setting lost over a restart).
#[derive(Debug, Clone)]
pub struct Anomaly {
    /// When it was seen (run ms).
    pub at: u64,
    /// What it is.
    pub what: String,
}

/// How long after a recovery failures are still explained by its fault
/// (a request already on its way through nginx).
pub const SETTLE: Duration = Duration::from_secs(3);
