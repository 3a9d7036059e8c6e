//! The cgroup module without root: `/proc/<pid>/cgroup` and meminfo
//! parsing, v1 reclaim against a simulated kernel, v2 against a fake tree.

#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;

const MIB: u64 = 1 << 20;

#[test]
fn finds_the_memory_cgroup_on_v1_hybrid_and_v2() {
    let root = Path::new("/sys/fs/cgroup");
    let v1 = "12:cpuset:/docker/abc\n9:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/system.slice/docker.service\n";
    assert_eq!(
        parse_proc_cgroup(v1, root),
        Some(MemoryCgroup {
            dir: PathBuf::from("/sys/fs/cgroup/memory/docker/abc"),
            version: CgroupVersion::V1,
        })
    );
    let v2 = "0::/system.slice/docker-abc.scope\n";
    assert_eq!(
        parse_proc_cgroup(v2, root),
        Some(MemoryCgroup {
            dir: PathBuf::from("/sys/fs/cgroup/system.slice/docker-abc.scope"),
            version: CgroupVersion::V2,
        })
    );
    let combined = "4:cpu,memory:/x\n";
    assert_eq!(
        parse_proc_cgroup(combined, root).map(|c| c.dir),
        Some(PathBuf::from("/sys/fs/cgroup/memory/x"))
    );
    assert_eq!(parse_proc_cgroup("3:cpu:/docker/abc\n", root), None);
}

#[test]
fn reads_free_swap() {
    let meminfo =
        "MemTotal:        8000000 kB\nSwapTotal:       1048572 kB\nSwapFree:         524288 kB\n";
    assert_eq!(parse_swap_free(meminfo), Some(512 * MIB));
    assert_eq!(parse_swap_free("MemTotal: 1 kB\n"), None);
}

