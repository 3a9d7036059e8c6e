//! The machine's own Docker daemon, restarted and reconfigured by tests
//! ([`autostop_fixtures::dockerd`], shared with `cargo xtask soak`; this
//! wrapper fails the test on error).
//!
//! [`DockerDaemon`] is a Drop guard: it restores the original daemon.json
//! byte for byte and leaves a running, answering daemon behind, so a failing
//! test never leaves the machine's Docker changed or stopped.
//!
//! Every test that uses this harness lives in one module
//! (`tests/tests/privileged/daemon.rs`, tests `daemon::privileged_*`),
//! which `cargo xtask test` runs alone with one thread, after the others,
//! with [`RESTART_DOCKERD_ENV`]`=1`; without it [`DockerDaemon::take`]
//! fails loudly instead of stopping everyone's containers.

use std::path::Path;

pub use autostop_fixtures::dockerd::{
    answers, docker_proxy_running, restart_allowed, DAEMON_JSON, RESTART_DOCKERD_ENV,
};

use crate::OrFail as _;

/// Exclusive use of the machine's Docker daemon for one test. Restores
/// daemon.json and a running daemon on drop.
pub struct DockerDaemon(autostop_fixtures::dockerd::DockerDaemon);

impl DockerDaemon {
    /// Takes the running daemon: fails loudly unless
    /// [`require_restart_allowed`] passes and the daemon runs and answers;
    /// waits until no container runs on the machine.
    #[track_caller]
    pub fn take() -> Self {
        require_restart_allowed();
        crate::docker::require_docker();
        Self(autostop_fixtures::dockerd::DockerDaemon::take(None).or_fail())
    }

    /// Stops the daemon and waits until it has exited (the API no longer
    /// answers). Containers it ran are stopped with it.
    #[track_caller]
    pub fn stop(&self) {
        self.0.stop().or_fail();
    }

    /// Starts the daemon and waits until its API answers.
    #[track_caller]
    pub fn start(&self) {
        self.0.start().or_fail();
    }

    /// Stops and starts the daemon.
    #[track_caller]
    pub fn restart(&self) {
        self.0.restart().or_fail();
    }

    /// Rewrites daemon.json with `"userland-proxy": on` (every other key
    /// kept) and restarts the daemon.
    #[track_caller]
    pub fn set_userland_proxy(&mut self, on: bool) {
        self.0.set_userland_proxy(on).or_fail();
    }

    /// The daemon's log file, when the harness knows it.
    pub fn log_path(&self) -> Option<&Path> {
        self.0.log_path()
    }
}

/// Fails the test unless [`RESTART_DOCKERD_ENV`] is `1`: this run may
/// restart the machine's dockerd (nobody else uses Docker meanwhile).
#[track_caller]
pub fn require_restart_allowed() {
    assert!(
        restart_allowed(),
        "privileged test: restarts the machine's dockerd, which stops every container \
         on it; run it alone with {RESTART_DOCKERD_ENV}=1 (`cargo xtask test` does: \
         `cargo test -p autostop-tests --test privileged -- --test-threads=1 daemon::`)"
    );
}
