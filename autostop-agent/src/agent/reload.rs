//! Hot reload: SIGHUP or a change of the config file asks for a reload;
//! [`diff`] says which services were added, removed or changed, so the agent
//! touches only those. An invalid file keeps the running config.
//!
//! Changes are heard through inotify ([`super::file_watch`]); the file's
//! size, modification time and inode are compared then, and by a safety
//! poll every [`super::file_watch::SAFETY_POLL`] (every
//! [`super::file_watch::FALLBACK_POLL`] when inotify is not available).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::file_watch::FileWatch;
use crate::config::{Config, ServiceConfig};

/// What differs between the running config and a new one.
#[derive(Debug, Default, PartialEq)]
pub struct ConfigDiff {
    /// Services only in the new config.
    pub added: Vec<ServiceConfig>,
    /// Names of services only in the old config.
    pub removed: Vec<String>,
    /// Services in both whose settings differ (new version).
    pub changed: Vec<ServiceConfig>,
    /// `[agent]` differs.
    pub agent_changed: bool,
}

impl ConfigDiff {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.agent_changed
    }
}

/// Compares two configs by service name.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut out = ConfigDiff {
        agent_changed: old.agent != new.agent,
        ..ConfigDiff::default()
    };
    for service in &new.services {
        match old.service(&service.name) {
            None => out.added.push(service.clone()),
            Some(before) if before != service => out.changed.push(service.clone()),
            Some(_) => {}
        }
    }
    out.removed = old
        .services
        .iter()
        .filter(|s| new.service(&s.name).is_none())
        .map(|s| s.name.clone())
        .collect();
    out
}

/// Whether a change needs the service's actor and kernel entries rebuilt
/// (its identity moved) rather than new settings sent to the running actor.
pub fn needs_restart(old: &ServiceConfig, new: &ServiceConfig) -> bool {
    old.ports != new.ports || old.target != new.target
}

/// Watches for reload requests: SIGHUP, and changes of the file's size,
/// modification time or inode. Each request is one `()` on the returned
/// receiver.
pub fn watch(
    path: PathBuf,
    shutdown: CancellationToken,
) -> std::io::Result<(mpsc::Receiver<()>, JoinHandle<()>)> {
    let mut hangup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(async move {
        let mut last = fingerprint(&path);
        let mut files = FileWatch::new(&path);
        let mut poll = tokio::time::interval(files.poll_period());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = hangup.recv() => {
                    tracing::info!(event = "reload_requested", cause = "SIGHUP");
                    let _ = tx.try_send(());
                    last = fingerprint(&path);
                    continue;
                }
                () = files.changed() => {}
                _ = poll.tick() => {}
            }
            let now = fingerprint(&path);
            if now != last {
                last = now;
                tracing::info!(event = "reload_requested", cause = "file changed");
                let _ = tx.try_send(());
            }
        }
    });
    Ok((rx, task))
}

/// What tells one version of the file from another: size, modification
/// time, inode (a rename over it within the mtime's resolution).
fn fingerprint(path: &Path) -> Option<(u64, SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?, meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThemeCatalog;

    fn parse(text: &str) -> Config {
        Config::parse(text, "test.toml", &ThemeCatalog::builtin()).expect("valid config")
    }

    const BASE: &str = r#"
[[service]]
name = "a"
port = 8001
compose_dir = "/opt/a"

[[service]]
name = "b"
port = 8002
containers = ["b1"]
"#;

    #[test]
    fn identical_configs_have_no_diff() {
        assert!(diff(&parse(BASE), &parse(BASE)).is_empty());
    }

    #[test]
    fn diff_names_added_removed_and_changed_services() {
        let new = parse(
            r#"
[agent]
ignore_sources = ["10.0.0.5/32"]

[[service]]
name = "a"
port = 8001
compose_dir = "/opt/a"
idle_timeout = "10m"

[[service]]
name = "c"
port = 8003
containers = ["c1"]
"#,
        );
        let d = diff(&parse(BASE), &new);
        assert_eq!(
            d.added.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(d.removed, ["b"]);
        assert_eq!(
            d.changed
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert!(d.agent_changed);
        let old_a = parse(BASE).services[0].clone();
        assert!(
            !needs_restart(&old_a, &d.changed[0]),
            "an idle timeout change keeps the actor"
        );
        let mut moved = old_a.clone();
        moved.ports[0].port = 9001;
        assert!(needs_restart(&old_a, &moved));
    }
}
