//! The fleet files against the agent (issue #17), without root:
//!
//! - `packaging/prometheus/alerts.yml` passes `promtool check rules`, and
//!   `promtool test rules` runs `alerts_test.yml`, which shows every alert
//!   both firing and silent;
//! - `packaging/grafana/autostop.json` parses, selects by host and service,
//!   has the panels the README promises, and its queries are valid PromQL
//!   for `promtool`;
//! - every metric and label either file queries is one the agent's
//!   `/metrics` renders (the registry filled through its public calls), so
//!   neither file can drift from the agent.
//!
//! Needs `promtool` (Debian's `prometheus` package, which `cargo xtask
//! setup` installs); fails naming it when it is missing.

#[path = "fleet/exposition.rs"]
mod fleet_exposition;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use fleet_exposition::Exported;
use promql_parser::{
    label::MatchOp,
    parser::{Expr, LabelModifier, VectorSelector},
    util::{walk_expr, ExprVisitor},
};
use serde_json::Value;

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs `promtool` with `args`; panics with its output unless it succeeds.
fn promtool(args: &[&str], cwd: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's prometheus package (`cargo xtask setup` does)")
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Grafana's variables, replaced by values PromQL accepts.
fn substitute_grafana_variables(expr: &str) -> String {
    let mut text = expr.to_owned();
    for (variable, value) in [
        ("$__rate_interval", "5m"),
        ("$__interval", "5m"),
        ("$__range", "1d"),
        ("$host", ".*"),
        ("$service", ".*"),
    ] {
        text = text.replace(variable, value);
    }
    assert!(
        !text.contains('$'),
        "a Grafana variable the test does not know in {expr:?}"
    );
    text
}

/// Collects every problem of one expression's selectors and groupings.
struct Checker<'a> {
    exported: &'a Exported,
    query: &'a str,
    problems: Vec<String>,
    metrics: BTreeSet<String>,
}

impl Checker<'_> {
    fn selector(&mut self, vs: &VectorSelector) {
        let Some(name) = &vs.name else {
            self.problems
                .push(format!("{}: a selector without a metric name", self.query));
            return;
        };
        self.metrics.insert(name.clone());
        let Some(labels) = self.exported.labels_of(name) else {
            self.problems.push(format!(
                "{}: {name} is not in the agent's /metrics",
                self.query
            ));
            return;
        };
        for matcher in &vs.matchers.matchers {
            if !labels.contains(&matcher.name) {
                self.problems.push(format!(
                    "{}: {name} has no label {:?} (it has {labels:?})",
                    self.query, matcher.name
                ));
            } else if matches!(matcher.op, MatchOp::Equal)
                && !self.exported.has_value(name, &matcher.name, &matcher.value)
            {
                self.problems.push(format!(
                    "{}: {name} never has {}={:?}",
                    self.query, matcher.name, matcher.value
                ));
            }
        }
    }
}

