//! The keep-awake planner and requirements through the whole agent, on the
//! paused clock (which starts on Monday 2026-11-30 07:00 UTC): a cold
//! start of a service starts what it requires first; a requirement stays
//! awake while a dependent runs and idles out after it; a `keep_warm`
//! window starts its service on time and keeps it until it closes; a
//! service burning CPU is not stopped until it goes quiet.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{fakes::wake, service, Harness};

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).expect("JSON")
}

impl Harness {
    fn calls(&self) -> Vec<String> {
        self.docker.calls.lock().expect("fake").clone()
    }

    /// Waits up to `limit` (paused clock) for `name` to be in `state`;
    /// returns how long it took.
    async fn within(&self, limit: Duration, name: &str, state: &str) -> Duration {
        let began = Instant::now();
        while began.elapsed() <= limit {
            if self.state(name).await.as_deref() == Some(state) {
                return began.elapsed();
            }
            sleep(Duration::from_millis(250)).await;
        }
        panic!("{name} not {state} within {limit:?}: {:?}", self.calls());
    }
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_starts_requirements_first_and_they_outlive_their_dependents() {
    let services = format!(
        "{}{}requires = [\"app-db\"]\n\n",
        service("app-db", 18090, "30s"),
        service("app", 18091, "20s"),
    );
    let h = Harness::start(&services, &[], 8).await;
    h.until_state("app", "stopped").await;
    h.until_state("app-db", "stopped").await;
    let view = json(&h.get("/api/services/app-db").await);
    assert_eq!(view["needed_by"], serde_json::json!(["app"]));

    // A request for app (index 1) starts app-db, then app.
    h.wake.send(wake(1, 18091)).expect("wake");
    h.until_state("app", "ready").await;
    assert_eq!(h.calls(), ["+app-db", "+app"]);
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains("autostop_starts_total{service=\"app-db\",trigger=\"dependent\"} 1"),
        "{metrics}"
    );
    let view = json(&h.get("/api/services/app-db").await);
    assert_eq!(view["keep_awake"], serde_json::json!(["needed by app"]));
    assert_eq!(view["seconds_until_stop"], serde_json::Value::Null);

