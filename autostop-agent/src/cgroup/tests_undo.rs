//! Recorded before it is changed, undone by whoever comes next: v1 reclaim
//! killed at every write, cancelled, refused; undo of a gone, recreated or
//! foreign cgroup; the real directory's lock and writes.

#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::tests::{MemJournal, SimV1, NEVER, ORIGINAL_LIMIT, SIM_DIR};
use super::*;

const MIB: u64 = 1 << 20;

fn saved(instance: u64) -> SavedLimits {
    SavedLimits {
        dir: PathBuf::from(SIM_DIR),
        instance,
        limit_in_bytes: ORIGINAL_LIMIT.parse().expect("number"),
        swappiness: 60,
    }
}

/// How many cgroup writes a whole reclaim of 300 MiB makes.
fn writes_of_a_whole_reclaim() -> usize {
    let sim = SimV1::new(300 * MIB, 0);
    let journal = MemJournal::new(&sim);
    reclaim(CgroupVersion::V1, &sim, &journal, &NEVER).expect("reclaim");
    let n = sim.writes.borrow().len();
    n
}

#[test]
fn v1_reclaim_killed_at_any_write_is_undone_by_the_next_one() {
    let total = writes_of_a_whole_reclaim();
    assert!(
        total >= 6,
        "swappiness, a few steps, limit and swappiness back"
    );
    for killed in 0..total {
        let sim = SimV1::new(300 * MIB, 0);
        sim.killed_at.set(Some(killed));
        let journal = MemJournal::new(&sim);
        let died = catch_unwind(AssertUnwindSafe(|| {
            reclaim(CgroupVersion::V1, &sim, &journal, &NEVER)
        }));
        assert!(died.is_err(), "killed before write {killed}");
        let record = journal
            .pending()
            .unwrap_or_else(|| panic!("killed before write {killed}: no record"));
        assert_eq!(record, saved(1), "the originals, not a lowered value");
        // The next agent.
        sim.killed_at.set(None);
        let undone = undo_with(&sim, &record, Duration::ZERO).expect("undo");
        assert!(matches!(undone, Undo::Restored { .. }), "{undone:?}");
        assert_eq!(
            sim.file("memory.limit_in_bytes"),
            ORIGINAL_LIMIT,
            "killed at {killed}"
        );
        assert_eq!(sim.file("memory.swappiness"), "60", "killed at {killed}");
        // Undone twice (killed before the record was cleared): nothing more.
        let again = undo_with(&sim, &record, Duration::ZERO).expect("undo again");
        assert_eq!(
            again,
            Undo::Restored {
                limit: false,
                swappiness: false
            }
        );
    }
}

#[test]
fn v1_a_pending_record_is_put_back_before_a_new_reclaim_reads_the_limits() {
    // An agent killed mid-reclaim left the limit lowered and its record.
    let sim = SimV1::new(300 * MIB, 0);
    sim.killed_at.set(Some(3));
    let journal = MemJournal::new(&sim);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        reclaim(CgroupVersion::V1, &sim, &journal, &NEVER)
    }));
    assert_ne!(sim.file("memory.limit_in_bytes"), ORIGINAL_LIMIT);
    sim.killed_at.set(None);
    // The next reclaim (same record store) records the originals, not the
    // lowered values it finds, and ends with them in place.
    let report = reclaim(CgroupVersion::V1, &sim, &journal, &NEVER).expect("reclaim");
    assert!(report.after.resident <= MIN_RESIDENT);
    assert_eq!(journal.pending(), None);
    assert_eq!(sim.file("memory.limit_in_bytes"), ORIGINAL_LIMIT);
    assert_eq!(sim.file("memory.swappiness"), "60");
}