impl ExprVisitor for Checker<'_> {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs),
            Expr::Aggregate(aggregate) => {
                if let Some(LabelModifier::Include(by) | LabelModifier::Exclude(by)) =
                    &aggregate.modifier
                {
                    for label in &by.labels {
                        if !self.exported.any_has_label(label) {
                            self.problems.push(format!(
                                "{}: no metric has the label {label:?} to group by",
                                self.query
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// Checks `query` against the exposition; returns the metrics it reads.
fn check_query(exported: &Exported, query: &str) -> Result<BTreeSet<String>, Vec<String>> {
    let expr = promql_parser::parser::parse(query)
        .map_err(|e| vec![format!("{query}: not valid PromQL: {e}")])?;
    let mut checker = Checker {
        exported,
        query,
        problems: Vec::new(),
        metrics: BTreeSet::new(),
    };
    let Ok(_) = walk_expr(&mut checker, &expr);
    if checker.problems.is_empty() {
        Ok(checker.metrics)
    } else {
        Err(checker.problems)
    }
}

/// Checks every query; panics listing every problem found.
fn check_queries(exported: &Exported, queries: &[String]) -> BTreeSet<String> {
    let mut metrics = BTreeSet::new();
    let mut problems = Vec::new();
    for query in queries {
        match check_query(exported, query) {
            Ok(found) => metrics.extend(found),
            Err(found) => problems.extend(found),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    metrics
}

fn dashboard() -> Value {
    let path = packaging("grafana/autostop.json");
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

/// Every query of the dashboard (panels and variables), as Grafana would
/// send it with its variables filled in.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries: Vec<String> = panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .map(|t| substitute_grafana_variables(t["expr"].as_str().expect("expr")))
        .collect();
    for variable in dashboard["templating"]["list"].as_array().expect("list") {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().expect("query");
        // label_values(SELECTOR, LABEL): the selector is the PromQL part.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(…)"));
        queries.push(substitute_grafana_variables(inner));
    }
    queries
}

#[test]
fn the_dashboard_queries_only_metrics_and_labels_the_agent_exports() {
    let exported = Exported::of_a_busy_agent();
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    let used = check_queries(&exported, &queries);
    for needed in [
        "autostop_service_state",
        "autostop_memory_bytes",
        "autostop_memory_limit_bytes",
        "autostop_memory_saved_byte_seconds_total",
        "autostop_starts_total",
        "autostop_start_duration_seconds_count",
        "autostop_start_estimate_seconds",
        "autostop_service_start_blocked",
        "autostop_build_info",
    ] {
        assert!(used.contains(needed), "the dashboard never reads {needed}");
    }

    // Prometheus's own parser accepts every query too (as recording rules).
    let dir = tempfile::tempdir().expect("tempdir");
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("dashboard_query_{i}"), "expr": q}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(dir.path().join("dashboard.yml"), file.to_string()).expect("write");
    promtool(&["check", "rules", "dashboard.yml"], dir.path());
}

#[test]
fn the_dashboard_shows_each_host_and_service() {
    let dashboard = dashboard();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "host", "service"]);
    let panels = panels(&dashboard);
    let titled = |title: &str| {
        panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"))
    };
    let timeline = titled("State: asleep / starting / awake");
    assert_eq!(timeline["type"], "state-timeline");
    let mapped = timeline["fieldConfig"]["defaults"]["mappings"][0]["options"].to_string();
    for state in ["asleep", "starting", "awake", "failed"] {
        assert!(mapped.contains(state), "the timeline does not name {state}");
    }
    for title in [
        "RAM now vs limit",
        "GB·h saved per day",
        "Starts by trigger",
        "Start duration vs learned estimate",
        "Start blocked now",
    ] {
        titled(title);
    }
    for panel in &panels {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}: panels use the datasource variable",
            panel["title"]
        );
        if !matches!(
            panel["type"].as_str(),
            Some("timeseries" | "state-timeline")
        ) {
            continue;
        }
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().unwrap_or_default();
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            assert!(
                expr.contains("instance=~\"$host\"") && expr.contains("service=~\"$service\""),
                "{}: {expr} ignores the host or service selection",
                panel["title"]
            );
            assert!(
                legend.contains("{{instance}}") && legend.contains("{{service}}"),
                "{}: legend {legend:?} does not tell hosts and services apart",
                panel["title"]
            );
        }
    }
}

/// `alert` → its `expr`, in file order.
fn alert_rules() -> Vec<(String, String)> {
    let text = read(&packaging("prometheus/alerts.yml"));
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.yml is YAML");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert name").to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_alert_rules_query_only_metrics_the_agent_exports() {
    let exported = Exported::of_a_busy_agent();
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "AutostopAgentDown",
            "AutostopCrashLoop",
            "AutostopStartFailures",
            "AutostopSlowStart"
        ]
    );
    let exprs: Vec<String> = rules.into_iter().map(|(_, expr)| expr).collect();
    check_queries(&exported, &exprs);
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_tests_pass() {
    let dir = packaging("prometheus");
    promtool(&["check", "rules", "alerts.yml"], &dir);
    promtool(&["test", "rules", "alerts_test.yml"], &dir);

    // The tests show every alert firing and, elsewhere, silent.
    let text = read(&dir.join("alerts_test.yml"));
    let tests: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts_test.yml is YAML");
    let cases: Vec<(&str, bool)> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().expect("cases").iter())
        .map(|c| {
            let fires = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            (c["alertname"].as_str().expect("alertname"), fires)
        })
        .collect();
    for (alert, _) in alert_rules() {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.as_str(), fires)),
                "alerts_test.yml never shows {alert} {}",
                if fires { "firing" } else { "silent" }
            );
        }
    }
}
