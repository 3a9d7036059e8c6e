//! The cgroup module without root: `/proc/<pid>/cgroup` and meminfo
//! parsing, v1 reclaim against a simulated kernel, v2 against a fake tree.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
struct SimV1 {
    files: RefCell<BTreeMap<String, String>>,
    usage: RefCell<u64>,
    swap: RefCell<u64>,
    unreclaimable: u64,
    /// Every write, in order.
    writes: RefCell<Vec<(String, String)>>,
    /// A write to this file fails with EACCES.
    broken: Option<&'static str>,
}

impl SimV1 {
    fn new(usage: u64, unreclaimable: u64) -> Self {
        let files = [
            ("memory.limit_in_bytes", "9223372036854771712"),
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
        }
    }
}

impl Knobs for SimV1 {
    fn read(&self, name: &str) -> Result<String, CgroupError> {
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
        self.writes
            .borrow_mut()
            .push((name.to_owned(), value.to_owned()));
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
}

#[test]
fn v1_reclaim_pushes_memory_to_swap_and_puts_the_limits_back() {
    let sim = SimV1::new(300 * MIB, 0);
    let report = reclaim(CgroupVersion::V1, &sim).expect("reclaim");
    assert_eq!(report.before.resident, 300 * MIB);
    assert!(report.after.resident <= MIN_RESIDENT, "{report:?}");
    assert!(report.after.resident * 10 <= report.before.resident);
    assert_eq!(report.after.swap, 300 * MIB - report.after.resident);
    assert!(!report.stopped_early);
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
    let report = reclaim(CgroupVersion::V1, &sim).expect("EBUSY is not an error");
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
    let err = reclaim(CgroupVersion::V1, &sim).expect_err("EACCES is an error");
    assert!(err.to_string().contains("memory.limit_in_bytes"), "{err}");
    assert_eq!(sim.files.borrow()["memory.swappiness"], "60");
    assert_eq!(*sim.usage.borrow(), 300 * MIB, "nothing moved");
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
    let report = reclaim(CgroupVersion::V2, &cgroup.knobs()).expect("reclaim");
    assert_eq!(report.before.resident, 300 * MIB);
    let asked = std::fs::read_to_string(dir.path().join("memory.reclaim")).expect("read");
    assert_eq!(asked, (300 * MIB - MIN_RESIDENT).to_string());
    assert!(!report.stopped_early);
}

#[test]
fn v2_missing_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = reclaim(CgroupVersion::V2, &DirKnobs(dir.path().to_path_buf()))
        .expect_err("no memory.current");
    assert!(err.to_string().contains("memory.current"), "{err}");
}
