//! Says when one file may have changed, without polling it: inotify (the
//! `notify` crate) on the file's directory, so an editor that writes a
//! temporary file and renames it over the original is seen as well as an
//! in-place write; a burst of events (an editor's write, chmod and rename)
//! makes one answer once the directory has been quiet for [`DEBOUNCE`].
//! Events for other files of the directory are ignored.
//!
//! Without inotify (no watch descriptors left, say) the watch has no
//! events and [`FileWatch::poll_period`] asks the caller to poll more
//! often instead; the caller compares the file's metadata either way.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long the directory must be quiet before a burst counts as one change.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(200);
/// The safety poll while inotify works (a missed event is noticed by then).
pub(super) const SAFETY_POLL: Duration = Duration::from_secs(300);
/// The poll when inotify is not available.
pub(super) const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// Why the file cannot be watched (the caller falls back to polling).
#[derive(Debug, thiserror::Error)]
pub enum FileWatchError {
    /// The path has no file name or directory.
    #[error("{0}: not a file path")]
    NotAFile(PathBuf),
    /// inotify refused.
    #[error("watching {dir}: {source}")]
    Notify {
        /// The directory.
        dir: PathBuf,
        /// What inotify said.
        source: notify::Error,
    },
}

/// A watch on one file's directory.
pub(super) struct FileWatch {
    events: mpsc::Receiver<()>,
    /// Kept for its inotify thread; `None` when the watch could not start.
    watcher: Option<RecommendedWatcher>,
}

impl FileWatch {
    /// Watches `path`'s directory; without inotify, logs why and returns a
    /// watch that never fires.
    pub(super) fn new(path: &Path) -> Self {
        let (tx, events) = mpsc::channel(1);
        let watcher = match start(path, tx) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, poll_s = FALLBACK_POLL.as_secs(), "config file changes are polled");
                None
            }
        };
        Self { events, watcher }
    }

    /// How often the caller should compare the file's metadata anyway.
    pub(super) fn poll_period(&self) -> Duration {
        if self.watcher.is_some() {
            SAFETY_POLL
        } else {
            FALLBACK_POLL
        }
    }

    /// Resolves once the file may have changed and the directory has been
    /// quiet for [`DEBOUNCE`]; never when there is no watch.
    pub(super) async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            return std::future::pending().await;
        }
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.events.recv()).await {}
    }
}

fn start(path: &Path, tx: mpsc::Sender<()>) -> Result<RecommendedWatcher, FileWatchError> {
    let not_a_file = || FileWatchError::NotAFile(path.to_owned());
    let name: OsString = path.file_name().ok_or_else(not_a_file)?.to_owned();
    let dir = match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
        Some(dir) => dir,
        None => return Err(not_a_file()),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let concerns_file = match &event {
            Ok(event) => event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str())),
            // An overflowed queue may have lost ours: look.
            Err(_) => true,
        };
        if concerns_file {
            // Full means a check is already pending: that one covers this.
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| FileWatchError::Notify {
        dir: dir.to_owned(),
        source,
    })?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| FileWatchError::Notify {
            dir: dir.to_owned(),
            source,
        })?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `watch` reports a change within `within`.
    async fn fires(watch: &mut FileWatch, within: Duration) -> bool {
        tokio::time::timeout(within, watch.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn rename_over_and_in_place_writes_are_seen_others_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("autostop.toml");
        std::fs::write(&file, "# one\n").expect("write");
        let mut watch = FileWatch::new(&file);
        assert_eq!(watch.poll_period(), SAFETY_POLL, "inotify is available");

        std::fs::write(dir.path().join("other.toml"), "x").expect("write");
        assert!(
            !fires(&mut watch, Duration::from_millis(500)).await,
            "another file of the directory is not a change"
        );

        // An editor's save: a temporary file renamed over the original.
        let temp = dir.path().join(".autostop.toml.swp");
        std::fs::write(&temp, "# two\n").expect("write");
        std::fs::rename(&temp, &file).expect("rename");
        assert!(fires(&mut watch, Duration::from_secs(3)).await);

        std::fs::write(&file, "# three\n").expect("write");
        assert!(fires(&mut watch, Duration::from_secs(3)).await);
        assert!(
            !fires(&mut watch, Duration::from_millis(500)).await,
            "a burst is one change"
        );
    }

    #[tokio::test]
    async fn without_a_directory_the_watch_asks_for_polling() {
        let mut watch = FileWatch::new(Path::new("/nonexistent-autostop-dir/autostop.toml"));
        assert_eq!(watch.poll_period(), FALLBACK_POLL);
        assert!(!fires(&mut watch, Duration::from_millis(50)).await);
    }
}
