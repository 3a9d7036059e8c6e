//! The steering worker's queue: a hand-back goes ahead of other bindings'
//! netfilter work (issue #29: a ready service waited behind other
//! services' warm-ups and stops), never ahead of work on its own bindings.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use super::{NetJob, Tracked, Worker};
use crate::{
    agent::{deps::SteerMaps, ids::ServiceId},
    bpf::BpfError,
    published::HostPort,
    service::SteerMode,
};

struct NoMaps;

impl SteerMaps for NoMaps {
    fn steer(&mut self, _: HostPort, _: u32) -> Result<(), BpfError> {
        Ok(())
    }
    fn unsteer(&mut self, _: HostPort) -> Result<(), BpfError> {
        Ok(())
    }
    fn clear_service(&mut self, _: u32) -> Result<(), BpfError> {
        Ok(())
    }
}

fn port(n: u16) -> HostPort {
    HostPort {
        addr: None,
        port: n,
    }
}

fn worker(services: &[(&str, u16)]) -> Worker {
    let services = services
        .iter()
        .zip(1..)
        .map(|(&(name, p), id)| {
            let tracked = Tracked {
                id: ServiceId(id),
                bindings: vec![port(p)],
                mode: SteerMode::Warming {
                    already_started: false,
                },
                yielded: Default::default(),
            };
            (name.to_owned(), tracked)
        })
        .collect::<HashMap<_, _>>();
    Worker {
        maps: Box::new(NoMaps),
        services,
        queue: VecDeque::new(),
    }
}

/// The queue as short labels: `warm:P`, `cool:P`, `back:P`, `notify`.
fn labels(queue: &VecDeque<NetJob>) -> Vec<String> {
    queue
        .iter()
        .map(|job| match job {
            NetJob::Warm { bindings, .. } => format!("warm:{}", bindings[0].port),
            NetJob::Cool(bindings) => format!("cool:{}", bindings[0].port),
            NetJob::HandBack { binding, .. } => format!("back:{}", binding.port),
            NetJob::Notify(_) => "notify".to_owned(),
        })
        .collect()
}

#[test]
fn a_hand_back_goes_ahead_of_other_bindings_work_not_its_own() {
    let mut w = worker(&[("a", 1), ("b", 2), ("c", 3)]);
    for p in [2, 1, 3] {
        w.queue.push_back(NetJob::Warm {
            bindings: vec![port(p)],
            already_started: false,
        });
    }
    w.queue.push_back(NetJob::Cool(vec![port(2)]));
    let (done, _heard) = oneshot::channel();
    w.set_mode("a", SteerMode::Direct, Some(done));
    // After a's own warm-up, ahead of c's warm-up and b's cool.
    assert_eq!(
        labels(&w.queue),
        ["warm:2", "warm:1", "back:1", "notify", "warm:3", "cool:2"]
    );
    // c's hand-back waits for c's warm-up only.
    let (done, _heard_c) = oneshot::channel();
    w.set_mode("c", SteerMode::Direct, Some(done));
    assert_eq!(
        labels(&w.queue),
        ["warm:2", "warm:1", "back:1", "notify", "warm:3", "back:3", "notify", "cool:2"]
    );

    // Nothing of its own queued: first in line.
    let mut fresh = worker(&[("x", 9), ("y", 8)]);
    fresh.queue.push_back(NetJob::Cool(vec![port(8)]));
    let (done, _heard_x) = oneshot::channel();
    fresh.set_mode("x", SteerMode::Direct, Some(done));
    assert_eq!(labels(&fresh.queue), ["back:9", "notify", "cool:8"]);
}
