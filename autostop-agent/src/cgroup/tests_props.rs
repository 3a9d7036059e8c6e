//! Property tests of the parsers of kernel text: `/proc/<pid>/cgroup`,
//! `memory.stat` and `/proc/meminfo`. Any text: no panic, and whatever is
//! found stays under the cgroup root; well-formed text: the value is found.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::path::{Component, Path};

use proptest::prelude::*;

use super::*;

/// A cgroup path segment: plain names, sometimes `..` or `.`.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9_.-]{1,12}",
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
    ]
}

fn cgroup_path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..5).prop_map(|s| format!("/{}", s.join("/")))
}

/// One `/proc/<pid>/cgroup` line: `id:controllers:path`.
fn line() -> impl Strategy<Value = String> {
    (
        0u32..14,
        prop::collection::vec(
            prop_oneof![
                Just("memory"),
                Just("cpu"),
                Just("cpuset"),
                Just("name=systemd"),
                Just("pids")
            ],
            0..3,
        ),
        cgroup_path(),
    )
        .prop_map(|(id, controllers, path)| format!("{id}:{}:{path}", controllers.join(",")))
}

/// `dir` is `root` and then plain names only.
fn stays_under(dir: &Path, root: &Path) -> bool {
    dir.strip_prefix(root).is_ok_and(|rest| {
        rest.components().next().is_some()
            && rest.components().all(|c| matches!(c, Component::Normal(_)))
    })
}

proptest! {
    #[test]
    fn prop_proc_cgroup_any_text_never_panics_and_stays_under_the_root(text in any::<String>()) {
        let root = Path::new("/sys/fs/cgroup");
        if let Some(cg) = parse_proc_cgroup(&text, root) {
            prop_assert!(stays_under(&cg.dir, root), "{:?}", cg.dir);
        }
    }

    #[test]
    fn prop_proc_cgroup_lines_find_the_memory_controller(lines in prop::collection::vec(line(), 0..8)) {
        let root = Path::new("/sys/fs/cgroup");
        let text = lines.join("\n");
        let found = parse_proc_cgroup(&text, root);
        if let Some(cg) = &found {
            prop_assert!(stays_under(&cg.dir, root), "{:?}", cg.dir);
        }
        // The first line naming the memory controller decides.
        let memory = lines.iter().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == "memory").then_some(path)
        });
        if let Some(path) = memory {
            let rel = Path::new(path.trim_start_matches('/'));
            let plain = rel.components().next().is_some()
                && rel.components().all(|c| matches!(c, Component::Normal(_)));
            let expected = plain.then(|| MemoryCgroup {
                dir: root.join("memory").join(rel),
                version: CgroupVersion::V1,
            });
            prop_assert_eq!(found, expected);
        } else if let Some(cg) = found {
            prop_assert_eq!(cg.version, CgroupVersion::V2);
        }
    }

    #[test]
    fn prop_memory_stat_any_text_never_panics(text in any::<String>(), key in "[a-z_]{1,10}") {
        let _ = parse_stat_value(&text, &key);
    }

    #[test]
    fn prop_memory_stat_finds_its_key(
        before in prop::collection::vec(("[a-z_]{1,10}", any::<u64>()), 0..20),
        value in any::<u64>(),
    ) {
        let mut text: String = before
            .iter()
            .filter(|(k, _)| k != "swap")
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect();
        text.push_str(&format!("swap {value}\ntotal_swap 7\n"));
        prop_assert_eq!(parse_stat_value(&text, "swap"), Some(value));
    }

    #[test]
    fn prop_meminfo_any_text_never_panics(text in any::<String>()) {
        let _ = parse_swap_free(&text);
    }

    #[test]
    fn prop_meminfo_finds_free_swap(kib in any::<u64>(), pad in " {0,12}") {
        let text = format!("MemTotal: 1 kB\nSwapTotal: 2 kB\nSwapFree:{pad}{kib} kB\n");
        prop_assert_eq!(parse_swap_free(&text), Some(kib.saturating_mul(1024)));
    }
}