#[test]
fn v1_nothing_is_changed_when_the_record_cannot_be_made() {
    let sim = SimV1::new(300 * MIB, 0);
    let mut journal = MemJournal::new(&sim);
    journal.refuse = Some("disk full");
    let err = reclaim(CgroupVersion::V1, &sim, &journal, &NEVER).expect_err("no record");
    assert!(matches!(err, CgroupError::NotRecorded { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(sim.writes.borrow().is_empty(), "{:?}", sim.writes.borrow());
}

#[test]
fn v1_another_process_holding_the_lock_changes_nothing() {
    let sim = SimV1::new(300 * MIB, 0);
    sim.busy.set(true);
    let journal = MemJournal::new(&sim);
    let err = reclaim(CgroupVersion::V1, &sim, &journal, &NEVER).expect_err("busy");
    assert!(matches!(err, CgroupError::Busy(_)), "{err}");
    assert!(sim.writes.borrow().is_empty());
    assert_eq!(journal.pending(), None);
}

#[test]
fn v1_a_cancelled_reclaim_stops_between_steps_and_puts_the_limits_back() {
    static CANCEL: AtomicBool = AtomicBool::new(false);
    let mut sim = SimV1::new(300 * MIB, 0);
    // Cancelled once the first step (write 1, after swappiness) is done.
    sim.cancel_after = Some((1, &CANCEL));
    let journal = MemJournal::new(&sim);
    let report = reclaim(CgroupVersion::V1, &sim, &journal, &CANCEL).expect("reclaim");
    assert!(report.cancelled);
    let writes = sim.writes.borrow();
    let steps = writes
        .iter()
        .filter(|(f, v)| f == "memory.limit_in_bytes" && v != ORIGINAL_LIMIT)
        .count();
    assert_eq!(steps, 1, "no step after the cancel: {writes:?}");
    assert_eq!(sim.file("memory.limit_in_bytes"), ORIGINAL_LIMIT);
    assert_eq!(sim.file("memory.swappiness"), "60");
    assert_eq!(journal.pending(), None);
}

#[test]
fn undo_of_a_gone_or_recreated_cgroup_writes_nothing() {
    let sim = SimV1::new(300 * MIB, 0);
    sim.files
        .borrow_mut()
        .insert("memory.limit_in_bytes".into(), (8 * MIB).to_string());
    // Restarted or recreated under the same path: another inode.
    sim.instance.set(2);
    assert_eq!(
        undo_with(&sim, &saved(1), Duration::ZERO).expect("undo"),
        Undo::Replaced
    );
    // Recorded under another directory.
    let mut elsewhere = saved(2);
    elsewhere.dir = PathBuf::from("/sys/fs/cgroup/memory/docker/other");
    assert_eq!(
        undo_with(&sim, &elsewhere, Duration::ZERO).expect("undo"),
        Undo::Replaced
    );
    sim.gone.set(true);
    assert_eq!(
        undo_with(&sim, &saved(2), Duration::ZERO).expect("undo"),
        Undo::Gone
    );
    assert!(sim.writes.borrow().is_empty(), "{:?}", sim.writes.borrow());
}

#[test]
fn undo_only_raises_the_limit_and_resets_only_the_reclaims_swappiness() {
    // Someone else raised the limit and set swappiness since: left alone.
    let sim = SimV1::new(300 * MIB, 0);
    sim.files
        .borrow_mut()
        .insert("memory.swappiness".into(), "30".into());
    let mut record = saved(1);
    record.limit_in_bytes = 512 * MIB;
    assert_eq!(
        undo_with(&sim, &record, Duration::ZERO).expect("undo"),
        Undo::Restored {
            limit: false,
            swappiness: false
        }
    );
    assert!(sim.writes.borrow().is_empty());
    // Still lowered and at the reclaim's swappiness: both back.
    sim.files
        .borrow_mut()
        .insert("memory.swappiness".into(), "100".into());
    sim.files
        .borrow_mut()
        .insert("memory.limit_in_bytes".into(), (4 * MIB).to_string());
    assert_eq!(
        undo_with(&sim, &record, Duration::ZERO).expect("undo"),
        Undo::Restored {
            limit: true,
            swappiness: true
        }
    );
    assert_eq!(sim.file("memory.limit_in_bytes"), (512 * MIB).to_string());
    assert_eq!(sim.file("memory.swappiness"), "60");
}

#[test]
fn undo_refuses_a_record_that_names_no_memory_cgroup() {
    for dir in [
        "/etc",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/memory/../../../etc",
        "/sys/fs/cgroup/memoryx/docker",
        "docker/abc",
    ] {
        let record = SavedLimits {
            dir: PathBuf::from(dir),
            ..saved(1)
        };
        let err = undo(&record, Duration::ZERO).expect_err(dir);
        assert!(matches!(err, CgroupError::NotACgroup(_)), "{dir}: {err}");
    }
    assert!(is_memory_cgroup_dir(std::path::Path::new(
        "/sys/fs/cgroup/memory/docker/abc"
    )));
}

#[test]
fn a_directory_lock_is_exclusive_and_knows_its_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let knobs = DirKnobs(dir.path().to_path_buf());
    let held = knobs.lock(Duration::ZERO).expect("lock");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.path()).expect("stat"));
    assert_eq!(held.instance, inode);
    let err = knobs
        .lock(Duration::from_millis(120))
        .expect_err("held by another open file");
    assert!(matches!(err, CgroupError::Busy(_)), "{err}");
    drop(held);
    knobs.lock(Duration::ZERO).expect("free again");
    // A missing directory is a gone cgroup.
    let gone = DirKnobs(dir.path().join("gone"));
    let record = SavedLimits {
        dir: gone.dir(),
        ..saved(inode)
    };
    assert_eq!(
        undo_with(&gone, &record, Duration::ZERO).expect("undo"),
        Undo::Gone
    );
}

#[test]
fn a_knob_write_never_creates_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let knobs = DirKnobs(dir.path().to_path_buf());
    let err = knobs
        .write("memory.limit_in_bytes", "1")
        .expect_err("no such file");
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
    assert!(!dir.path().join("memory.limit_in_bytes").exists());
}
