//! The soak's faults: their kinds, each one's window (from its injection
//! until the system should have recovered; client failures inside it are
//! explained by it, failures outside every window are bugs), and the
//! schedule that picks them from the run's seed. The injections are in
//! `soak_inject.rs`.

use std::time::Duration;

use crate::soak_rng::Rng;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A changed, valid config file and SIGHUP.
    ReloadValid,
    /// An invalid config file and SIGHUP (then the valid one again).
    ReloadInvalid,
    /// `docker kill` of a running container of a ready service.
    DockerKill,
    /// The labelled container removed and created again with changed
    /// `autostop.*` labels.
    LabelChurn,
    /// `autostop stop` of a ready service.
    ManualStop,
    /// `POST …/start` of a sleeping service.
    ManualStart,
    /// `autostop hold` of a ready service past its idle timeout, then
    /// `POST …/release`.
    HoldRelease,
    /// `autostop set-timeout` of `dyn`.
    SetTimeout,
    /// SIGKILL of the agent, and a new agent started.
    AgentKill,
    /// The machine's dockerd stopped and started again.
    DockerdRestart,
}

impl FaultKind {
    /// Every kind, in the order the window table is printed.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::ReloadValid,
        FaultKind::ReloadInvalid,
        FaultKind::DockerKill,
        FaultKind::LabelChurn,
        FaultKind::ManualStop,
        FaultKind::ManualStart,
        FaultKind::HoldRelease,
        FaultKind::SetTimeout,
        FaultKind::AgentKill,
        FaultKind::DockerdRestart,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ReloadValid => "reload-valid",
            FaultKind::ReloadInvalid => "reload-invalid",
            FaultKind::DockerKill => "docker-kill",
            FaultKind::LabelChurn => "label-churn",
            FaultKind::ManualStop => "manual-stop",
            FaultKind::ManualStart => "manual-start",
            FaultKind::HoldRelease => "hold-release",
            FaultKind::SetTimeout => "set-timeout",
            FaultKind::AgentKill => "agent-kill",
            FaultKind::DockerdRestart => "dockerd-restart",
        }
    }

    /// The longest its window may last (from the injection); `None`: the
    /// fault has no window, clients must never notice it.
    pub fn cap(self) -> Option<Duration> {
        match self {
            FaultKind::DockerKill => Some(Duration::from_secs(60)),
            FaultKind::LabelChurn | FaultKind::ManualStop => Some(Duration::from_secs(30)),
            FaultKind::AgentKill => Some(Duration::from_secs(60)),
            FaultKind::DockerdRestart => Some(Duration::from_secs(150)),
            FaultKind::ReloadValid
            | FaultKind::ReloadInvalid
            | FaultKind::ManualStart
            | FaultKind::HoldRelease
            | FaultKind::SetTimeout => None,
        }
    }

    /// What its window is, for the printed table.
    pub fn window_rule(self) -> &'static str {
        match self {
            FaultKind::DockerKill => {
                "from the kill until the service is seen ready again (its next cold start)"
            }
            FaultKind::LabelChurn => {
                "from the removal until the agent lists `lbl` with the new labels"
            }
            FaultKind::ManualStop => {
                "from the stop until the service is seen stopped (or starting again)"
            }
            FaultKind::AgentKill => {
                "from the SIGKILL until the new agent answers and has adopted every service"
            }
            FaultKind::DockerdRestart => {
                "from dockerd's stop until it answers again and the agent has adopted every service"
            }
            FaultKind::ReloadValid => "none: a reload must be invisible to clients",
            FaultKind::ReloadInvalid => "none: the running config stays in force",
            FaultKind::ManualStart => "none: an early start hurts nobody",
            FaultKind::HoldRelease => "none: a hold only keeps a service up",
            FaultKind::SetTimeout => "none: a new idle timeout hurts nobody",
        }
    }

    /// Its share when picked at random after the first round.
    fn weight(self) -> u64 {
        match self {
            FaultKind::ReloadValid | FaultKind::DockerKill => 3,
            FaultKind::ReloadInvalid
            | FaultKind::LabelChurn
            | FaultKind::ManualStop
            | FaultKind::ManualStart => 2,
            FaultKind::HoldRelease
            | FaultKind::SetTimeout
            | FaultKind::AgentKill
            | FaultKind::DockerdRestart => 1,
        }
    }

    /// Whether it replaces the agent or Docker (not injected while the
    /// agent's footprint is being compared).
    pub fn restarts_something(self) -> bool {
        matches!(self, FaultKind::AgentKill | FaultKind::DockerdRestart)
    }
}

