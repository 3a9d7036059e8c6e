//! Which compose project a `compose_dir` service manages, as Docker's
//! labels say it, and no more. A container joins the project only when
//! compose made it for that project: it carries compose's project and
//! service labels, the project's working directory, and the project's
//! config files. Anything else that merely carries the working-dir label
//! (a container of another project run from the same directory with `-p`
//! or other `-f` files, or one labelled by hand) is left out, with a
//! reason: it is not started or stopped with the project, its exit is not
//! the project's failure, and its `depends_on` does not enter the
//! project's start order.
//!
//! The project's name is the one compose gives a project run from the
//! directory without `-p` (its base name, lowercased, without characters
//! other than `a-z`, `0-9`, `-` and `_`) when a container carries it; else
//! the name the service was last resolved to, while containers carry it;
//! else the one name every compose-made container there carries (a
//! project run with `-p` or `COMPOSE_PROJECT_NAME`). Containers of two or
//! more other names are no project: none is chosen, and each is named.
//! Within the name, the config files most of its containers were made from
//! (ties: the first in byte order) are the project's.
//!
//! Pure: the resolver and the event follower feed it labels.

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

/// Label with the compose project's name.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
/// Label docker-compose puts on every container of a project.
pub const LABEL_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
/// Label listing the compose files of the project.
pub const LABEL_CONFIG_FILES: &str = "com.docker.compose.project.config_files";
/// Label naming the compose service of a container.
pub const LABEL_SERVICE: &str = "com.docker.compose.service";

/// What makes a container part of a compose project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId {
    /// The project's name (`com.docker.compose.project`).
    pub name: String,
    /// Its working directory, without a trailing `/`.
    pub working_dir: String,
    /// The compose files it was made from, each made absolute against the
    /// working directory and normalised (`a/../b.yml` is `b.yml`); empty
    /// when compose read them from standard input (no label).
    pub config_files: Vec<PathBuf>,
}

impl ProjectId {
    /// The project a container's labels claim, or why they claim none.
    pub fn of(labels: &HashMap<String, String>) -> Result<Self, Foreign> {
        let name = labels.get(LABEL_PROJECT).ok_or(Foreign::NotCompose)?;
        if !labels.contains_key(LABEL_SERVICE) {
            return Err(Foreign::NotCompose);
        }
        let working_dir = labels
            .get(LABEL_WORKING_DIR)
            .map(|w| trim_dir(w).to_owned())
            .ok_or(Foreign::NotCompose)?;
        let config_files = labels
            .get(LABEL_CONFIG_FILES)
            .map(|files| config_file_paths(files, Path::new(&working_dir)))
            .unwrap_or_default();
        Ok(Self {
            name: name.clone(),
            working_dir,
            config_files,
        })
    }

    /// How `other` differs from this project, if it does.
    pub fn differs(&self, other: &Self) -> Option<Foreign> {
        if other.working_dir != self.working_dir {
            Some(Foreign::WorkingDir(other.working_dir.clone()))
        } else if other.name != self.name {
            Some(Foreign::Project(other.name.clone()))
        } else if other.config_files != self.config_files {
            Some(Foreign::ConfigFiles(join(&other.config_files)))
        } else {
            None
        }
    }
}

/// Why a container that carries a project's working-dir label is not one
/// of its containers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Foreign {
    /// Compose's project or service label is missing: compose did not
    /// make it.
    #[error("it lacks compose's project or service label (compose did not make it)")]
    NotCompose,
    /// Another working directory.
    #[error("its working directory is {0:?}")]
    WorkingDir(String),
    /// Another project name.
    #[error("it belongs to compose project {0:?}")]
    Project(String),
    /// The same name, other compose files.
    #[error("it was made from other compose files ({0})")]
    ConfigFiles(String),
    /// The directory's containers belong to several projects, none of them
    /// the one compose names after the directory.
    #[error("the containers with this working directory belong to several compose projects ({0}), none named after the directory; the project is ambiguous")]
    Ambiguous(String),
}

/// One container left out of a project, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The container's name.
    pub container: String,
    /// Why it is not one of the project's.
    pub why: Foreign,
}

impl Ignored {
    /// The problem entry (and warning) for it.
    pub fn message(&self, working_dir: &str) -> String {
        format!(
            "container {:?} carries the working directory {working_dir:?} of this service's compose project but is ignored: {}",
            self.container, self.why
        )
    }
}

