//! The set of wait-page themes the agent can serve: the built-ins embedded in
//! the binary plus user themes (`<name>.html` in the themes directory), which
//! add to or override them. Loading never fails as a whole: each broken user
//! theme becomes a [`ThemeProblem`] for `autostop check` to print, and at run
//! time a service whose theme is missing falls back to [`DEFAULT_THEME`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read as _};
use std::path::{Path, PathBuf};

use super::template::{Template, TemplateError, Var};
use crate::config::{is_valid_theme_name, ThemeCatalog, BUILTIN_THEMES, DEFAULT_THEME};
use crate::progress::{done_count, summary, PublicStep};

/// Largest user theme file accepted; a wait page has no business being
/// bigger, and the whole file is held in memory.
pub const MAX_THEME_BYTES: u64 = 256 * 1024;

/// Why one theme could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// The file stem is not a bare theme name, so no service can use it.
    #[error("ignored: {name:?} is not a valid theme name ([A-Za-z0-9_-]+)")]
    InvalidName {
        /// The offending stem.
        name: String,
    },
    /// The file (or the directory) could not be read.
    #[error("cannot read: {0}")]
    Unreadable(#[source] std::io::Error),
    /// The file is bigger than [`MAX_THEME_BYTES`].
    #[error("too large: {size} bytes (limit {MAX_THEME_BYTES})")]
    TooLarge {
        /// Size found on disk (or read so far).
        size: u64,
    },
    /// The file is not valid UTF-8.
    #[error("not UTF-8: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The template itself is wrong (unknown variable).
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// One user theme (or themes directory) that could not be used, with where
/// it came from, so the operator can fix the right file.
#[derive(Debug, thiserror::Error)]
#[error("{}: theme {theme:?}: {error}", .path.display())]
pub struct ThemeProblem {
    /// The theme name (file stem); empty for a directory-level problem.
    pub theme: String,
    /// The file (or directory) concerned.
    pub path: PathBuf,
    /// What is wrong.
    #[source]
    pub error: ThemeError,
}

/// The state a wait page is rendered in (also the `state` of the status
/// JSON the page polls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Not started yet (the wake is queued).
    Stopped,
    /// The start is in progress.
    Starting,
    /// The app answers; the page reloads onto it.
    Ready,
    /// The start failed; the page shows the error.
    Failed,
}

impl PageState {
    /// What a visitor is told of a service in `status`: ready as soon as
    /// its upstream answers, stopped for every state without a start
    /// under way or failed.
    pub fn of(status: &crate::service::ServiceStatus) -> PageState {
        use crate::service::ServiceState;
        match &status.state {
            _ if status.upstream_ready => PageState::Ready,
            ServiceState::Ready => PageState::Ready,
            ServiceState::Starting => PageState::Starting,
            ServiceState::Failed { .. } => PageState::Failed,
            ServiceState::Stopped
            | ServiceState::Stopping
            | ServiceState::Hibernating
            | ServiceState::Hibernated
            | ServiceState::Unknown => PageState::Stopped,
        }
    }

    /// The lowercase wire name used in templates and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PageState::Stopped => "stopped",
            PageState::Starting => "starting",
            PageState::Ready => "ready",
            PageState::Failed => "failed",
        }
    }
}

/// The values a wait page is rendered with (raw; escaping is done by the
/// template engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageVars {
    /// Service name shown to the visitor.
    pub service_name: String,
    /// Expected start duration in seconds (learned or configured); drives
    /// the progress bar.
    pub estimated_s: u64,
    /// Seconds since the start began.
    pub elapsed_s: u64,
    /// Current state.
    pub state: PageState,
    /// What the visitor is told when the start failed: the listener passes
    /// a fixed public text ([`super::PUBLIC_FAILURE`]), never the cause.
    pub error: Option<String>,
    /// The start's steps, with generic labels only.
    pub steps: Vec<PublicStep>,
}

/// Compiled themes by name, ready to render.
#[derive(Debug)]
pub struct ThemeSet {
    themes: BTreeMap<String, Template>,
    /// Missing theme names already warned about, so a busy service with a
    /// broken theme logs one warning instead of one per visitor.
    warned: parking_lot::Mutex<BTreeSet<String>>,
}

impl ThemeSet {
    /// Only the built-in themes.
    pub fn builtin() -> ThemeSet {
        Self::load(None).0
    }