/// cgroup v1 as the kernel behaves: lowering the limit pushes usage down to
/// it, into swap, as far as `unreclaimable`; below that the write fails
/// with `EBUSY` after reclaiming what it could.
pub(super) struct SimV1 {
    pub files: RefCell<BTreeMap<String, String>>,
    pub usage: RefCell<u64>,
    pub swap: RefCell<u64>,
    pub unreclaimable: u64,
    /// Every write, in order.
    pub writes: RefCell<Vec<(String, String)>>,
    /// A write to this file fails with EACCES.
    pub broken: Option<&'static str>,
    /// The directory's inode (a recreated cgroup has another).
    pub instance: Cell<u64>,
    /// The directory is gone: every call fails with ENOENT.
    pub gone: Cell<bool>,
    /// Another process holds the lock.
    pub busy: Cell<bool>,
    /// The write with this index (0 = the first) panics before it does
    /// anything: the agent killed right there.
    pub killed_at: Cell<Option<usize>>,
    /// Set once the write with this index is done.
    pub cancel_after: Option<(usize, &'static AtomicBool)>,
}

pub(super) const ORIGINAL_LIMIT: &str = "9223372036854771712";
pub(super) const SIM_DIR: &str = "/sys/fs/cgroup/memory/docker/sim";

impl SimV1 {
    pub(super) fn new(usage: u64, unreclaimable: u64) -> Self {
        let files = [
            ("memory.limit_in_bytes", ORIGINAL_LIMIT),
            ("memory.swappiness", "60"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        SimV1 {
            files: RefCell::new(files),
            usage: RefCell::new(usage),
            swap: RefCell::new(0),
            unreclaimable,
            writes: RefCell::new(Vec::new()),
            broken: None,
            instance: Cell::new(1),
            gone: Cell::new(false),
            busy: Cell::new(false),
            killed_at: Cell::new(None),
            cancel_after: None,
        }
    }

    pub(super) fn file(&self, name: &str) -> String {
        self.files.borrow()[name].clone()
    }

    fn enoent(name: &str) -> CgroupError {
        CgroupError::Io {
            path: name.into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }
    }
}

impl Knobs for SimV1 {
    fn dir(&self) -> PathBuf {
        PathBuf::from(SIM_DIR)
    }

    fn read(&self, name: &str) -> Result<String, CgroupError> {
        if self.gone.get() {
            return Err(Self::enoent(name));
        }
        match name {
            "memory.usage_in_bytes" => Ok(self.usage.borrow().to_string()),
            "memory.stat" => Ok(format!(
                "cache 0\nrss {}\nswap {}\n",
                self.usage.borrow(),
                self.swap.borrow()
            )),
            _ => self
                .files
                .borrow()
                .get(name)
                .cloned()
                .ok_or_else(|| CgroupError::Io {
                    path: name.into(),
                    source: std::io::ErrorKind::NotFound.into(),
                }),
        }
    }

    fn write(&self, name: &str, value: &str) -> Result<(), CgroupError> {
        let index = self.writes.borrow().len();
        if self.killed_at.get() == Some(index) {
            panic!("killed before write {index}");
        }
        if self.gone.get() {
            return Err(Self::enoent(name));
        }
        self.writes
            .borrow_mut()
            .push((name.to_owned(), value.to_owned()));
        if let Some((after, cancel)) = self.cancel_after {
            if index == after {
                cancel.store(true, Ordering::Release);
            }
        }
        let fail = |errno| CgroupError::Io {
            path: name.into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        if self.broken == Some(name) {
            return Err(fail(libc::EACCES));
        }
        if name == "memory.limit_in_bytes" {
            let limit: u64 = value.parse().map_err(|_| fail(libc::EINVAL))?;
            let mut usage = self.usage.borrow_mut();
            if limit < *usage {
                let floor = limit.max(self.unreclaimable);
                *self.swap.borrow_mut() += *usage - floor;
                *usage = floor;
                if limit < self.unreclaimable {
                    return Err(fail(libc::EBUSY));
                }
            }
        }
        self.files
            .borrow_mut()
            .insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    fn lock(&self, _wait: Duration) -> Result<CgroupLock, CgroupError> {
        if self.gone.get() {
            return Err(Self::enoent(SIM_DIR));
        }
        if self.busy.get() {
            return Err(CgroupError::Busy(PathBuf::from(SIM_DIR)));
        }
        Ok(CgroupLock::simulated(self.instance.get()))
    }
}

/// The state file's part in a reclaim, in memory: the record, and how many
/// cgroup writes there were when it was made.
pub(super) struct MemJournal<'a> {
    pub sim: &'a SimV1,
    pub saved: RefCell<Option<SavedLimits>>,
    /// `sim.writes.len()` at each record.
    pub recorded_at: RefCell<Vec<usize>>,
    /// `record` fails with this.
    pub refuse: Option<&'static str>,
}

impl<'a> MemJournal<'a> {
    pub(super) fn new(sim: &'a SimV1) -> Self {
        MemJournal {
            sim,
            saved: RefCell::new(None),
            recorded_at: RefCell::new(Vec::new()),
            refuse: None,
        }
    }
}

impl Journal for MemJournal<'_> {
    fn pending(&self) -> Option<SavedLimits> {
        self.saved.borrow().clone()
    }

    fn record(&self, saved: &SavedLimits) -> Result<(), String> {
        if let Some(reason) = self.refuse {
            return Err(reason.to_owned());
        }
        self.recorded_at
            .borrow_mut()
            .push(self.sim.writes.borrow().len());
        *self.saved.borrow_mut() = Some(saved.clone());
        Ok(())
    }

    fn restored(&self, saved: &SavedLimits) {
        let mut kept = self.saved.borrow_mut();
        if kept.as_ref() == Some(saved) {
            *kept = None;
        }
    }
}

pub(super) static NEVER: AtomicBool = AtomicBool::new(false);

#[test]
fn v1_reclaim_pushes_memory_to_swap_and_puts_the_limits_back() {
    let sim = SimV1::new(300 * MIB, 0);
    let journal = MemJournal::new(&sim);
    let report = reclaim(CgroupVersion::V1, &sim, &journal, &NEVER).expect("reclaim");
    assert_eq!(report.before.resident, 300 * MIB);
    assert!(report.after.resident <= MIN_RESIDENT, "{report:?}");
    assert!(report.after.resident * 10 <= report.before.resident);
    assert_eq!(report.after.swap, 300 * MIB - report.after.resident);
    assert!(!report.stopped_early);
    assert_eq!(
        *journal.recorded_at.borrow(),
        vec![0],
        "recorded before the first write"
    );
    assert_eq!(journal.pending(), None, "cleared once back");
    let files = sim.files.borrow();
    assert_eq!(files["memory.limit_in_bytes"], "9223372036854771712");
    assert_eq!(files["memory.swappiness"], "60");
    let writes = sim.writes.borrow();
    assert_eq!(writes[0], ("memory.swappiness".into(), "100".into()));
    let steps: Vec<u64> = writes
        .iter()
        .filter(|(f, v)| f == "memory.limit_in_bytes" && v.len() < 19)
        .map(|(_, v)| v.parse().expect("number"))
        .collect();
    assert!(
        steps.windows(2).all(|w| w[1] < w[0]),
        "steps go down: {steps:?}"
    );
    assert!(
        steps.iter().all(|s| s % 4096 == 0),
        "page-aligned: {steps:?}"
    );
}

#[test]
fn v1_reclaim_stops_at_ebusy_and_still_restores() {
    let sim = SimV1::new(300 * MIB, 40 * MIB);
    let journal = MemJournal::new(&sim);
    let report = reclaim(CgroupVersion::V1, &sim, &journal, &NEVER).expect("EBUSY is not an error");
    assert!(report.stopped_early);
    assert_eq!(report.after.resident, 40 * MIB);
    assert_eq!(
        sim.files.borrow()["memory.limit_in_bytes"],
        "9223372036854771712"
    );
    assert_eq!(sim.files.borrow()["memory.swappiness"], "60");
}

#[test]
fn v1_reclaim_failure_is_reported_after_restoring_swappiness() {
    let mut sim = SimV1::new(300 * MIB, 0);
    sim.broken = Some("memory.limit_in_bytes");
    let journal = MemJournal::new(&sim);
    let err = reclaim(CgroupVersion::V1, &sim, &journal, &NEVER).expect_err("EACCES is an error");
    assert!(err.to_string().contains("memory.limit_in_bytes"), "{err}");
    assert_eq!(sim.files.borrow()["memory.swappiness"], "60");
    assert_eq!(*sim.usage.borrow(), 300 * MIB, "nothing moved");
    assert!(
        journal.pending().is_some(),
        "the limit could not be written back: the record stays for the next one"
    );
}

#[test]
fn v2_reclaim_writes_the_bytes_to_reclaim_in_a_fake_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [
        ("memory.current", "314572800\n"),
        ("memory.swap.current", "0\n"),
        ("memory.reclaim", ""),
    ] {
        std::fs::write(dir.path().join(name), text).expect("write fake file");
    }
    let cgroup = MemoryCgroup {
        dir: dir.path().to_path_buf(),
        version: CgroupVersion::V2,
    };
    assert_eq!(
        cgroup.usage().expect("usage"),
        MemoryUsage {
            resident: 300 * MIB,
            swap: 0
        }
    );
    let sim = SimV1::new(0, 0);
    let journal = MemJournal::new(&sim);
    let report = reclaim(CgroupVersion::V2, &cgroup.knobs(), &journal, &NEVER).expect("reclaim");
    assert_eq!(report.before.resident, 300 * MIB);
    let asked = std::fs::read_to_string(dir.path().join("memory.reclaim")).expect("read");
    assert_eq!(asked, (300 * MIB - MIN_RESIDENT).to_string());
    assert!(!report.stopped_early);
}

#[test]
fn v2_missing_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = SimV1::new(0, 0);
    let journal = MemJournal::new(&sim);
    let err = reclaim(
        CgroupVersion::V2,
        &DirKnobs(dir.path().to_path_buf()),
        &journal,
        &NEVER,
    )
    .expect_err("no memory.current");
    assert!(err.to_string().contains("memory.current"), "{err}");
}