/// `dir` without trailing slashes (`/` stays `/`).
pub fn trim_dir(dir: &str) -> &str {
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() && !dir.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// The names compose gives a project run from `dir` without `-p`:
/// docker-compose v1's (base name lowercased, only `a-z0-9-_` kept) and
/// compose v2's (the same, without leading `-` and `_`).
pub fn default_names(dir: &str) -> [String; 2] {
    let base = Path::new(trim_dir(dir))
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    let v1: String = base
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .collect();
    let v2 = v1.trim_start_matches(['-', '_']).to_owned();
    [v1, v2]
}

/// Splits the `config_files` label into paths, made absolute against the
/// project's working directory and normalised lexically.
pub fn config_file_paths(label: &str, working_dir: &Path) -> Vec<PathBuf> {
    label
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| normalise(&working_dir.join(p)))
        .collect()
}

/// `path` with `.` and `..` resolved without the file system (`..` at the
/// root stays at the root).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn join(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "none named".to_owned();
    }
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The project of `dir` among `containers` (name, labels), each of which
/// carries `dir` as its working directory, and the containers left out.
/// `None` when no container makes a project there (none made by compose,
/// or an ambiguous set: every one is then left out).
pub fn choose<'a>(
    dir: &str,
    last: Option<&str>,
    containers: impl IntoIterator<Item = (&'a str, &'a HashMap<String, String>)>,
) -> (Option<ProjectId>, Vec<Ignored>) {
    let dir = trim_dir(dir);
    let mut ids: Vec<(&str, Result<ProjectId, Foreign>)> = containers
        .into_iter()
        .map(|(name, labels)| {
            let id = ProjectId::of(labels).and_then(|id| {
                if id.working_dir == dir {
                    Ok(id)
                } else {
                    Err(Foreign::WorkingDir(id.working_dir))
                }
            });
            (name, id)
        })
        .collect();
    ids.sort_by(|a, b| a.0.cmp(b.0));
    let chosen = reference(dir, last, &ids);
    let mut ignored = Vec::new();
    for (name, id) in ids {
        let why = match (id, &chosen) {
            (Err(why), _) => Some(why),
            (Ok(id), Ok(project)) => project.differs(&id),
            (Ok(_), Err(why)) => Some(why.clone()),
        };
        if let Some(why) = why {
            ignored.push(Ignored {
                container: name.to_owned(),
                why,
            });
        }
    }
    (chosen.ok(), ignored)
}

/// The project the module's rules pick, or why there is none (the reason
/// given to every compose-made container then).
fn reference(
    dir: &str,
    last: Option<&str>,
    ids: &[(&str, Result<ProjectId, Foreign>)],
) -> Result<ProjectId, Foreign> {
    // Per name, how many containers carry each set of config files.
    let mut names: BTreeMap<&str, BTreeMap<&[PathBuf], usize>> = BTreeMap::new();
    for id in ids.iter().filter_map(|(_, id)| id.as_ref().ok()) {
        let count = names
            .entry(id.name.as_str())
            .or_default()
            .entry(id.config_files.as_slice())
            .or_default();
        *count = count.saturating_add(1);
    }
    let defaults = default_names(dir);
    let name = match names
        .keys()
        .find(|n| defaults.iter().any(|d| d.as_str() == **n))
        .or_else(|| names.keys().find(|n| Some(**n) == last))
    {
        Some(name) => *name,
        None if names.len() > 1 => {
            let all: Vec<String> = names.keys().map(|n| format!("{n:?}")).collect();
            return Err(Foreign::Ambiguous(all.join(", ")));
        }
        None => match names.keys().next() {
            Some(name) => *name,
            None => return Err(Foreign::NotCompose),
        },
    };
    let files = names
        .get(name)
        .into_iter()
        .flatten()
        // Most containers first; among equals the first in byte order
        // (the map's order, kept by a stable max over reversed counts).
        .min_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)))
        .map(|(files, _)| files.to_vec())
        .unwrap_or_default();
    Ok(ProjectId {
        name: name.to_owned(),
        working_dir: dir.to_owned(),
        config_files: files,
    })
}

#[cfg(test)]
#[path = "tests_project.rs"]
mod tests;
