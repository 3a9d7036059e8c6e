//! The per-service tokio task: owns the [`Machine`], runs its effects against
//! the ports, and publishes every status change on a `watch` channel.
//!
//! At most one runtime operation is in flight; it is polled inside the
//! actor's `select!` so commands (wakes, shutdown, container events) are
//! handled while Docker works. Dropping the operation future cancels it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::effects::{Activity, Effect, Input, Op, OpOutcome, StartFailure};
use super::machine::Machine;
use super::traits::{ActivityProbe, ContainerRuntime, LifecycleObserver, Steered, Steering};
use super::types::{Command, ServiceState, ServiceStatus, StateName};
use super::ServiceError;

/// How often a hibernated service's kernel counter is read for traffic
/// (a map lookup; the first packet's wait is at most this).
pub const HIBERNATED_POLL_PERIOD: Duration = Duration::from_millis(50);

/// How often a hibernated service's containers' open connections are
/// counted (a queued client the counters did not see).
pub const HIBERNATED_CONNECTIONS_PERIOD: Duration = Duration::from_secs(1);

/// Boxed in-flight runtime operation.
type OpFuture = Pin<Box<dyn Future<Output = OpOutcome> + Send>>;

/// Ports and channels the actor works with.
pub(crate) struct Actor {
    /// Service name passed to every port call.
    pub name: Arc<str>,
    /// Container runtime port.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Kernel steering port.
    pub steering: Arc<dyn Steering>,
    /// Kernel activity port.
    pub probe: Arc<dyn ActivityProbe>,
    /// Hears lifecycle steps (metrics, alerts, history).
    pub observer: Arc<dyn LifecycleObserver>,
    /// Commands from the handles.
    pub rx: mpsc::Receiver<Command>,
    /// Status publication.
    pub status_tx: watch::Sender<ServiceStatus>,
    /// Agent-wide shutdown.
    pub shutdown: CancellationToken,
}

/// Mutable execution state of the actor besides the machine.
struct Exec {
    op: Option<OpFuture>,
    timer: Option<Instant>,
    /// The last steering change's answer, awaited by the next runtime
    /// operation before it calls Docker.
    steered: Option<Steered>,
}

