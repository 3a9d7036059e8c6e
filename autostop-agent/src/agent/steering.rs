//! [`KernelSteering`]: how the state machines, the service table and the
//! endpoint refresher ask the steering worker ([`super::steer_worker`])
//! for changes. It implements the state machine's [`Steering`] port; every
//! request is a message, applied by the worker in the order sent.
//!
//! Only the (address, port) pairs Docker publishes are ever steered or
//! redirected: a service whose bindings are not known yet (Docker not asked
//! yet, or unreachable since the agent started) steers nothing, a
//! configured port no container publishes is never steered, and neither is
//! a binding another program listens on (yielded by the port guard).

use tokio::sync::{mpsc, oneshot};

use super::ids::ServiceId;
use crate::{
    published::HostPort,
    service::{HandBack, SteerMode, Steered, Steering},
};

/// A request to the steering worker.
#[derive(Debug)]
pub(super) enum SteerRequest {
    /// Track `service` under kernel index `id`, steered, no bindings yet.
    Add {
        /// The service.
        service: String,
        /// Its kernel index.
        id: ServiceId,
    },
    /// Stop tracking `service`: its bindings go back to the stock path.
    Remove {
        /// The service.
        service: String,
    },
    /// Docker now publishes `service`'s TCP ports at `bindings`.
    Bindings {
        /// The service.
        service: String,
        /// Where its TCP ports are published.
        bindings: Vec<HostPort>,
    },
    /// The state machine asks for `mode`.
    Mode {
        /// The service.
        service: String,
        /// The mode.
        mode: SteerMode,
        /// Told once the sk_lookup side is in place.
        steered: oneshot::Sender<()>,
        /// For `Direct`: told once every binding is on the stock path.
        handed_back: Option<oneshot::Sender<()>>,
    },
    /// Told once every request sent before is applied to the maps.
    Flush {
        /// The answer.
        done: oneshot::Sender<()>,
    },
    /// These bindings of `service` belong to another program listening on
    /// them (see [`super::port_guard`]): never steered or redirected while
    /// yielded; the others are steered again as its mode asks.
    Yielded {
        /// The service.
        service: String,
        /// Its bindings another program listens on (replaces the last set).
        yielded: std::collections::BTreeSet<HostPort>,
    },
    /// Remove every entry still pointing at `id`, then say so.
    Clear {
        /// The index about to be reused.
        id: ServiceId,
        /// Told when done.
        done: oneshot::Sender<()>,
    },
}

/// The steering worker's mailbox. Cheap to clone; the worker ends once
/// every clone is dropped.
#[derive(Debug, Clone)]
pub struct KernelSteering {
    requests: mpsc::UnboundedSender<SteerRequest>,
}

impl KernelSteering {
    /// A mailbox and the receiving end the worker reads.
    pub(super) fn channel() -> (Self, mpsc::UnboundedReceiver<SteerRequest>) {
        let (requests, rx) = mpsc::unbounded_channel();
        (Self { requests }, rx)
    }

    fn send(&self, request: SteerRequest) {
        // The worker outlives every sender; a send error means shutdown.
        let _ = self.requests.send(request);
    }

    /// Starts tracking `service` under kernel index `id`. Nothing is
    /// steered until its bindings are known ([`Self::set_bindings`]);
    /// until its state machine has looked at Docker, its mode is
    /// `Steered`, so a new connection is held rather than refused.
    pub(super) fn add(&self, service: &str, id: ServiceId) {
        self.send(SteerRequest::Add {
            service: service.to_owned(),
            id,
        });
    }

    /// Stops tracking `service`: its bindings go back to the stock path.
    pub(super) fn remove(&self, service: &str) {
        self.send(SteerRequest::Remove {
            service: service.to_owned(),
        });
    }

    /// Records where Docker now publishes `service`'s TCP ports; the kernel
    /// entries of a steered or warming service move to them.
    pub(super) fn set_bindings(&self, service: &str, bindings: Vec<HostPort>) {
        self.send(SteerRequest::Bindings {
            service: service.to_owned(),
            bindings,
        });
    }

    /// Records which of `service`'s bindings another program listens on:
    /// they are un-steered at once and not steered again until a later
    /// set leaves them out.
    pub(super) fn set_yielded(&self, service: &str, yielded: std::collections::BTreeSet<HostPort>) {
        self.send(SteerRequest::Yielded {
            service: service.to_owned(),
            yielded,
        });
    }

    /// Resolves once every request sent before has reached the maps (the
    /// worker applies map changes the moment it reads them).
    pub(super) fn flushed(&self) -> oneshot::Receiver<()> {
        let (done, flushed) = oneshot::channel();
        self.send(SteerRequest::Flush { done });
        flushed
    }

    /// Asks for every steering entry of `id` to be removed; the answer
    /// comes once it is done.
    pub(super) fn clear(&self, id: ServiceId) -> oneshot::Receiver<()> {
        let (done, cleared) = oneshot::channel();
        self.send(SteerRequest::Clear { id, done });
        cleared
    }

    fn mode(
        &self,
        service: &str,
        mode: SteerMode,
        handed_back: Option<oneshot::Sender<()>>,
    ) -> Steered {
        let (steered, applied) = oneshot::channel();
        self.send(SteerRequest::Mode {
            service: service.to_owned(),
            mode,
            steered,
            handed_back,
        });
        applied
    }
}

impl Steering for KernelSteering {
    fn set_mode(&self, service: &str, mode: SteerMode) -> Steered {
        self.mode(service, mode, None)
    }

    fn hand_back(&self, service: &str) -> HandBack {
        let (done, handed_back) = oneshot::channel();
        // The hand-back's own answer says more than the steered one.
        drop(self.mode(service, SteerMode::Direct, Some(done)));
        handed_back
    }
}
