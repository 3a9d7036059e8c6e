//! The dashboard's history through the whole agent on the paused clock: a
//! cycle (adopted stopped, a request wakes the service, it becomes ready,
//! it stops for idleness) shows up in `GET /api/history` as
//! transitions with their causes and as start records, and are in
//! `state.json` after shutdown.

use super::{fakes::wake, service, Harness};

#[tokio::test(start_paused = true)]
async fn steps_and_starts_reach_the_history_and_the_state_file() {
    let mut h = Harness::start(&service("web", 18090, "30s"), &[], 8).await;
    h.until_state("web", "stopped").await;
    let before = h.get("/api/history").await;
    let before: serde_json::Value = serde_json::from_str(&before).expect("history JSON");
    // Its adoption is the first record.
    assert_eq!(
        before["services"][0]["state_at_start"], "unknown",
        "{before}"
    );
    let adopted = &before["services"][0]["transitions"];
    assert_eq!(adopted.as_array().map(Vec::len), Some(1), "{before}");
    assert_eq!(adopted[0]["state"], "stopped");
    assert_eq!(adopted[0]["cause"], "adopted");

    h.wake.send(wake(0, 18090)).expect("wake");
    h.until_state("web", "ready").await;
    h.until_state("web", "stopped").await;
    let body = h.get("/api/history").await;
    let history: serde_json::Value = serde_json::from_str(&body).expect("history JSON");
    let web = &history["services"][0];
    let steps: Vec<(String, String)> = web["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (text(&t["state"]), text(&t["cause"]))
        })
        .collect();
    let expected = [
        ("stopped", "adopted"),
        ("starting", "syn"),
        ("ready", ""),
        ("stopping", "idle"),
        ("stopped", "idle"),
    ];
    assert_eq!(
        steps,
        expected.map(|(s, c)| (s.to_owned(), c.to_owned())),
        "{body}"
    );
    // Before the adoption nothing was recorded.
    assert_eq!(web["state_at_start"], "unknown", "{body}");
    let starts = web["starts"].as_array().expect("starts");
    assert_eq!(starts.len(), 1, "{body}");
    assert_eq!(starts[0]["trigger"], "syn");
    assert_eq!(starts[0]["ok"], true);
    assert!(
        starts[0]["estimate_ms"].is_null(),
        "no estimate before the first start"
    );
    assert_eq!(web["saved_gb_h_by_day"].as_array().map(Vec::len), Some(14));
    assert_eq!(history["days"].as_array().map(Vec::len), Some(14));
    assert!(history["host"]["total_bytes"]
        .as_u64()
        .is_some_and(|t| t > 0));

    // Written at shutdown by the state owner.
    h.shutdown.cancel();
    (&mut h.agent)
        .await
        .expect("agent task")
        .expect("clean exit");
    let state_dir = h.config_path.with_file_name("state");
    let text = std::fs::read_to_string(state_dir.join("state.json")).expect("state.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let timeline = &json["services"]["web"]["timeline"];
    assert_eq!(
        timeline["transitions"].as_array().map(Vec::len),
        Some(5),
        "{text}"
    );
    assert_eq!(timeline["starts"][0]["trigger"], "syn", "{text}");
}
