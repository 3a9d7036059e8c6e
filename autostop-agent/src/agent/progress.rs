//! The wait page's view of a start ([`crate::progress`]): the services it
//! `requires` first (each in the phase its state machine is in, read from
//! the service directory), then its own containers as the Docker runtime
//! recorded them. This is the [`Upstreams`] the cold-start listener gets.

use std::sync::Arc;

use async_trait::async_trait;

use super::deps::AgentDocker;
use super::registry::DirectoryReader;
use crate::{
    coldstart::Upstreams,
    config::{warm::start_order, ServiceConfig},
    progress::{Phase, Progress, Step, StepKind},
    service::ServiceStatus,
    waitpage::PageState,
};

/// Docker's upstreams and container steps, with requirement steps added.
pub struct StartView {
    docker: Arc<dyn AgentDocker>,
    directory: DirectoryReader,
}

impl StartView {
    /// Over `docker`, with requirements looked up in `directory` at each
    /// call (reloads and labelled services apply).
    pub fn new(docker: Arc<dyn AgentDocker>, directory: DirectoryReader) -> Self {
        Self { docker, directory }
    }

    /// `service`'s requirements in start order, each as a step.
    fn requirements(&self, service: &str) -> Vec<Step> {
        let directory = self.directory.snapshot();
        let needs = directory
            .get(service)
            .is_some_and(|r| !r.config.wake.requires.is_empty());
        if !needs {
            return Vec::new();
        }
        let configs: Vec<ServiceConfig> = directory.iter().map(|r| r.config.clone()).collect();
        start_order(service, &configs)
            .iter()
            .map(|name| match directory.get(name) {
                Some(record) => requirement_step(&record.handle.status()),
                // Not managed: its start cannot happen, the dependent's fails.
                None => Step {
                    kind: StepKind::Requirement,
                    phase: Phase::Waiting,
                    since: tokio::time::Instant::now(),
                },
            })
            .collect()
    }
}

/// A required service's step from its state machine's status.
pub fn requirement_step(status: &ServiceStatus) -> Step {
    let phase = match PageState::of(status) {
        PageState::Ready => Phase::Ready,
        PageState::Starting => Phase::Starting,
        PageState::Failed => Phase::Failed,
        PageState::Stopped => Phase::Waiting,
    };
    Step {
        kind: StepKind::Requirement,
        phase,
        since: status.since,
    }
}

#[async_trait]
impl Upstreams for StartView {
    async fn upstream(
        &self,
        service: &str,
        published_port: u16,
    ) -> Result<std::net::SocketAddr, String> {
        self.docker.upstream(service, published_port).await
    }

    fn progress(&self, service: &str) -> Progress {
        let own = self.docker.progress(service);
        let mut steps = self.requirements(service);
        steps.extend(own.steps);
        Progress {
            began: own.began,
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{ServiceSettings, ServiceState};

    #[test]
    fn a_requirement_step_follows_its_state_machine() {
        let since = tokio::time::Instant::now();
        let mut status = ServiceStatus::initial(&ServiceSettings::default(), since);
        let mut phase = |state: ServiceState, upstream_ready: bool| {
            status.state = state;
            status.upstream_ready = upstream_ready;
            let step = requirement_step(&status);
            assert_eq!((step.kind, step.since), (StepKind::Requirement, since));
            step.phase
        };
        assert_eq!(phase(ServiceState::Stopped, false), Phase::Waiting);
        assert_eq!(phase(ServiceState::Hibernated, false), Phase::Waiting);
        assert_eq!(phase(ServiceState::Starting, false), Phase::Starting);
        assert_eq!(phase(ServiceState::Starting, true), Phase::Ready);
        assert_eq!(phase(ServiceState::Ready, true), Phase::Ready);
        let failed = ServiceState::Failed {
            reason: "db-1 exited".into(),
        };
        assert_eq!(phase(failed, false), Phase::Failed);
    }
}
