//! `requires` between services: the container runtime every state machine
//! drives, wrapped so that starting a service first starts what it
//! requires, transitively and in order (deepest first), each waited until
//! ready. The requirement's own state machine does the work (woken with
//! [`Trigger::Dependent`]), so its steering, learning and failure rules
//! apply as for any start. A requirement that fails, is latched by its
//! crash-loop guard or is not managed fails the dependent's start with a
//! message naming it; the dependent's `start_timeout` bounds the whole
//! chain. The dependent's held connections are handed over only once it is
//! ready itself, so after everything it needs.
//!
//! Keeping a requirement awake while a dependent runs is the keep-awake
//! planner's job ([`super::awake`]). A hibernated dependent lets its
//! requirements sleep; they are started again before it thaws.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::registry::DirectoryReader;
use crate::{
    config::{warm::start_order, ServiceConfig},
    service::{
        ContainerRuntime, Hibernation, Observed, RuntimeError, ServiceError, ServiceState,
        ServiceStatus, StartBlock, Trigger,
    },
};

/// The runtime with requirements started first.
pub struct RequiresRuntime {
    inner: Arc<dyn ContainerRuntime>,
    directory: DirectoryReader,
}

impl RequiresRuntime {
    /// Wraps `inner`; requirements are looked up in `directory` at each
    /// start (so reloads and labelled services apply).
    pub fn new(inner: Arc<dyn ContainerRuntime>, directory: DirectoryReader) -> Self {
        Self { inner, directory }
    }

    /// Starts `service`'s requirements in order, each until ready.
    async fn start_requirements(&self, service: &str) -> Result<(), RuntimeError> {
        let directory = self.directory.snapshot();
        let configs: Vec<ServiceConfig> = directory.iter().map(|r| r.config.clone()).collect();
        for requirement in start_order(service, &configs) {
            let Some(record) = directory.get(&requirement) else {
                return Err(ServiceError::Runtime(format!(
                    "required service {requirement:?} is not managed"
                )));
            };
            let mut status = record.handle.subscribe();
            if status.borrow_and_update().state == ServiceState::Ready {
                continue;
            }
            tracing::info!(service, requirement = %requirement, event = "starting_requirement");
            let began = std::time::Instant::now();
            record.handle.wake(Trigger::Dependent).await?;
            until_ready(&requirement, &mut status).await?;
            tracing::info!(
                service,
                requirement = %requirement,
                event = "requirement_ready",
                took_ms = began.elapsed().as_millis() as u64
            );
        }
        Ok(())
    }
}

/// Waits for `requirement`'s state machine to be ready. A failure counts
/// only once it has begun a new attempt (its state before the wake may be
/// an old failure the wake retries), except a latched crash-loop guard,
/// which no wake lifts.
async fn until_ready(
    requirement: &str,
    status: &mut watch::Receiver<ServiceStatus>,
) -> Result<(), RuntimeError> {
    let mut retrying = false;
    loop {
        let now = status.borrow_and_update().clone();
        match &now.state {
            ServiceState::Ready => return Ok(()),
            ServiceState::Failed { reason } => {
                if now.start_block == Some(StartBlock::CrashLoop) || retrying {
                    return Err(ServiceError::Runtime(format!(
                        "required service {requirement:?} failed: {reason}"
                    )));
                }
            }
            _ => retrying = true,
        }
        status.changed().await.map_err(|_| {
            ServiceError::Runtime(format!("required service {requirement:?} is gone"))
        })?;
    }
}

#[async_trait]
impl ContainerRuntime for RequiresRuntime {
    async fn start(&self, service: &str) -> Result<(), RuntimeError> {
        self.start_requirements(service).await?;
        self.inner.start(service).await
    }

    async fn stop(&self, service: &str) -> Result<(), RuntimeError> {
        self.inner.stop(service).await
    }

    async fn wait_ready(&self, service: &str) -> Result<(), RuntimeError> {
        self.inner.wait_ready(service).await
    }

    async fn observe(&self, service: &str) -> Result<Observed, RuntimeError> {
        self.inner.observe(service).await
    }

    async fn hibernate(&self, service: &str) -> Result<Hibernation, RuntimeError> {
        self.inner.hibernate(service).await
    }

    /// A hibernated service's requirements may have gone to sleep while it
    /// was paused: they are started first, as for a start.
    async fn thaw(&self, service: &str) -> Result<(), RuntimeError> {
        self.start_requirements(service).await?;
        self.inner.thaw(service).await
    }
}