    /// Built-ins plus every `<name>.html` in `user_dir` (a missing directory
    /// is fine). A user theme with a built-in's name replaces it; a broken
    /// user theme is left out (a built-in of the same name stays) and
    /// reported.
    pub fn load(user_dir: Option<&Path>) -> (ThemeSet, Vec<ThemeProblem>) {
        let mut themes = BTreeMap::new();
        let mut problems = Vec::new();
        for builtin in BUILTIN_THEMES {
            let name = builtin.name;
            match Template::compile(builtin.html) {
                Ok(t) => {
                    themes.insert(name.to_string(), t);
                }
                // Unit tests make sure this never happens; report, do not panic.
                Err(e) => problems.push(ThemeProblem {
                    theme: name.to_string(),
                    path: PathBuf::from(format!("<built-in>/{name}.html")),
                    error: e.into(),
                }),
            }
        }
        if let Some(dir) = user_dir {
            load_user_dir(dir, &mut themes, &mut problems);
        }
        let set = ThemeSet {
            themes,
            warned: parking_lot::Mutex::new(BTreeSet::new()),
        };
        (set, problems)
    }

    /// Whether a theme of that name loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.themes.contains_key(name)
    }

    /// Loaded theme names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.themes.keys().map(String::as_str)
    }

    /// The loaded names as a [`ThemeCatalog`], so configuration validation
    /// accepts exactly the themes that can be served.
    pub fn catalog(&self) -> ThemeCatalog {
        ThemeCatalog::with_user_themes(self.names())
    }

    /// Renders theme `name`, or [`DEFAULT_THEME`] (with a warning, once per
    /// name) if it is not loaded.
    pub fn render(&self, name: &str, vars: &PageVars) -> String {
        let template = match self.themes.get(name) {
            Some(t) => t,
            None => {
                self.warn_missing(name);
                match self.themes.get(DEFAULT_THEME) {
                    Some(t) => t,
                    None => return minimal_page(vars),
                }
            }
        };
        template.render(|var| match var {
            Var::ServiceName => vars.service_name.clone(),
            Var::EstimatedTime => vars.estimated_s.to_string(),
            Var::Elapsed => vars.elapsed_s.to_string(),
            Var::Status => vars.state.as_str().to_string(),
            Var::Error => vars.error.clone().unwrap_or_default(),
            Var::Progress => summary(&vars.steps),
            Var::StepsDone => done_count(&vars.steps).to_string(),
            Var::StepsTotal => vars.steps.len().to_string(),
        })
    }

    fn warn_missing(&self, name: &str) {
        let first = self.warned.lock().insert(name.to_string());
        if first {
            tracing::warn!(
                theme = name,
                fallback = DEFAULT_THEME,
                "wait-page theme not available, using the default"
            );
        }
    }
}

/// Last resort if even the default theme is missing (cannot happen with the
/// embedded built-ins, but rendering must never fail).
fn minimal_page(vars: &PageVars) -> String {
    let t = Template::compile(
        "<!DOCTYPE html><meta charset=utf-8><meta http-equiv=refresh content=3>\
         <title>Starting {{serviceName}}</title><p>{{serviceName}} is starting ({{status}}). {{error}}</p>",
    );
    match t {
        Ok(t) => t.render(|var| match var {
            Var::ServiceName => vars.service_name.clone(),
            Var::Status => vars.state.as_str().to_string(),
            Var::Error => vars.error.clone().unwrap_or_default(),
            Var::EstimatedTime
            | Var::Elapsed
            | Var::Progress
            | Var::StepsDone
            | Var::StepsTotal => String::new(),
        }),
        Err(_) => String::from("<!DOCTYPE html><p>Starting...</p>"),
    }
}

fn load_user_dir(
    dir: &Path,
    themes: &mut BTreeMap<String, Template>,
    problems: &mut Vec<ThemeProblem>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => {
            problems.push(ThemeProblem {
                theme: String::new(),
                path: dir.to_path_buf(),
                error: ThemeError::Unreadable(e),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("html") || path.is_dir() {
            continue;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = if is_valid_theme_name(&stem) {
            load_file(&path)
        } else {
            Err(ThemeError::InvalidName { name: stem.clone() })
        };
        match result {
            Ok(t) => {
                themes.insert(stem, t);
            }
            Err(error) => problems.push(ThemeProblem {
                theme: stem,
                path,
                error,
            }),
        }
    }
}

fn load_file(path: &Path) -> Result<Template, ThemeError> {
    let file = std::fs::File::open(path).map_err(ThemeError::Unreadable)?;
    let size = file.metadata().map_err(ThemeError::Unreadable)?.len();
    if size > MAX_THEME_BYTES {
        return Err(ThemeError::TooLarge { size });
    }
    // Read at most one byte past the limit, in case the file grew since
    // the size check.
    let mut bytes = Vec::new();
    file.take(MAX_THEME_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ThemeError::Unreadable)?;
    if bytes.len() as u64 > MAX_THEME_BYTES {
        return Err(ThemeError::TooLarge {
            size: bytes.len() as u64,
        });
    }
    let text = std::str::from_utf8(&bytes).map_err(ThemeError::NotUtf8)?;
    Ok(Template::compile(text)?)
}
