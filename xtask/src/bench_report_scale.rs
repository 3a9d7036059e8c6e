//! The `scale` section's rows of the bench table: each metric the issue
//! sets a target for, with its verdict.

use serde_json::Value;

/// One row: metric, value, target, whether it was met.
pub type ScaleRow = (&'static str, String, &'static str, bool);

/// The rows for the `scale` section `s` (none when it did not run or
/// failed).
pub fn rows(s: &Value) -> Vec<ScaleRow> {
    if !s.is_object() || s.get("error").is_some() {
        return Vec::new();
    }
    let num = |key: &str| s[key].as_f64().unwrap_or(f64::NAN);
    let mut rows = Vec::new();
    let mut row =
        |metric, value: String, target, met: bool| rows.push((metric, value, target, met));
    row(
        "idle_cpu_percent_stopped",
        format!(
            "{} (500 stopped; dockerd {}; {} Docker events meanwhile)",
            s["idle_cpu_percent_stopped"],
            s["dockerd_cpu_percent_stopped"],
            s["docker_events_stopped_window"]
        ),
        "< 0.01",
        num("idle_cpu_percent_stopped") < 0.01,
    );
    row(
        "idle_cpu_percent_ready",
        format!(
            "{} (50 ready; dockerd {}; {} Docker events meanwhile)",
            s["idle_cpu_percent_ready"],
            s["dockerd_cpu_percent_ready"],
            s["docker_events_ready_window"]
        ),
        "< 0.05",
        num("idle_cpu_percent_ready") < 0.05,
    );
    row(
        "wakeups_per_s",
        format!(
            "{} all stopped, {} with 50 ready ({} threads)",
            s["wakeups_per_s"], s["wakeups_per_s_ready"], s["threads"]
        ),
        "≤ 1",
        num("wakeups_per_s") <= 1.0,
    );
    let rss = num("rss_bytes");
    row(
        "rss_bytes",
        format!("{} ({:.1} MiB)", s["rss_bytes"], rss / 1_048_576.0),
        "≤ 40 MiB",
        rss <= 40.0 * 1_048_576.0,
    );
    row(
        "adopt_s",
        s["adopt_s"].to_string(),
        "≤ 5",
        num("adopt_s") <= 5.0,
    );
    row(
        "api_services_ms_p99",
        format!(
            "{} (p50 {})",
            s["api_services_ms_p99"], s["api_services_ms_p50"]
        ),
        "≤ 20",
        num("api_services_ms_p99") <= 20.0,
    );
    row(
        "status_wall_ms",
        s["status_wall_ms"].to_string(),
        "≤ 100",
        num("status_wall_ms") <= 100.0,
    );
    row(
        "cold_overhead_ratio",
        format!(
            "{} ({} ms with 499 neighbours, {} ms alone)",
            s["cold_overhead_ratio"],
            s["cold_overhead_ms_p50_with_499_neighbours"],
            s["cold_overhead_ms_p50_alone"]
        ),
        "≤ 1.1",
        num("cold_overhead_ratio") <= 1.1,
    );
    let d = &s["datapath"];
    row(
        "datapath_ratio",
        format!(
            "{} ({} ns with 500 targets, {} ns with 1)",
            s["datapath_ratio"],
            d["test_run_ns_per_packet_many_targets"],
            d["test_run_ns_per_packet_one_target"]
        ),
        "≤ 1.1",
        num("datapath_ratio") <= 1.1,
    );
    rows
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_target_has_a_row_with_its_verdict() {
        let scale = json!({
            "idle_cpu_percent_stopped": 0.005, "dockerd_cpu_percent_stopped": 0.1,
            "idle_cpu_percent_ready": 0.2, "dockerd_cpu_percent_ready": 0.3,
            "wakeups_per_s": 0.5, "wakeups_per_s_ready": 2.0, "threads": 4,
            "rss_bytes": 30 * 1_048_576, "adopt_s": 6.5,
            "api_services_ms_p99": 12.0, "api_services_ms_p50": 8.0,
            "status_wall_ms": 40.0,
            "cold_overhead_ratio": 1.05,
            "cold_overhead_ms_p50_with_499_neighbours": 21.0, "cold_overhead_ms_p50_alone": 20.0,
            "datapath_ratio": 1.0,
            "datapath": { "test_run_ns_per_packet_many_targets": 30.0, "test_run_ns_per_packet_one_target": 30.0 },
        });
        let rows = rows(&scale);
        let verdict = |metric: &str| {
            rows.iter()
                .find(|r| r.0 == metric)
                .map(|r| r.3)
                .unwrap_or_else(|| panic!("no row {metric}"))
        };
        assert!(verdict("idle_cpu_percent_stopped"));
        assert!(!verdict("idle_cpu_percent_ready"));
        assert!(verdict("wakeups_per_s"));
        assert!(verdict("rss_bytes"));
        assert!(!verdict("adopt_s"));
        assert!(verdict("api_services_ms_p99"));
        assert!(verdict("status_wall_ms"));
        assert!(verdict("cold_overhead_ratio"));
        assert!(verdict("datapath_ratio"));
        assert_eq!(rows.len(), 9);
        assert!(rows[4].1.contains("6.5"), "{:?}", rows[4]);
    }

    #[test]
    fn a_failed_or_absent_section_has_no_rows() {
        assert!(rows(&json!({ "error": "boom" })).is_empty());
        assert!(rows(&Value::Null).is_empty());
        // A missing figure is a miss, never a pass.
        let partial = rows(&json!({ "adopt_s": 1.0 }));
        assert!(partial.iter().filter(|r| r.0 != "adopt_s").all(|r| !r.3));
    }
}