    // app idles out after 20 s; app-db, idle for 30 s by then, stays up
    // for a full idle timeout after app stopped.
    let app_stopped = h.within(Duration::from_secs(60), "app", "stopped").await;
    assert_eq!(h.calls(), ["+app-db", "+app", "-app"]);
    let db_stopped = h.within(Duration::from_secs(60), "app-db", "stopped").await;
    assert!(
        db_stopped >= Duration::from_secs(29),
        "{app_stopped:?} then {db_stopped:?}"
    );
    assert_eq!(h.calls(), ["+app-db", "+app", "-app", "-app-db"]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_requirement_fails_its_dependent_with_its_name() {
    let services = format!(
        "{}{}requires = [\"broken-db\"]\n\n",
        service("broken-db", 18095, "30s"),
        service("needy", 18092, "30s"),
    );
    let h = Harness::start(&services, &[], 8).await;
    h.docker
        .broken
        .lock()
        .expect("fake")
        .insert("broken-db".into());
    h.until_state("needy", "stopped").await;
    h.wake.send(wake(1, 18092)).expect("wake");
    h.until_state("needy", "failed").await;
    let view = json(&h.get("/api/services/needy").await);
    let error = view["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("required service \"broken-db\" failed"),
        "{view}"
    );
    assert!(error.contains("exited with code 1"), "{view}");
    assert_eq!(h.calls(), ["+broken-db"], "needy itself never started");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_keep_warm_window_starts_the_service_on_time_and_keeps_it_until_it_closes() {
    let services = format!(
        "{}keep_warm = [\"Mon 07:01-07:03\"]\n\n",
        service("office", 18093, "30s")
    );
    let h = Harness::start(&services, &[], 8).await;
    h.until_state("office", "stopped").await;
    let view = json(&h.get("/api/services/office").await);
    assert_eq!(view["next_keep_warm"], "2026-11-30T07:01:00Z", "{view}");
    assert_eq!(view["keep_warm"], serde_json::json!(["Mon 07:01-07:03"]));

    // Started at the opening, a minute after the agent.
    let started = h.within(Duration::from_secs(70), "office", "ready").await;
    assert!(started >= Duration::from_secs(55), "{started:?}");
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains("autostop_starts_total{service=\"office\",trigger=\"schedule\"} 1"),
        "{metrics}"
    );
    let view = json(&h.get("/api/services/office").await);
    assert_eq!(
        view["keep_awake"],
        serde_json::json!(["keep_warm until Mon 07:03"])
    );
    assert_eq!(view["keep_warm_until"], "2026-11-30T07:03:00Z");

    // No traffic, yet up for the whole window (2 min, idle timeout 30 s),
    // then stopped a full idle timeout after it closed.
    let stopped = h
        .within(Duration::from_secs(200), "office", "stopped")
        .await;
    assert!(
        stopped >= Duration::from_secs(145) && stopped <= Duration::from_secs(160),
        "stopped {stopped:?} after the start"
    );
    assert_eq!(h.calls(), ["+office", "-office"]);
    let view = json(&h.get("/api/services/office").await);
    assert_eq!(view["next_keep_warm"], "2026-12-07T07:01:00Z", "{view}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_busy_service_is_not_stopped_until_it_goes_quiet() {
    let services = format!(
        "{}busy_cpu_percent = 20\n\n",
        service("encoder", 18094, "60s")
    );
    let h = Harness::start(&services, &["encoder"], 8).await;
    h.docker.busy.lock().expect("fake").insert("encoder".into());
    h.until_state("encoder", "ready").await;
    sleep(Duration::from_secs(180)).await;
    let view = json(&h.get("/api/services/encoder").await);
    assert_eq!(view["state"], "ready", "{view}");
    assert_eq!(view["keep_awake"], serde_json::json!(["busy, 33 % CPU"]));

    // Quiet: the last minute's rate falls, then the idle timeout runs.
    h.docker.busy.lock().expect("fake").clear();
    let stopped = h
        .within(Duration::from_secs(240), "encoder", "stopped")
        .await;
    assert!(stopped >= Duration::from_secs(60), "{stopped:?}");
    assert_eq!(h.calls(), ["-encoder"]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_requirement_found_running_with_its_dependent_stays_up_while_it_runs() {
    let services = format!(
        "{}{}requires = [\"up-db\"]\n\n",
        service("up-db", 18096, "30s"),
        service("up-app", 18097, "90s"),
    );
    let h = Harness::start(&services, &["up-db", "up-app"], 8).await;
    h.until_state("up-app", "ready").await;
    sleep(Duration::from_secs(60)).await;
    let view = json(&h.get("/api/services/up-db").await);
    assert_eq!(view["state"], "ready", "{view}");
    assert_eq!(view["keep_awake"], serde_json::json!(["needed by up-app"]));
    h.within(Duration::from_secs(60), "up-app", "stopped").await;
    h.within(Duration::from_secs(60), "up-db", "stopped").await;
    assert_eq!(h.calls(), ["-up-app", "-up-db"]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_learned_habit_prewarms_the_service_and_an_unused_prewarm_counts_as_a_miss() {
    // Requests woke it at 09:00 on each of the last four Mondays.
    let services = format!("{}prewarm = true\n\n", service("habit", 18098, "30s"));
    let h = Harness::start_remembering(&services, &[], 8, |state| {
        state.update("habit", |m| {
            for week in 1..=4_i64 {
                // Mon 2026-11-30 09:00 UTC minus `week` weeks.
                m.note_demand(1_796_029_200 - week * 7 * 86_400);
            }
        })
    })
    .await;
    h.until_state("habit", "stopped").await;
    h.until("a prediction", async |h| {
        json(&h.get("/api/services/habit").await)["next_prewarm"].is_object()
    })
    .await;
    let view = json(&h.get("/api/services/habit").await);
    let next = &view["next_prewarm"];
    // 10 minutes plus the default 10 s start estimate ahead of 09:00.
    assert_eq!(next["at"], "2026-11-30T08:49:50Z", "{view}");
    assert_eq!(next["expected"], "2026-11-30T09:00:00Z", "{view}");
    assert!(
        next["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("4 of the last 4"),
        "{view}"
    );

    // 07:00 now: started at 08:49:50, no request comes, idles out: a miss.
    sleep(Duration::from_secs(6_585)).await;
    assert_eq!(h.state("habit").await.as_deref(), Some("stopped"));
    h.within(Duration::from_secs(30), "habit", "ready").await;
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains("autostop_starts_total{service=\"habit\",trigger=\"prewarm\"} 1"),
        "{metrics}"
    );
    h.within(Duration::from_secs(60), "habit", "stopped").await;
    h.until("the miss counted", async |h| {
        h.get("/metrics")
            .await
            .contains("autostop_prewarm_total{service=\"habit\",outcome=\"miss\"} 1")
    })
    .await;
    h.stop().await;
}
