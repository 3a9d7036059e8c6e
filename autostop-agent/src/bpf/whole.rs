//! [`Datapath`]'s own methods, for tools and tests that hold the whole
//! datapath in one value: each forwards to the part that owns the maps
//! (see the parts' modules for what they do).

use std::os::fd::AsFd;

use autostop_common::{Activity, DatapathStats};
use ipnet::IpNet;

use super::{BpfError, Datapath, ListenerSlots, Target, WakeEvents};
use crate::published::HostPort;

impl Datapath {
    /// See [`super::Classifier::attach_steering`].
    pub fn attach_steering(&mut self) -> Result<(), BpfError> {
        self.classifier.attach_steering()
    }

    /// See [`super::Classifier::detach_steering`].
    pub fn detach_steering(&mut self) -> Result<(), BpfError> {
        self.classifier.detach_steering()
    }

    /// See [`super::Classifier::steering_attached`].
    pub fn steering_attached(&self) -> bool {
        self.classifier.steering_attached()
    }

    /// See [`super::Classifier::program_id`].
    pub fn program_id(&self) -> Result<u32, BpfError> {
        self.classifier.program_id()
    }

    /// See [`super::Classifier::steering_program_id`].
    pub fn steering_program_id(&self) -> Result<u32, BpfError> {
        self.classifier.steering_program_id()
    }

    /// See [`super::Classifier::stats`].
    pub fn stats(&self) -> Result<DatapathStats, BpfError> {
        self.classifier.stats()
    }

    /// See [`super::Classifier::attach_egress`].
    pub fn attach_egress(&mut self, interface: &str) -> Result<(), BpfError> {
        self.classifier.attach_egress(interface)
    }

    /// See [`super::Classifier::detach`].
    pub fn detach(&mut self, interface: &str) -> Result<(), BpfError> {
        self.classifier.detach(interface)
    }

    /// See [`super::Classifier::attached_interfaces`].
    pub fn attached_interfaces(&self) -> impl Iterator<Item = &str> {
        self.classifier.attached_interfaces()
    }

    /// See [`super::Classifier::add_target`].
    pub fn add_target(&mut self, target: &Target, service: u32) -> Result<(), BpfError> {
        self.classifier.add_target(target, service)
    }

    /// See [`super::Classifier::remove_target`].
    pub fn remove_target(&mut self, target: &Target) -> Result<(), BpfError> {
        self.classifier.remove_target(target)
    }

    /// See [`super::Classifier::activity`].
    pub fn activity(&self, service: u32) -> Result<Activity, BpfError> {
        self.classifier.activity(service)
    }

    /// Forgets service index `service` in every map (counted destinations,
    /// counters, steered bindings) before it is given to another service.
    pub fn clear_service(&mut self, service: u32) -> Result<(), BpfError> {
        self.steering.clear_service(service)?;
        self.classifier.clear_service(service)
    }

    /// See [`super::SteeringMaps::register_listener`].
    pub fn register_listener<S: AsFd>(&mut self, listener: &S) -> Result<ListenerSlots, BpfError> {
        self.steering.register_listener(listener)
    }

    /// See [`super::SteeringMaps::unregister_listeners`].
    pub fn unregister_listeners(&mut self) -> Result<(), BpfError> {
        self.steering.unregister_listeners()
    }

    /// See [`super::SteeringMaps::steer`].
    pub fn steer(&mut self, binding: HostPort, service: u32) -> Result<(), BpfError> {
        self.steering.steer(binding, service)
    }

    /// See [`super::SteeringMaps::unsteer`].
    pub fn unsteer(&mut self, binding: HostPort) -> Result<(), BpfError> {
        self.steering.unsteer(binding)
    }

    /// See [`super::SteeringMaps::steered`].
    pub fn steered(&self) -> Result<Vec<(HostPort, u32)>, BpfError> {
        self.steering.steered()
    }

    /// See [`super::SourceFilter::set_ignored_sources`].
    pub fn set_ignored_sources(&mut self, nets: &[IpNet]) -> Result<(), BpfError> {
        self.sources.set_ignored_sources(nets)
    }

    /// See [`super::SourceFilter::ignored_sources`].
    pub fn ignored_sources(&self) -> Vec<IpNet> {
        self.sources.ignored_sources()
    }

    /// Hands out the wake event stream. There is one reader: a second call
    /// fails with [`BpfError::EventsTaken`]. Must be called inside a tokio
    /// runtime (the stream registers with its reactor).
    pub fn wake_events(&mut self) -> Result<WakeEvents, BpfError> {
        let ring = self.wake_ring.take().ok_or(BpfError::EventsTaken)?;
        WakeEvents::register(ring)
    }
}
