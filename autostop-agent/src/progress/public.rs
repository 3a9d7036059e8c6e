//! What an anonymous visitor sees of a start's steps: generic labels
//! numbered per kind, whole seconds in phase, container steps of an
//! earlier start left out, and the step a failed start was on marked
//! failed.

use tokio::time::Instant;

use super::{Phase, Progress, Step, StepKind};

/// A step as an anonymous visitor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicStep {
    /// "container 1 of 2", "required service 1 of 1".
    pub label: String,
    /// The phase.
    pub phase: Phase,
    /// Whole seconds in this phase.
    pub for_s: u64,
}

/// Where the page is, as far as steps go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStage {
    /// Not starting: no steps are shown.
    Idle,
    /// A start that entered its state at this instant: container steps
    /// recorded before it belong to an earlier start and are left out.
    Starting(Instant),
    /// The start failed: a step not done yet shows as failed.
    Failed,
    /// Ready.
    Ready,
}

/// The steps a visitor sees for `progress` at `stage`, labelled and timed
/// at `now`.
pub fn public_steps(progress: &Progress, stage: PageStage, now: Instant) -> Vec<PublicStep> {
    let stale = match stage {
        PageStage::Idle => return Vec::new(),
        PageStage::Starting(since) => progress.began.is_some_and(|b| b < since),
        PageStage::Failed | PageStage::Ready => false,
    };
    let steps: Vec<&Step> = progress
        .steps
        .iter()
        .filter(|s| !(stale && s.kind == StepKind::Container))
        .collect();
    let count = |kind| steps.iter().filter(|s| s.kind == kind).count();
    let (containers, requirements) = (count(StepKind::Container), count(StepKind::Requirement));
    let mut numbers = (0usize, 0usize);
    let mut out: Vec<PublicStep> = steps
        .iter()
        .map(|s| {
            let label = match s.kind {
                StepKind::Container => {
                    numbers.0 += 1;
                    format!("container {} of {containers}", numbers.0)
                }
                StepKind::Requirement => {
                    numbers.1 += 1;
                    format!("required service {} of {requirements}", numbers.1)
                }
            };
            PublicStep {
                label,
                phase: s.phase,
                for_s: now.saturating_duration_since(s.since).as_secs(),
            }
        })
        .collect();
    if stage == PageStage::Failed && out.iter().all(|s| s.phase != Phase::Failed) {
        // The start ended without a step failing (a timeout, a Docker
        // error): the step it was on is where it failed.
        if let Some(s) = out.iter_mut().find(|s| !s.phase.is_done()) {
            s.phase = Phase::Failed;
            s.for_s = 0;
        }
    }
    out
}

/// The one-line text of the steps: `container 1 of 2: healthy · container
/// 2 of 2: starting` (empty without steps).
pub fn summary(steps: &[PublicStep]) -> String {
    steps
        .iter()
        .map(|s| format!("{}: {}", s.label, s.phase.text()))
        .collect::<Vec<_>>()
        .join(" \u{b7} ")
}

/// How many steps are done.
pub fn done_count(steps: &[PublicStep]) -> usize {
    steps.iter().filter(|s| s.phase.is_done()).count()
}
