//! Readiness building blocks: waiting for a dependency's condition and the
//! fast TCP probe of a container address (never the host port, which Docker
//! or the agent's own steering may answer).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;

use super::client::DockerClient;
use super::order::{DependsCondition, DependsOn};
use super::resolve::{Member, RunState};
use super::DockerError;
use crate::progress::Seen;

/// Period of the container-state polls (inspect).
pub const STATE_POLL: Duration = Duration::from_millis(20);
/// Period of the TCP connect polls. A refused connect to a container on a
/// local bridge costs microseconds, so polling often is cheap, and the
/// period (plus the timer's rounding up to the next millisecond) is what a
/// held client waits at most past the app's listen: 1 ms, where 2 ms cost
/// about 1 ms more on average (`cargo xtask bench cold`,
/// `listen_mark_to_ready_ms`).
pub const CONNECT_POLL: Duration = Duration::from_millis(1);
/// Bound on one connect attempt.
pub const CONNECT_ATTEMPT: Duration = Duration::from_millis(100);
/// A container counts as started by the current start if it started no
/// earlier than this before it (clock granularity, daemon latency).
pub const START_SLACK: Duration = Duration::from_secs(2);

/// Whether `m` was (re)started by the start that began at `began`, so that
/// its exit belongs to this start.
pub fn started_since(m: &Member, began: SystemTime) -> bool {
    let since = began.checked_sub(START_SLACK).unwrap_or(began);
    m.started_at().is_some_and(|t| t >= since)
}

/// Error for a container that exited non-zero during the current start.
pub fn exited(m: &Member, code: i64) -> DockerError {
    DockerError::Exited {
        container: m.name.clone(),
        code,
    }
}

/// What the start progress makes of `m`'s latest inspect, for the start
/// that began at `began`.
pub fn seen(m: &Member, began: SystemTime) -> Seen {
    use bollard::models::{ContainerStateStatusEnum as S, HealthStatusEnum as H};
    let Some(state) = &m.inspect.state else {
        return Seen::NotRunning;
    };
    match state.status {
        Some(S::RUNNING) => match state.health.as_ref().and_then(|h| h.status) {
            None | Some(H::NONE | H::EMPTY) => Seen::Running,
            Some(H::HEALTHY) => Seen::Healthy,
            Some(H::UNHEALTHY) => Seen::Unhealthy,
            Some(H::STARTING) => Seen::HealthStarting,
        },
        Some(S::EXITED) => match state.exit_code.unwrap_or(0) {
            0 => Seen::Completed,
            _ => Seen::Exited {
                ours: started_since(m, began),
            },
        },
        _ => Seen::NotRunning,
    }
}

/// Polls the containers of compose service `dep.service` until its
/// condition holds (healthy; completed with exit 0). A non-zero exit fails.
/// Unbounded: the caller's `start_timeout` bounds it. `seen` is told of
/// every refreshed container (the start progress).
pub async fn wait_dependency(
    client: &DockerClient,
    members: &mut [Member],
    dep: &DependsOn,
    seen: &(dyn Fn(&Member) + Send + Sync),
) -> Result<(), DockerError> {
    loop {
        let mut ok = true;
        for m in members
            .iter_mut()
            .filter(|m| m.compose_service.as_deref() == Some(dep.service.as_str()))
        {
            m.refresh(client).await?;
            seen(m);
            let state = m.run_state();
            ok &= match (dep.condition, state) {
                (_, RunState::Failed(code)) => return Err(exited(m, code)),
                (DependsCondition::CompletedSuccessfully, s) => s == RunState::Completed,
                (_, s) => matches!(s, RunState::Up | RunState::Completed),
            };
        }
        if ok {
            return Ok(());
        }
        tokio::time::sleep(STATE_POLL).await;
    }
}

/// One bounded TCP connect attempt.
pub async fn try_connect(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(CONNECT_ATTEMPT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
