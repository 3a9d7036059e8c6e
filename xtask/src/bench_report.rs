//! The Markdown table `cargo xtask bench` prints (and `BENCHMARKS.md`
//! keeps): one row per reported metric, its target and whether the run met
//! it. Sections absent from the report (not run) have no rows.

use serde_json::Value;

/// One table row: section, metric, value, target and verdict (`None`: no
/// target).
struct Row {
    section: &'static str,
    metric: &'static str,
    value: String,
    target: &'static str,
    met: Option<bool>,
}

/// The table for `report`, headed by the machine line.
pub fn markdown(report: &Value) -> String {
    let m = &report["machine"];
    let mut out = format!(
        "Machine: {} ({} cores), kernel {}, clocksource {}\n\n\
         | section | metric | value | target | |\n|---|---|---|---|---|\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["clocksource"].as_str().unwrap_or("?"),
    );
    for section in crate::bench::SECTIONS.iter().copied() {
        if let Some(error) = report[section]["error"].as_str() {
            let error: String = error.chars().take(200).collect();
            out.push_str(&format!(
                "| {section} | error | {} | | failed |\n",
                error.replace('|', "/").replace('\n', " ")
            ));
        }
    }
    for row in rows(report) {
        let verdict = match row.met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {verdict} |\n",
            row.section, row.metric, row.value, row.target
        ));
    }
    out
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn rows(report: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |section, metric, value: String, target, met: Option<bool>| {
        rows.push(Row {
            section,
            metric,
            value,
            target,
            met,
        });
    };
    let d = &report["datapath"];
    if d.is_object() && d.get("error").is_none() {
        let ns = num(&d["ns_per_packet"]);
        let above = &d["ns_per_packet_above_empty_program"];
        let detail = if above.is_number() {
            format!(
                "{} ({} above an empty program's {})",
                d["ns_per_packet"], above, d["empty_program_ns_per_run"]
            )
        } else {
            d["ns_per_packet"].to_string()
        };
        push(
            "datapath",
            "ns_per_packet",
            detail,
            "≤ 50",
            Some(ns.is_some_and(|v| v <= 50.0)),
        );
        let test_run = num(&d["test_run_ns_per_packet"]);
        if let Some(raw) = test_run {
            // The target is read net of the empty program (the test loop
            // itself); both figures are shown.
            let net = num(&d["test_run_empty_program_ns"]).map(|empty| raw - empty);
            push(
                "datapath",
                "test_run_ns_per_packet",
                format!(
                    "{} net of the empty program ({} raw, empty program {}; BPF_PROG_TEST_RUN, {} runs)",
                    net.map_or_else(|| "?".to_owned(), |n| format!("{n:.1}")),
                    d["test_run_ns_per_packet"],
                    d["test_run_empty_program_ns"],
                    d["test_run_repeat"]
                ),
                "≤ 50",
                Some(net.is_some_and(|v| v <= 50.0)),
            );
            push(
                "datapath",
                "test_run_unmatched_ns_per_packet",
                format!(
                    "{} (a packet to no service's port)",
                    d["test_run_unmatched_ns_per_packet"]
                ),
                "",
                None,
            );
        }
        let l = &d["lookup"];
        if let Some(error) = l.get("error") {
            push(
                "datapath",
                "lookup_ns (sk_lookup, per new connection)",
                format!("not measured: {error}"),
                "",
                None,
            );
        } else if l.is_object() {
            push(
                "datapath",
                "lookup_ns (sk_lookup, per new connection)",
                format!(
                    "unsteered port {}; every-address {}; one-address {}; another address of it {} (BPF_PROG_TEST_RUN)",
                    l["unsteered_ns"],
                    l["steered_any_address_ns"],
                    l["steered_one_address_ns"],
                    l["other_address_of_a_one_address_port_ns"]
                ),
                "",
                None,
            );
        }
        let ratio = num(&d["throughput_ratio"]);
        push(
            "datapath",
            "throughput_ratio",
            format!(
                "{} ({} vs {} pps)",
                d["throughput_ratio"], d["pps_with_programs"], d["pps_without_programs"]
            ),
            "≥ 0.98",
            Some(ratio.is_some_and(|v| v >= 0.98)),
        );
    }
    let c = &report["cold"];
    if c.is_object() && c.get("error").is_none() {
        // Overhead within each start (see bench_cold.rs), with the
        // measurement's floor and the older B − A of two starts beside it.
        let overhead_row = |mode: &str| {
            let m = &c[mode];
            (
                format!(
                    "{} (floor {}; B − A of two starts {})",
                    m["overhead_ms_p50"], m["floor_ms_p50"], m["paired_difference_ms_p50"]
                ),
                Some(num(&m["overhead_ms_p50"]).is_some_and(|v| v <= 10.0)),
            )
        };
        let (value, verdict) = overhead_row("blocking");
        push("cold", "blocking_overhead_ms_p50", value, "≤ 10", verdict);
        push(
            "cold",
            "blocking_overhead_ms_p99",
            c["blocking"]["overhead_ms_p99"].to_string(),
            "",
            None,
        );
        let failed = num(&c["blocking"]["failed_first_requests"]).unwrap_or(0.0)
            + num(&c["dynamic"]["failed_first_requests"]).unwrap_or(0.0);
        push(
            "cold",
            "failed_first_requests",
            format!(
                "{failed} (blocking {}, dynamic {})",
                c["blocking"]["failed_first_requests"], c["dynamic"]["failed_first_requests"]
            ),
            "0",
            Some(failed == 0.0),
        );
        let (value, verdict) = overhead_row("dynamic");
        push("cold", "dynamic_overhead_ms_p50", value, "≤ 10", verdict);
        if c["handback_ms_p99"].is_number() {
            push(
                "cold",
                "handback_ms_p50 / p99",
                format!(
                    "{} / {} (readiness → ports on the stock path)",
                    c["handback_ms_p50"], c["handback_ms_p99"]
                ),
                "p99 ≤ 5",
                Some(num(&c["handback_ms_p99"]).is_some_and(|v| v <= 5.0)),
            );
        }
        // The same comparison from the app's process start on, free of
        // `docker start`'s own variance (see bench_cold.rs); no verdict.
        for mode in ["blocking", "dynamic"] {
            let m = &c[mode];
            if m["after_app_start_overhead_ms_p50"].is_number() {
                push(
                    "cold",
                    if mode == "blocking" {
                        "blocking_after_app_start_ms_p50"
                    } else {
                        "dynamic_after_app_start_ms_p50"
                    },
                    format!(
                        "{} (request → process start: {} ms via agent, {} ms direct start call)",
                        m["after_app_start_overhead_ms_p50"],
                        m["to_process_start_ms_p50"]["through_agent_request"],
                        m["to_process_start_ms_p50"]["direct_start_call"]
                    ),
                    "",
                    None,
                );
            }
        }
    }
    let w = &report["warm"];
    if w.is_object() && w.get("error").is_none() {
        push(
            "warm",
            "rps_ratio",
            format!(
                "{} ({} vs {} req/s)",
                w["rps_ratio"], w["rps_with_agent"], w["rps_without_agent"]
            ),
            "≥ 0.99",
            Some(num(&w["rps_ratio"]).is_some_and(|v| v >= 0.99)),
        );
        push(
            "warm",
            "p99_ratio",
            format!(
                "{} ({} vs {} ms)",
                w["p99_ratio"], w["p99_ms_with_agent"], w["p99_ms_without_agent"]
            ),
            "≤ 1.02",
            Some(num(&w["p99_ratio"]).is_some_and(|v| v <= 1.02)),
        );
        push(
            "warm",
            "p50_ms",
            format!(
                "{} vs {}",
                w["p50_ms_with_agent"], w["p50_ms_without_agent"]
            ),
            "",
            None,
        );
    }
    let h = &report["herd"];
    if h.is_object() && h.get("error").is_none() {
        let is = |key: &str, want: f64| Some(num(&h[key]) == Some(want));
        push(
            "herd",
            "connections",
            h["connections"].to_string(),
            "1000",
            is("connections", 1000.0),
        );
        push(
            "herd",
            "answered",
            h["answered"].to_string(),
            "1000",
            is("answered", 1000.0),
        );
        push(
            "herd",
            "starts",
            format!(
                "{} (Docker start events: {})",
                h["starts"], h["docker_start_events"]
            ),
            "1",
            is("starts", 1.0),
        );
        if h["handback_ms"].is_number() {
            push(
                "herd",
                "handback_ms",
                format!("{} (while the herd is handed over)", h["handback_ms"]),
                "≤ 5",
                Some(num(&h["handback_ms"]).is_some_and(|v| v <= 5.0)),
            );
        }
    }
    let a = &report["agent"];
    if a.is_object() && a.get("error").is_none() {
        let rss = num(&a["rss_bytes"]).unwrap_or(f64::NAN);
        push(
            "agent",
            "rss_bytes",
            format!("{} ({:.1} MiB)", a["rss_bytes"], rss / 1048576.0),
            "≤ 15 MiB",
            Some(rss <= 15.0 * 1048576.0),
        );
        let cpu = num(&a["idle_cpu_percent"]);
        // "≈ 0": under a hundredth of one core.
        push(
            "agent",
            "idle_cpu_percent",
            a["idle_cpu_percent"].to_string(),
            "≈ 0 (< 0.01)",
            Some(cpu.is_some_and(|v| v < 0.01)),
        );
    }
    let h = &report["hibernate"];
    if h.is_object() && h.get("error").is_none() {
        let ttfb = num(&h["ttfb_s_p50"]);
        push(
            "hibernate",
            "ttfb_s_p50",
            format!(
                "{} (pause only {}; stop, a cold boot: {})",
                h["ttfb_s_p50"], h["pause_ttfb_s_p50"], h["cold_ttfb_s_p50"]
            ),
            "≤ 2",
            Some(ttfb.is_some_and(|v| v <= 2.0)),
        );
        let speedup = num(&h["speedup_vs_cold"]);
        push(
            "hibernate",
            "speedup_vs_cold",
            h["speedup_vs_cold"].to_string(),
            "≥ 10",
            Some(speedup.is_some_and(|v| v >= 10.0)),
        );
        let ratio = num(&h["resident_ratio"]);
        push(
            "hibernate",
            "resident_ratio",
            format!(
                "{} ({} of {} bytes resident; paused only {})",
                h["resident_ratio"],
                h["resident_hibernated_bytes"],
                h["resident_awake_bytes"],
                h["resident_paused_bytes"]
            ),
            "≤ 0.10",
            Some(ratio.is_some_and(|v| v <= 0.10)),
        );
        push(
            "hibernate",
            "page_in_bytes_p50",
            format!(
                "{} (a request touching every page: {} bytes in {} s; disk read speed {})",
                h["page_in_bytes_p50"],
                h["all_pages_page_in_bytes"],
                h["all_pages_ttfb_s"],
                h["disk_read_speed"].as_str().unwrap_or("?")
            ),
            "",
            None,
        );
    }
    for (metric, value, target, met) in crate::bench_report_scale::rows(&report["scale"]) {
        push("scale", metric, value, target, Some(met));
    }
    for (metric, value, target, met) in crate::bench_handover::rows(&report["handover"]) {
        push("handover", metric, value, target, met);
    }
    rows
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_only_for_sections_run_with_verdicts() {
        let report = json!({
            "machine": { "cpu": "X", "cores": 2, "kernel": "6", "clocksource": "tsc" },
            "herd": { "connections": 1000, "answered": 999, "starts": 1.0, "docker_start_events": 1 },
        });
        let table = markdown(&report);
        assert!(
            table.contains("| herd | answered | 999 | 1000 | missed |"),
            "{table}"
        );
        assert!(
            table.contains("| herd | starts | 1.0 (Docker start events: 1) | 1 | met |"),
            "{table}"
        );
        assert!(!table.contains("datapath"), "{table}");
    }

    #[test]
    fn the_test_run_figure_is_judged_net_of_the_empty_program() {
        let report = json!({
            "datapath": {
                "ns_per_packet": 114.6, "ns_per_packet_above_empty_program": 54.0,
                "empty_program_ns_per_run": 60.6,
                "test_run_ns_per_packet": 62.0, "test_run_empty_program_ns": 36.0,
                "test_run_repeat": 1_000_000, "test_run_unmatched_ns_per_packet": 40.0,
                "lookup": { "error": "BPF_PROG_TEST_RUN (sk_lookup): EINVAL" },
                "throughput_ratio": 1.0, "pps_with_programs": 1.0, "pps_without_programs": 1.0,
            },
        });
        let table = markdown(&report);
        assert!(
            table.contains("| datapath | test_run_ns_per_packet | 26.0 net of the empty program (62.0 raw, empty program 36.0;"),
            "{table}"
        );
        assert!(table.contains("1000000 runs) | ≤ 50 | met |"), "{table}");
        assert!(
            table.contains("| lookup_ns (sk_lookup, per new connection) | not measured: \"BPF_PROG_TEST_RUN (sk_lookup): EINVAL\" |"),
            "{table}"
        );
    }
}
