//! Property tests of loading `state.json`: any bytes, JSON of any shape and
//! near-misses of a valid file never panic nor stop the start (the file
//! loads or is kept aside byte for byte), and what the store writes loads
//! back the same.

#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::fs;

use proptest::prelude::*;

use super::*;
use crate::service::StateName;

/// A temporary directory on tmpfs when there is one: the store fsyncs
/// every write and set-aside, which on a disk makes hundreds of cases take
/// seconds.
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir")
}

/// Opens a state whose file holds `bytes`: never an error or a panic;
/// either the file loads and is left in place, or it is kept aside as it
/// was and the store starts empty.
fn open_never_fails(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempdir();
    let path = dir.path().join(STATE_FILE);
    fs::write(&path, bytes).expect("write");
    let (store, notes) = StateStore::open(dir.path())
        .map_err(|e| TestCaseError::fail(format!("the start was refused: {e}")))?;
    let aside = super::tests::set_aside(dir.path());
    if path.exists() {
        prop_assert!(aside.is_empty());
        prop_assert_eq!(fs::read(&path).expect("read"), bytes);
    } else {
        prop_assert_eq!(aside.len(), 1);
        prop_assert_eq!(fs::read(&aside[0]).expect("read aside"), bytes);
        prop_assert!(store.services().is_empty() && store.limits().is_empty());
        prop_assert!(notes.iter().any(|n| n.contains("kept as")), "{:?}", notes);
    }
    Ok(())
}

/// JSON of any shape.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("version"),
            Just("services"),
            Just("limits"),
            Just("timeline")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("version".to_owned()),
                    Just("services".to_owned()),
                    Just("limits".to_owned()),
                    Just("demands".to_owned()),
                    Just("learned_start_ms".to_owned()),
                    ".{0,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
}

fn state_name() -> impl Strategy<Value = StateName> {
    prop::sample::select(StateName::ALL.to_vec())
}

fn timeline() -> impl Strategy<Value = Timeline> {
    (
        prop::collection::vec(
            (any::<i64>(), state_name(), prop::option::of(".{0,12}")).prop_map(
                |(at_ms, state, cause)| Transition {
                    at_ms,
                    state,
                    cause,
                },
            ),
            0..4,
        ),
        prop::collection::vec(
            (
                any::<i64>(),
                any::<u64>(),
                prop::option::of(any::<u64>()),
                ".{0,8}",
                any::<bool>(),
            )
                .prop_map(|(at_ms, took_ms, estimate_ms, trigger, ok)| StartRecord {
                    at_ms,
                    took_ms,
                    estimate_ms,
                    trigger,
                    ok,
                }),
            0..3,
        ),
        prop::collection::btree_map(any::<u64>(), finite(), 0..3),
    )
        .prop_map(|(transitions, starts, saved_by_day)| {
            let mut t = Timeline::default();
            t.transitions = transitions;
            t.starts = starts;
            t.saved_by_day = saved_by_day;
            t
        })
}

/// What the agent may write for one service. Settings stay within the
/// bounds the configuration allows (idle ≤ 30 days, a start ≤ 1 hour), so
/// a loader that clamps out-of-range values leaves them alone.
fn memory() -> impl Strategy<Value = ServiceMemory> {
    (
        prop::option::of(0u64..=30 * 86_400),
        prop::option::of(0u64..=3_600_000),
        prop::option::of(any::<u64>()),
        finite(),
        prop::collection::btree_map(any::<u64>(), finite(), 0..4),
        prop::collection::vec(any::<i64>(), 0..4),
        prop::collection::vec((any::<i64>(), any::<bool>()), 0..4),
        timeline(),
    )
        .prop_map(
            |(idle, learned, last, saved, by_hour, demands, prewarms, timeline)| ServiceMemory {
                idle_timeout_override_s: idle,
                learned_start_ms: learned,
                last_memory_bytes: last,
                memory_saved_byte_seconds: saved,
                memory_saved_by_hour: by_hour,
                demands,
                prewarms,
                timeline,
            },
        )
}

fn saved_limits() -> impl Strategy<Value = SavedLimits> {
    (
        "/[a-z0-9/._-]{0,40}",
        any::<u64>(),
        any::<u64>(),
        0u64..=100,
    )
        .prop_map(|(dir, instance, limit_in_bytes, swappiness)| SavedLimits {
            dir: PathBuf::from(dir),
            instance,
            limit_in_bytes,
            swappiness,
        })
}

proptest! {
    #[test]
    fn prop_state_any_bytes_load_or_are_kept_aside(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        open_never_fails(&bytes)?;
    }

    #[test]
    fn prop_state_any_json_loads_or_is_kept_aside(value in json()) {
        open_never_fails(value.to_string().as_bytes())?;
    }

    #[test]
    fn prop_state_a_damaged_valid_file_loads_or_is_kept_aside(
        services in prop::collection::btree_map(".{0,8}", memory(), 0..3),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let doc = Document { version: 1, services, limits: BTreeMap::new() };
        let mut bytes = serde_json::to_vec(&doc).expect("serialise");
        let i = at.index(bytes.len());
        if cut {
            bytes.truncate(i);
        } else {
            bytes[i] = byte;
        }
        open_never_fails(&bytes)?;
    }

    #[test]
    fn prop_state_round_trips_what_it_writes(
        services in prop::collection::btree_map(any::<String>(), memory(), 0..4),
        limits in prop::collection::btree_map("[0-9a-f]{1,64}", saved_limits(), 0..3),
    ) {
        let dir = tempdir();
        let (mut store, _) = StateStore::open(dir.path()).expect("open");
        for (name, memory) in &services {
            store.update(name, |m| *m = memory.clone());
        }
        for (container, saved) in &limits {
            store.record_limits(container, saved.clone());
        }
        store.save().expect("save");
        let (again, notes) = StateStore::open(dir.path()).expect("reopen");
        prop_assert!(notes.is_empty(), "{:?}", notes);
        prop_assert_eq!(again.services(), &services);
        prop_assert_eq!(again.limits(), &limits);
    }
}