/// Which fault comes next: first every enabled kind once, in a random
/// order (so even a short run injects each; a kind that could not be
/// injected stays owed), then weighted picks.
#[derive(Debug)]
pub struct Schedule {
    rng: Rng,
    kinds: Vec<FaultKind>,
    /// Kinds not injected yet, the next one last.
    owed: Vec<FaultKind>,
}

impl Schedule {
    /// A schedule over `kinds` from `rng`.
    pub fn new(mut rng: Rng, kinds: &[FaultKind]) -> Self {
        let mut owed = kinds.to_vec();
        rng.shuffle(&mut owed);
        Self {
            rng,
            kinds: kinds.to_vec(),
            owed,
        }
    }

    /// Whether every kind has been injected once.
    pub fn first_round_done(&self) -> bool {
        self.owed.is_empty()
    }

    /// The kinds not injected yet.
    pub fn owed(&self) -> &[FaultKind] {
        &self.owed
    }

    /// The next kind: an owed one while any is, else a weighted pick;
    /// with `quiet_agent`, never one that restarts the agent or Docker
    /// (unless it is owed).
    pub fn next(&mut self, quiet_agent: bool) -> FaultKind {
        if let Some(kind) = self.owed.last() {
            return *kind;
        }
        let allowed: Vec<FaultKind> = self
            .kinds
            .iter()
            .copied()
            .filter(|k| !(quiet_agent && k.restarts_something()))
            .collect();
        let weights: Vec<u64> = allowed.iter().map(|k| k.weight()).collect();
        allowed
            .get(self.rng.weighted(&weights))
            .copied()
            .unwrap_or(FaultKind::ReloadValid)
    }

    /// Records how `kind` went: injected, it is no longer owed; not, it
    /// moves to the back of the owed ones.
    pub fn done(&mut self, kind: FaultKind, injected: bool) {
        if let Some(at) = self.owed.iter().position(|k| *k == kind) {
            self.owed.remove(at);
            if !injected {
                self.owed.insert(0, kind);
            }
        }
    }

    /// The pause before the next fault.
    pub fn gap(&mut self) -> Duration {
        self.rng
            .between(Duration::from_secs(3), Duration::from_secs(10))
    }

    /// The generator, for the injections' own choices.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_round_hands_out_every_kind_once_then_respects_quiet() {
        let kinds = FaultKind::ALL;
        let mut schedule = Schedule::new(Rng::new(3), &kinds);
        let first = schedule.next(true);
        schedule.done(first, false);
        assert_eq!(
            schedule.owed().len(),
            kinds.len(),
            "not injected: still owed"
        );
        let mut seen: Vec<&str> = (0..kinds.len())
            .map(|_| {
                let kind = schedule.next(true);
                schedule.done(kind, true);
                kind.name()
            })
            .collect();
        assert_eq!(seen.last(), Some(&first.name()), "owed again, last");
        seen.sort_unstable();
        let mut all: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        all.sort_unstable();
        assert_eq!(seen, all);
        assert!(schedule.first_round_done());
        for _ in 0..500 {
            assert!(!schedule.next(true).restarts_something());
        }
        assert!((0..500).any(|_| schedule.next(false).restarts_something()));
    }

    #[test]
    fn only_faults_clients_may_notice_have_windows() {
        for kind in FaultKind::ALL {
            let visible = matches!(
                kind,
                FaultKind::DockerKill
                    | FaultKind::LabelChurn
                    | FaultKind::ManualStop
                    | FaultKind::AgentKill
                    | FaultKind::DockerdRestart
            );
            assert_eq!(kind.cap().is_some(), visible, "{}", kind.name());
        }
    }
}
