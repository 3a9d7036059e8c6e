//! Tests of the state file's owner: batching, flushes, pruning under churn.

use super::*;

fn remember(state: &StateHandle, service: &str) {
    state.send(StateUpdate::LearnedStart {
        service: service.to_owned(),
        millis: 1500,
    });
}

#[tokio::test]
async fn departed_services_are_kept_up_to_the_bound_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = StateStore::open(dir.path()).expect("state");
    // From an earlier run, never managed in this one.
    store.update("old", |m| m.learned_start_ms = Some(1));
    store.save().expect("save");
    let closing = CancellationToken::new();
    let (state, owner) = start(store, closing.clone());
    let owner = tokio::spawn(owner);
    state.send(StateUpdate::Managed("live".into()));
    remember(&state, "live");
    state.send(StateUpdate::Settled);
    let names: Vec<String> = (0..DEPARTED_KEPT + 5)
        .map(|i| format!("gone-{i}"))
        .collect();
    for name in &names {
        state.send(StateUpdate::Managed(name.clone()));
        remember(&state, name);
        // Departures of services the file knows nothing of count for
        // nothing.
        state.send(StateUpdate::Managed(format!("{name}-empty")));
        state.send(StateUpdate::Departed(format!("{name}-empty")));
        state.send(StateUpdate::Departed(name.clone()));
    }
    state.flush().await;
    closing.cancel();
    owner.await.expect("owner");
    let (reopened, _) = StateStore::open(dir.path()).expect("reopen");
    let kept: Vec<&String> = reopened.services().keys().collect();
    assert_eq!(kept.len(), DEPARTED_KEPT + 1, "{kept:?}");
    assert!(kept.contains(&&"live".to_owned()), "the managed one stays");
    assert!(
        !kept.contains(&&"old".to_owned()),
        "the earlier run's goes first"
    );
    for (i, name) in names.iter().enumerate() {
        assert_eq!(kept.contains(&name), i >= 5, "{name}: {kept:?}");
    }
}

#[tokio::test]
async fn nothing_is_pruned_before_the_start_settled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _) = StateStore::open(dir.path()).expect("state");
    for i in 0..DEPARTED_KEPT + 3 {
        store.update(&format!("svc-{i}"), |m| m.learned_start_ms = Some(1));
    }
    store.save().expect("save");
    let closing = CancellationToken::new();
    let (state, owner) = start(store, closing.clone());
    let owner = tokio::spawn(owner);
    // A write while the start still adds services prunes nothing.
    remember(&state, "svc-0");
    state.flush().await;
    closing.cancel();
    owner.await.expect("owner");
    let (reopened, _) = StateStore::open(dir.path()).expect("reopen");
    assert_eq!(reopened.services().len(), DEPARTED_KEPT + 3);
}

#[tokio::test]
async fn history_only_records_go_before_departed_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = StateStore::open(dir.path()).expect("state");
    let closing = CancellationToken::new();
    let (state, owner) = start(store, closing.clone());
    let owner = tokio::spawn(owner);
    state.send(StateUpdate::Settled);
    // A few services with a learned start depart first...
    let durable: Vec<String> = (0..3).map(|i| format!("kept-{i}")).collect();
    for name in &durable {
        state.send(StateUpdate::Managed(name.clone()));
        remember(&state, name);
        state.send(StateUpdate::Departed(name.clone()));
    }
    // ...then more than the bound of services seen only (an adoption).
    for i in 0..DEPARTED_KEPT + 10 {
        let name = format!("seen-{i}");
        state.send(StateUpdate::Managed(name.clone()));
        state.send(StateUpdate::Transition {
            service: name.clone(),
            transition: crate::state::Transition {
                at_ms: 1_000 + i64::try_from(i).expect("small"),
                state: crate::service::StateName::Stopped,
                cause: Some("adopted".into()),
            },
            took_ms: None,
        });
        state.send(StateUpdate::Departed(name));
    }
    state.flush().await;
    closing.cancel();
    owner.await.expect("owner");
    let (reopened, _) = StateStore::open(dir.path()).expect("reopen");
    let kept: Vec<&String> = reopened.services().keys().collect();
    assert_eq!(kept.len(), DEPARTED_KEPT, "{kept:?}");
    for name in &durable {
        assert!(kept.contains(&name), "{name} was pushed out: {kept:?}");
    }
    // Among the history-only ones, the last departed stay.
    assert!(kept.contains(&&format!("seen-{}", DEPARTED_KEPT + 9)));
    assert!(!kept.contains(&&"seen-0".to_owned()));
}

#[tokio::test]
async fn a_limit_record_is_on_disk_when_record_returns_and_goes_once_cleared() {
    use crate::docker::LimitJournal as _;
    use crate::state::SavedLimits;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = StateStore::open(dir.path()).expect("state");
    let closing = CancellationToken::new();
    let (state, owner) = start(store, closing.clone());
    let owner = tokio::spawn(owner);
    let saved = SavedLimits {
        dir: "/sys/fs/cgroup/memory/docker/abc".into(),
        instance: 4391,
        limit_in_bytes: 1_073_741_824,
        swappiness: 60,
    };
    let path = dir.path().join("state.json");
    let (handle, record, file) = (state.clone(), saved.clone(), path.clone());
    // The reclaim's blocking thread: once `record` returns, the file holds it.
    let on_disk = tokio::task::spawn_blocking(move || {
        handle.record("abc", &record)?;
        std::fs::read_to_string(&file).map_err(|e| e.to_string())
    })
    .await
    .expect("thread")
    .expect("recorded");
    assert!(
        on_disk.contains("\"limit_in_bytes\": 1073741824"),
        "{on_disk}"
    );
    assert_eq!(state.recorded("abc"), Some(saved.clone()));

    // Another record's clear leaves it; its own clear removes it, written.
    let other = SavedLimits {
        instance: 1,
        ..saved.clone()
    };
    state.clear("abc", Some(&other));
    state.flush().await;
    assert_eq!(state.recorded("abc"), Some(saved.clone()));
    state.clear("abc", Some(&saved));
    state.flush().await;
    assert_eq!(state.recorded("abc"), None);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(!text.contains("\"limits\""), "{text}");

    // Once the owner is gone, a record fails at once (nothing is lowered).
    closing.cancel();
    owner.await.expect("owner");
    let handle = state.clone();
    let late = tokio::task::spawn_blocking(move || handle.record("abc", &saved))
        .await
        .expect("thread");
    assert!(late.is_err(), "{late:?}");
}
