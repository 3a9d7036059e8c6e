//! The benchmark's yardstick: the object's `calibrate_noop` classifier on
//! its own, attached to one interface's egress. `kernel.bpf_stats_enabled`
//! times every run with two clock reads; on a virtual machine those cost
//! more than a small program, so `cargo xtask bench` measures this empty
//! program beside `count_traffic` and reports both.

use autostop_common::names;
use aya::{
    programs::{tc::SchedClassifierLinkId, SchedClassifier, TcAttachType},
    Ebpf,
};

use super::{BpfError, EBPF_OBJECT};

/// The no-op classifier, loaded and attached; dropping it detaches it.
pub struct Calibration {
    /// Owns the program and its link (released on drop).
    ebpf: Ebpf,
    /// Kept so the link lives as long as this value.
    _link: SchedClassifierLinkId,
}

impl Calibration {
    /// Loads `calibrate_noop` alone and attaches it to `interface` egress.
    pub fn attach(interface: &str) -> Result<Self, BpfError> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT)?;
        let program = noop(&mut ebpf)?;
        program.load().map_err(|source| BpfError::Program {
            program: names::CALIBRATE_NOOP,
            source,
        })?;
        let link = program
            .attach(interface, TcAttachType::Egress)
            .map_err(|source| BpfError::Attach {
                program: names::CALIBRATE_NOOP,
                interface: interface.to_owned(),
                source,
            })?;
        Ok(Self { ebpf, _link: link })
    }

    /// Kernel id of the program, as listed by `bpftool prog`.
    pub fn program_id(&mut self) -> Result<u32, BpfError> {
        noop(&mut self.ebpf)?
            .info()
            .map(|info| info.id())
            .map_err(|source| BpfError::Program {
                program: names::CALIBRATE_NOOP,
                source,
            })
    }
}

fn noop(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, BpfError> {
    super::typed_program(ebpf, names::CALIBRATE_NOOP)
}
