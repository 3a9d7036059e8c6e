//! The state file: round trips, savings, older files, unusable files set
//! aside, modes.

#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::fs;

use super::*;

/// Whether `notes` say a file was set aside (others say modes were
/// tightened: a tempdir is 0755).
fn set_aside_in(notes: &[String]) -> bool {
    notes.iter().any(|n| n.contains("unusable state"))
}

#[test]
fn missing_file_starts_empty_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, notes) = StateStore::open(dir.path()).expect("open");
    assert!(!set_aside_in(&notes), "{notes:?}");
    assert_eq!(store.service("web"), ServiceMemory::default());
    store.update("web", |m| {
        m.idle_timeout_override_s = Some(600);
        m.learned_start_ms = Some(1500);
    });
    store.save().expect("save");
    let (again, _) = StateStore::open(dir.path()).expect("reopen");
    assert_eq!(
        again.service("web").idle_timeout_override(),
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        again.service("web").learned_start(),
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn savings_keep_a_total_and_a_sliding_day() {
    let mut m = ServiceMemory::default();
    m.credit_saved(100.0, 1000);
    m.credit_saved(50.0, 1000);
    m.credit_saved(10.0, 1010);
    assert_eq!(m.memory_saved_byte_seconds, 160.0);
    assert_eq!(m.saved_last_24h(1010), 160.0);
    assert_eq!(m.saved_last_24h(1023), 160.0);
    // Hour 1000 leaves the window at 1024, and the file at 1025.
    assert_eq!(m.saved_last_24h(1024), 10.0);
    m.credit_saved(1.0, 1025);
    assert_eq!(m.memory_saved_by_hour.len(), 2, "hour 1000 is forgotten");
    assert_eq!(
        m.memory_saved_byte_seconds, 161.0,
        "the total never shrinks"
    );
}

#[test]
fn savings_round_trip_through_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = StateStore::open(dir.path()).expect("open");
    store.update("web", |m| {
        m.last_memory_bytes = Some(6_200_000_000);
        m.credit_saved(6.2e9 * 3600.0, 500_000);
    });
    store.save().expect("save");
    let (again, _) = StateStore::open(dir.path()).expect("reopen");
    let m = again.service("web");
    assert_eq!(m.last_memory_bytes, Some(6_200_000_000));
    assert_eq!(m.saved_last_24h(500_001), 6.2e9 * 3600.0);
}

#[test]
fn a_file_without_the_timeline_loads_and_one_with_it_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    fs::write(
        &path,
        r#"{"version":1,"services":{"web":{"learned_start_ms":1500,
            "memory_saved_byte_seconds":10.0,"memory_saved_by_hour":{"480000":10.0}}}}"#,
    )
    .expect("write");
    let (mut store, notes) = StateStore::open(dir.path()).expect("open");
    assert!(
        !set_aside_in(&notes),
        "an older file is not corrupt: {notes:?}"
    );
    assert!(store.service("web").timeline.is_empty());
    store.update("web", |m| {
        m.timeline.note(
            Transition {
                at_ms: 5,
                state: crate::service::StateName::Starting,
                cause: Some("api".into()),
            },
            None,
            Some(1500),
        );
        m.credit_saved(7.0, 480_001);
    });
    store.save().expect("save");
    let (again, _) = StateStore::open(dir.path()).expect("reopen");
    let timeline = again.service("web").timeline;
    assert_eq!(timeline.transitions.len(), 1);
    assert_eq!(timeline.saved_by_day.get(&20_000), Some(&7.0));
}

/// The files of `dir` whose name starts with `state.json.bad-`.
pub(super) fn set_aside(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.bad-")
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Opens a state whose file holds `bytes`: it starts empty, the file is
/// kept aside byte for byte, and a note says why and where.
fn opens_empty_keeping(bytes: &[u8], why: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    fs::write(&path, bytes).expect("write");
    let (store, notes) =
        StateStore::open(dir.path()).expect("an unusable file never stops the start");
    assert!(store.services().is_empty());
    let aside = set_aside(dir.path());
    assert_eq!(aside.len(), 1, "kept aside: {aside:?}");
    assert_eq!(
        fs::read(&aside[0]).expect("read aside"),
        bytes,
        "kept as it was"
    );
    assert!(!path.exists(), "moved, not copied");
    let note = notes.join("\n");
    assert!(note.contains(why), "says why ({why}): {note}");
    assert!(
        note.contains(&aside[0].display().to_string()),
        "says where: {note}"
    );
    store.save().expect("save fresh state");
    assert_eq!(
        set_aside(dir.path()).len(),
        1,
        "the saved one does not replace it"
    );
}

#[test]
fn bad_json_is_kept_aside_not_overwritten() {
    opens_empty_keeping(
        b"{\n  \"version\": 1,\n  \"services\": {oops}\n}\n",
        "line 3 column",
    );
}

#[test]
fn bytes_that_are_not_utf8_are_kept_aside() {
    // 4354d82 refused to start on this (read_to_string failed).
    opens_empty_keeping(b"{\"version\":1,\"services\":{\"w\xffb\":{}}}", "not UTF-8");
    opens_empty_keeping(&[0xc3, 0x28, 0xa0, 0xa1], "byte 0");
}

#[test]
fn a_file_over_the_cap_is_kept_aside_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    // Sparse: 64 MiB + 1 of zeros, never read.
    let file = fs::File::create(&path).expect("create");
    file.set_len(MAX_STATE_BYTES + 1).expect("grow");
    drop(file);
    let (store, notes) = StateStore::open(dir.path()).expect("open");
    assert!(store.services().is_empty());
    assert!(
        notes.join(" ").contains("more than the 64 MiB"),
        "{notes:?}"
    );
    let aside = set_aside(dir.path());
    assert_eq!(aside.len(), 1);
    assert_eq!(
        fs::metadata(&aside[0]).expect("stat").len(),
        MAX_STATE_BYTES + 1
    );
}

