//! The module's single error type, [`ConfigError`], and [`LocatedError`], one
//! problem pinned to `origin:line:column: field: message` so an operator can
//! jump straight to the offending spot in the file.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a configuration (or seed) document, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    /// Name of the document the problem is in (a file path or a label), so
    /// messages from several sources are never confused.
    pub origin: String,
    /// 1-based line of the offending text, for editors and humans.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// Dotted path of the field concerned, e.g. `service[1].idle_timeout`
    /// (array indices are 0-based); empty when no field could be identified.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.origin, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything that can go wrong while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read; names the path so the
    /// operator knows which file (permissions, missing file, ...).
    #[error("{}: cannot read configuration file: {source}", .path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The underlying I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The user themes directory exists but could not be listed.
    #[error("{}: cannot list themes directory: {source}", .path.display())]
    ThemesDir {
        /// The directory we tried to list.
        path: PathBuf,
        /// The underlying I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The document is malformed or fails validation. Holds every problem
    /// found (never empty), displayed one per line, so a single run of the
    /// agent reports all of them instead of one per edit-retry cycle.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<LocatedError>),
}

impl ConfigError {
    /// The located problems if this is [`ConfigError::Invalid`], else an
    /// empty slice; handy for callers (and tests) that inspect positions.
    pub fn located(&self) -> &[LocatedError] {
        match self {
            ConfigError::Invalid(list) => list,
            _ => &[],
        }
    }
}

fn join_lines(list: &[LocatedError]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
