//! Kernel service indexes ([`ServiceId`]): the slot a service has in the
//! per-service BPF arrays and the value of its steering and target
//! entries. [`IdPool`] hands them out and takes them back.
//!
//! An index is reused only once the kernel has forgotten it: releasing one
//! comes with the acknowledgements of the parts that own kernel maps (the
//! steering worker removes every steering entry pointing at it, the
//! endpoint refresher every counted destination, then zeroes its
//! counters), and the index stays out of circulation until both answered.
//! Never-used indexes go first, then the one released longest ago, so a
//! late wake event for a departed service is as unlikely as possible to
//! find a new one under its index.

use std::{collections::VecDeque, fmt, time::Duration};

use tokio::sync::oneshot;

/// How long allocating waits for the kernel parts to confirm an index is
/// cleared, when no other index is free.
const CLEAR_WAIT: Duration = Duration::from_secs(10);

/// A service's kernel index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A released index whose kernel slots are being cleared.
struct Clearing {
    id: ServiceId,
    /// One acknowledgement per kernel part; a dropped sender counts as
    /// done (that part is gone, and its maps with it).
    acks: Vec<oneshot::Receiver<()>>,
}

impl Clearing {
    /// Whether every part has answered.
    fn done(&mut self) -> bool {
        self.acks
            .retain_mut(|ack| matches!(ack.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        self.acks.is_empty()
    }
}

/// Why no index could be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Every index is taken by a managed service.
    #[error("every one of the {0} kernel service slots is in use")]
    Full(u32),
    /// Indexes were released but the kernel parts have not confirmed they
    /// are cleared yet.
    #[error("no kernel service slot is cleared yet; retrying at the next change")]
    NotCleared,
}

/// The indexes `0..capacity`: fresh ones, cleared ones, and released ones
/// still being cleared.
pub struct IdPool {
    capacity: u32,
    /// The lowest index never handed out.
    next: u32,
    /// Cleared indexes, released longest ago first.
    free: VecDeque<ServiceId>,
    /// Released indexes waiting for their acknowledgements, oldest first.
    clearing: VecDeque<Clearing>,
}

impl IdPool {
    /// A pool of `capacity` indexes (the kernel arrays' size).
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            next: 0,
            free: VecDeque::new(),
            clearing: VecDeque::new(),
        }
    }

    /// Takes back `id`; it is free again once every receiver in `acks`
    /// has answered (or its sender is gone).
    pub fn release(&mut self, id: ServiceId, acks: Vec<oneshot::Receiver<()>>) {
        self.clearing.push_back(Clearing { id, acks });
    }

    /// Moves the indexes whose clearing finished to the free list.
    fn collect(&mut self) {
        let mut pending = VecDeque::with_capacity(self.clearing.len());
        while let Some(mut clearing) = self.clearing.pop_front() {
            if clearing.done() {
                self.free.push_back(clearing.id);
            } else {
                pending.push_back(clearing);
            }
        }
        self.clearing = pending;
    }

    /// An index for a new service: a never-used one, else the one freed
    /// longest ago, else (waiting up to [`CLEAR_WAIT`]) the oldest one being
    /// cleared.
    pub async fn allocate(&mut self) -> Result<ServiceId, IdError> {
        if self.next < self.capacity {
            self.next += 1;
            return Ok(ServiceId(self.next - 1));
        }
        self.collect();
        if let Some(id) = self.free.pop_front() {
            return Ok(id);
        }
        let Some(mut oldest) = self.clearing.pop_front() else {
            return Err(IdError::Full(self.capacity));
        };
        let waited = tokio::time::timeout(CLEAR_WAIT, async {
            for ack in &mut oldest.acks {
                // An error is a sender gone: that part has nothing left.
                let _ = ack.await;
            }
        })
        .await;
        if waited.is_ok() {
            return Ok(oldest.id);
        }
        // Still not cleared: it stays first in line, never reused before.
        // `done` drops the answered receivers (a finished one must not be
        // awaited again).
        tracing::warn!(index = %oldest.id, "kernel slot not cleared in time");
        let _ = oldest.done();
        self.clearing.push_front(oldest);
        Err(IdError::NotCleared)
    }

    /// How many indexes are in use or being cleared (for tests and logs).
    pub fn in_use(&self) -> u32 {
        let idle = self.free.len() + usize::try_from(self.capacity - self.next).unwrap_or(0);
        self.capacity
            .saturating_sub(u32::try_from(idle).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fresh_indexes_first_then_the_oldest_cleared_one() {
        let mut pool = IdPool::new(3);
        let a = pool.allocate().await.expect("a");
        let b = pool.allocate().await.expect("b");
        assert_eq!((a, b), (ServiceId(0), ServiceId(1)));
        let (done_a, ack_a) = oneshot::channel();
        pool.release(a, vec![ack_a]);
        // Index 2 was never used: it goes before the released 0.
        assert_eq!(pool.allocate().await, Ok(ServiceId(2)));
        let (done_b, ack_b) = oneshot::channel();
        pool.release(b, vec![ack_b]);
        done_b.send(()).expect("ack");
        done_a.send(()).expect("ack");
        // Both cleared: 0 was released first.
        assert_eq!(pool.allocate().await, Ok(ServiceId(0)));
        assert_eq!(pool.allocate().await, Ok(ServiceId(1)));
        assert_eq!(pool.allocate().await, Err(IdError::Full(3)));
        assert_eq!(pool.in_use(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_index_is_not_reused_before_every_part_cleared_it() {
        let mut pool = IdPool::new(1);
        let only = pool.allocate().await.expect("first");
        let (steering, from_steering) = oneshot::channel::<()>();
        let (counters, from_counters) = oneshot::channel::<()>();
        pool.release(only, vec![from_steering, from_counters]);
        steering.send(()).expect("ack");
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            counters.send(()).expect("ack");
        });
        // Waits for the second acknowledgement, then hands the index out.
        let began = tokio::time::Instant::now();
        assert_eq!(pool.allocate().await, Ok(only));
        assert!(began.elapsed() >= Duration::from_secs(1));
        late.await.expect("task");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_clear_refuses_rather_than_reuses() {
        let mut pool = IdPool::new(1);
        let only = pool.allocate().await.expect("first");
        let (_never, ack) = oneshot::channel::<()>();
        pool.release(only, vec![ack]);
        assert_eq!(pool.allocate().await, Err(IdError::NotCleared));
    }

    #[tokio::test]
    async fn a_part_that_is_gone_counts_as_cleared() {
        let mut pool = IdPool::new(1);
        let only = pool.allocate().await.expect("first");
        let (gone, ack) = oneshot::channel::<()>();
        drop(gone);
        pool.release(only, vec![ack]);
        assert_eq!(pool.allocate().await, Ok(only));
    }
}