impl Actor {
    /// Runs until `Shutdown`, cancellation, or every handle is dropped.
    pub(crate) async fn run(mut self, mut machine: Machine, initial: Vec<Effect>) {
        let mut exec = Exec {
            op: None,
            timer: None,
            steered: None,
        };
        self.apply(&mut machine, &mut exec, initial);
        let mut connections_poll = tokio::time::interval(HIBERNATED_CONNECTIONS_PERIOD);
        connections_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut wake_poll = tokio::time::interval(HIBERNATED_POLL_PERIOD);
        wake_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let timer = exec.timer;
            // One timer at the idle deadline, only while the service is
            // ready, not held and not kept awake: a stopped service costs no
            // wake-ups, a ready one a single wake-up per idle timeout (more
            // only when traffic moved the deadline on in between).
            let idle_deadline = machine.idle_deadline();
            // A hibernated service is not steered, so no wake event comes:
            // its kernel counter moving is the first packet.
            let hibernated = *machine.state() == ServiceState::Hibernated;
            let input = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                out = next_outcome(&mut exec.op) => {
                    exec.op = None;
                    Input::OpDone(out)
                }
                () = sleep_until_opt(timer) => {
                    exec.timer = None;
                    Input::Timer
                }
                cmd = self.rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => Input::Command(cmd),
                },
                () = sleep_until_opt(idle_deadline) => Input::Tick(self.read_activity()),
                // Every second while hibernated, the containers' own
                // connection count too: a queued client the counters did
                // not see (see `Machine::traffic_while_hibernated`).
                _ = connections_poll.tick(), if hibernated => Input::Tick(self.read_probe()),
                _ = wake_poll.tick(), if hibernated => Input::Tick(self.read_activity()),
            };
            let fx = machine.handle(input, Instant::now());
            self.apply(&mut machine, &mut exec, fx);
        }
        info!(service = %self.name, event = "actor_stopped", state = machine.state().as_str());
    }

    /// Publishes the status if it changed, executes effects in order
    /// (probe re-reads feed back into the machine), then publishes again.
    ///
    /// The first publish comes before the effects: the held connections
    /// wait on the status, and an observer's work (the `Ready` event
    /// persists the learned start time with an fsync, slow on an SD card)
    /// must not delay their forward.
    fn apply(&self, machine: &mut Machine, exec: &mut Exec, fx: Vec<Effect>) {
        self.publish(machine);
        let mut queue: VecDeque<Effect> = fx.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Notify(event) => self.observer.on_event(&self.name, &event),
                Effect::Steer(mode) => {
                    exec.steered = Some(self.steering.set_mode(&self.name, mode));
                }
                Effect::Run(op) => {
                    if matches!(op, Op::Start { .. }) {
                        crate::test_hooks::panic_point(crate::test_hooks::Site::Service);
                    }
                    exec.op = Some(self.op_future(op, exec.steered.take()));
                }
                Effect::CancelOp => exec.op = None,
                Effect::Schedule(at) => exec.timer = Some(at),
                Effect::CancelTimer => exec.timer = None,
                Effect::CheckIdle => {
                    let more = machine.handle(Input::Tick(self.read_probe()), Instant::now());
                    queue.extend(more);
                }
                Effect::ConfirmIdle => {
                    let input = Input::IdleConfirm(self.read_probe());
                    queue.extend(machine.handle(input, Instant::now()));
                }
            }
        }
        self.publish(machine);
    }

    /// Sends the machine's status to watchers if it changed, and tells
    /// the observer of a state entered without a lifecycle step (to or
    /// from `unknown`: an adoption, Docker lost).
    fn publish(&self, machine: &Machine) {
        let status = machine.status();
        let mut unannounced = None;
        self.status_tx.send_if_modified(|cur| {
            if *cur == status {
                false
            } else {
                let (was, now) = (cur.state.name(), status.state.name());
                let adopted = was == StateName::Unknown
                    && matches!(now, StateName::Stopped | StateName::Hibernated);
                let lost = was != now && now == StateName::Unknown;
                if adopted || lost {
                    unannounced = Some(now);
                }
                *cur = status;
                true
            }
        });
        if let Some(state) = unannounced {
            self.observer.on_unannounced(&self.name, state);
        }
    }

    /// The kernel's last-activity stamp only, at the idle deadline. Open
    /// connections read as 0 here: counting them walks the container's
    /// `/proc/<pid>/net/tcp*`, which under load holds thousands of rows
    /// (TIME_WAIT included) and cost the agent about a tenth of a core on a
    /// warm service (`cargo xtask bench warm`). A tick that finds the
    /// service due asks for [`Effect::ConfirmIdle`], which reads them.
    fn read_activity(&self) -> Activity {
        Activity {
            last_activity: self.probe.last_activity(&self.name).map(Instant::from_std),
            open_connections: 0,
        }
    }

    /// Everything the idle decision uses, connection count included.
    fn read_probe(&self) -> Activity {
        Activity {
            last_activity: self.probe.last_activity(&self.name).map(Instant::from_std),
            open_connections: self.probe.open_connections(&self.name),
        }
    }

    /// The future of `op`; a Docker call waits for `steered` first (the
    /// steering change the machine asked for just before it).
    fn op_future(&self, op: Op, steered: Option<Steered>) -> OpFuture {
        let rt = Arc::clone(&self.runtime);
        let name = Arc::clone(&self.name);
        let steered = async move {
            if let Some(steered) = steered {
                // A dropped sender means the steering is gone (shutdown).
                let _ = steered.await;
            }
        };
        match op {
            Op::Start { timeout } => Box::pin(async move {
                steered.await;
                let work = async {
                    rt.start(&name).await?;
                    rt.wait_ready(&name).await
                };
                OpOutcome::Ready(bounded(timeout, work).await.map_err(start_failure))
            }),
            Op::WaitReady { timeout } => Box::pin(async move {
                steered.await;
                let ready = bounded(timeout, rt.wait_ready(&name)).await;
                OpOutcome::Ready(ready.map_err(start_failure))
            }),
            Op::Stop => Box::pin(async move {
                steered.await;
                OpOutcome::Stopped(rt.stop(&name).await.map_err(|e| e.to_string()))
            }),
            Op::Hibernate => Box::pin(async move {
                OpOutcome::Hibernated(rt.hibernate(&name).await.map_err(|e| e.to_string()))
            }),
            Op::Thaw { timeout } => Box::pin(async move {
                let thawed = bounded(timeout, rt.thaw(&name)).await;
                OpOutcome::Thawed(thawed.map_err(|e| e.to_string()))
            }),
            Op::Observe => Box::pin(async move {
                OpOutcome::Observed(rt.observe(&name).await.map_err(|e| e.to_string()))
            }),
            Op::HandBack => {
                // Asked now, in effect order; only the wait is polled later.
                let done = self.steering.hand_back(&self.name);
                Box::pin(async move {
                    // A dropped sender means the steering is gone (shutdown).
                    let _ = done.await;
                    OpOutcome::HandedBack
                })
            }
        }
    }
}

/// Runs `work` under `timeout`, a timeout being one more error.
async fn bounded(
    timeout: Duration,
    work: impl Future<Output = Result<(), ServiceError>>,
) -> Result<(), ServiceError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ServiceError::StartTimeout(timeout)),
    }
}

/// What the machine needs to know of a failed start.
fn start_failure(e: ServiceError) -> StartFailure {
    StartFailure {
        docker_unreachable: matches!(e, ServiceError::Unreachable(_)),
        reason: e.to_string(),
    }
}

/// Resolves with the in-flight operation's outcome, or never if none.
async fn next_outcome(op: &mut Option<OpFuture>) -> OpOutcome {
    match op {
        Some(fut) => fut.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever if no timer is armed.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
