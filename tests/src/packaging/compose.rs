//! The agent run from its image by docker-compose v1 with
//! `packaging/compose.yaml` ([`ComposeAgent`]).

use std::{net::SocketAddr, process::Command, time::Duration};

use super::{output_text, repo_file, stdout};
use crate::docker::{docker, free_port, unique};
use crate::e2e::http_get;
use crate::eventually;

/// How long the containerised agent gets to answer and adopt its services.
const COMPOSE_UP: Duration = Duration::from_secs(60);

/// The agent run by docker-compose from `packaging/compose.yaml`, with a
/// project directory holding its config (`./autostop.toml`) and a small
/// override that gives it its own warm-up table name. The config gives it
/// its own status port and `docker_labels = false`. `down -v` on drop
/// (after printing its logs if the test failed).
pub struct ComposeAgent {
    dir: tempfile::TempDir,
    project: String,
    /// The status API (host network: reachable on the host's loopback).
    pub status: SocketAddr,
    /// The agent's nft table (`inet NAME`).
    pub nft_table: String,
}

impl ComposeAgent {
    /// Writes the config (`[agent]` plus `services`, raw TOML) and the
    /// override; starts nothing yet (see [`Self::up`]).
    pub fn new(services: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let nft_table = unique("astestc");
        std::fs::write(
            dir.path().join("autostop.toml"),
            format!(
                "[agent]\nstatus_listen = \"{status}\"\nstate_dir = \"/var/lib/autostop\"\n\
                 docker_labels = false\n\n{services}"
            ),
        )
        .expect("writing autostop.toml");
        std::fs::write(
            dir.path().join("override.yaml"),
            format!(
                "services:\n  autostop:\n    environment:\n      AUTOSTOP_NFT_TABLE: \"{nft_table}\"\n"
            ),
        )
        .expect("writing override.yaml");
        Self {
            dir,
            project: unique("astestcompose"),
            status,
            nft_table,
        }
    }

    /// `docker-compose up -d`; returns once every service is adopted.
    pub fn up(&self) {
        let out = self
            .compose(&["up", "-d"])
            .output()
            .expect("docker-compose");
        assert!(
            out.status.success(),
            "docker-compose up: {}",
            output_text(&out)
        );
        self.wait_adopted();
    }

    /// `docker-compose -p PROJECT --project-directory DIR -f
    /// packaging/compose.yaml -f DIR/override.yaml ARGS…`.
    pub fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-p")
            .arg(&self.project)
            .arg("--project-directory")
            .arg(self.dir.path())
            .arg("-f")
            .arg(repo_file("packaging/compose.yaml"))
            .arg("-f")
            .arg(self.dir.path().join("override.yaml"))
            .args(args);
        cmd
    }

    fn wait_adopted(&self) {
        let adopted = eventually(COMPOSE_UP, || {
            let Ok(r) = http_get(self.status, "/api/services", &[], Duration::from_secs(2)) else {
                return false;
            };
            let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            list.as_array()
                .is_some_and(|l| l.iter().all(|s| s["state"] != "unknown"))
        });
        assert!(
            adopted,
            "the containerised agent did not adopt its services within {COMPOSE_UP:?}:\n{}",
            self.logs()
        );
    }

    /// The agent container's id.
    pub fn container(&self) -> String {
        let id = stdout(&mut self.compose(&["ps", "-q", "autostop"]));
        assert!(!id.is_empty(), "no autostop container in the project");
        id
    }

    /// The agent's host PID (the image runs it as its only process).
    pub fn pid(&self) -> i32 {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.container()]);
        pid.parse()
            .unwrap_or_else(|e| panic!("State.Pid {pid:?}: {e}"))
    }

    /// The agent's logs so far.
    pub fn logs(&self) -> String {
        self.compose(&["logs", "--no-color", "autostop"])
            .output()
            .map(|o| output_text(&o))
            .unwrap_or_else(|e| format!("docker-compose logs: {e}"))
    }

    /// The API state of service `name`.
    pub fn state(&self, name: &str) -> String {
        let r = http_get(
            self.status,
            &format!("/api/services/{name}"),
            &[],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("status API: {e}"));
        let service: serde_json::Value = serde_json::from_slice(&r.body).expect("status JSON");
        service["state"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until service `name` is in `state`.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        let ok = eventually(timeout, || self.state(name) == state);
        assert!(
            ok,
            "service {name} not {state} within {timeout:?} (now {}):\n{}",
            self.state(name),
            self.logs()
        );
    }
}

impl Drop for ComposeAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[compose agent logs]\n{}", self.logs());
        }
        let _ = self.compose(&["down", "-v", "-t", "15"]).output();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.nft_table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