#[test]
fn a_directory_or_a_fifo_named_state_json_is_set_aside_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    fs::create_dir(&path).expect("mkdir");
    let (_, notes) = StateStore::open(dir.path()).expect("open");
    assert!(notes.join(" ").contains("not a regular file"), "{notes:?}");
    assert!(set_aside(dir.path())[0].is_dir());
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let (_, notes) = StateStore::open(dir.path()).expect("open");
    assert!(notes.join(" ").contains("not a regular file"), "{notes:?}");
    assert_eq!(
        set_aside(dir.path()).len(),
        2,
        "two set aside in the same second, both kept"
    );
}

#[test]
fn the_state_is_private_and_looser_modes_are_tightened_with_a_note() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("new").join("state");
    let (store, notes) = StateStore::open(&state).expect("open");
    assert!(notes.is_empty(), "{notes:?}");
    store.save().expect("save");
    assert_eq!(mode(&state), DIR_MODE);
    assert_eq!(mode(&state.join(STATE_FILE)), FILE_MODE);

    // As 4354d82 left them: 0755 and 0644.
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(state.join(STATE_FILE), fs::Permissions::from_mode(0o644)).expect("chmod");
    let (_, notes) = StateStore::open(&state).expect("reopen");
    assert_eq!(mode(&state), DIR_MODE);
    assert_eq!(mode(&state.join(STATE_FILE)), FILE_MODE);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("0755")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("0644")), "{notes:?}");
    // A tighter mode is left alone.
    fs::set_permissions(state.join(STATE_FILE), fs::Permissions::from_mode(0o400)).expect("chmod");
    let (_, notes) = StateStore::open(&state).expect("reopen");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(mode(&state.join(STATE_FILE)), 0o400);
}

#[test]
fn the_read_only_view_refuses_an_unusable_file_and_moves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    fs::write(&path, b"\xff\xfe").expect("write");
    let err = StateStore::open_read_only(dir.path()).expect_err("not UTF-8");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    assert!(err.to_string().contains(STATE_FILE), "{err}");
    assert!(path.exists());
    assert!(set_aside(dir.path()).is_empty());
}

#[test]
fn limit_records_round_trip_and_clear_only_what_they_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = StateStore::open(dir.path()).expect("open");
    let saved = SavedLimits {
        dir: PathBuf::from("/sys/fs/cgroup/memory/docker/abc"),
        instance: 4391,
        limit_in_bytes: 9_223_372_036_854_771_712,
        swappiness: 60,
    };
    store.record_limits("abc", saved.clone());
    store.save().expect("save");
    let text = fs::read_to_string(dir.path().join(STATE_FILE)).expect("read");
    assert!(text.contains("\"limits\""), "{text}");
    let (mut again, notes) = StateStore::open(dir.path()).expect("reopen");
    assert!(!set_aside_in(&notes), "{notes:?}");
    assert_eq!(again.limits().get("abc"), Some(&saved));
    let other = SavedLimits {
        instance: 1,
        ..saved.clone()
    };
    assert!(!again.clear_limits("abc", Some(&other)), "another record");
    assert!(!again.clear_limits("def", None));
    assert!(again.clear_limits("abc", Some(&saved)));
    again.save().expect("save");
    let text = fs::read_to_string(dir.path().join(STATE_FILE)).expect("read");
    assert!(!text.contains("\"limits\""), "left out while empty: {text}");
}

/// Issue #25 item 2: an override of `u64::MAX` seconds, persisted by an
/// older agent, made every restart panic at the first start. It is now
/// dropped at load, with a note, and the service keeps its other memory.
#[test]
fn out_of_range_saved_overrides_are_dropped_with_a_note() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"{"version":1,"services":{
        "huge":{"idle_timeout_override_s":18446744073709551615,"learned_start_ms":900},
        "zero":{"idle_timeout_override_s":0},
        "fine":{"idle_timeout_override_s":600}}}"#;
    fs::write(dir.path().join(STATE_FILE), text).expect("write");
    let (store, notes) = StateStore::open(dir.path()).expect("open");
    assert!(!set_aside_in(&notes), "{notes:?}");
    for name in ["huge", "zero"] {
        assert_eq!(store.service(name).idle_timeout_override_s, None, "{name}");
        assert!(
            notes.iter().any(|n| n.contains(&format!("{name:?}"))),
            "{name}: {notes:?}"
        );
    }
    assert_eq!(store.service("huge").learned_start_ms, Some(900));
    assert_eq!(
        store.service("fine").idle_timeout_override(),
        Some(Duration::from_secs(600))
    );
}
