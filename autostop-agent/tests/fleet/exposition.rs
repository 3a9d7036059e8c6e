//! What the agent's `/metrics` renders, as Prometheus stores it: every
//! sample name (a histogram's `_bucket`, `_sum` and `_count`), its label
//! names and the values each label takes, plus what Prometheus adds at
//! scrape (`instance`, `job`, and the `up` series).

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use autostop::{
    api::ServiceView,
    metrics::Metrics,
    service::{LifecycleEvent, LifecycleObserver, Trigger},
};

/// Labels Prometheus adds to every series of a target.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// Sample names with their label names and values.
pub struct Exported {
    labels: HashMap<String, BTreeSet<String>>,
    values: HashMap<(String, String), BTreeSet<String>>,
}

impl Exported {
    /// The exposition of an agent with three services that went through
    /// every lifecycle step, listener outcome and sample the agent records.
    pub fn of_a_busy_agent() -> Self {
        let metrics = Metrics::new();
        let views = [
            ServiceView {
                name: "web".into(),
                state: "ready".into(),
                held: 1,
                memory_bytes: Some(300_000_000),
                memory_limit_bytes: Some(1_000_000_000),
                average_start_duration_s: Some(2.0),
                ..ServiceView::default()
            },
            ServiceView {
                name: "api".into(),
                state: "failed".into(),
                start_block: Some("crash_loop".into()),
                ..ServiceView::default()
            },
            ServiceView {
                name: "db".into(),
                state: "failed".into(),
                start_block: Some("backoff".into()),
                retry_in_s: Some(4),
                ..ServiceView::default()
            },
        ];
        metrics.refresh(&views);
        for trigger in [
            Trigger::Syn,
            Trigger::HeldConnection,
            Trigger::Manual,
            Trigger::Api,
            Trigger::External,
        ] {
            metrics.on_event("web", &LifecycleEvent::Starting { trigger });
            metrics.on_event(
                "web",
                &LifecycleEvent::Ready {
                    took: Some(Duration::from_millis(1800)),
                    estimate: Some(Duration::from_secs(2)),
                },
            );
        }
        for reason in ["idle", "manual", "container_died"] {
            metrics.on_event("web", &LifecycleEvent::Stopping { reason });
            metrics.on_event("web", &LifecycleEvent::Stopped { reason });
        }
        metrics.on_event(
            "api",
            &LifecycleEvent::Failed {
                reason: "exit 1".into(),
                crash_loop: true,
            },
        );
        metrics.wake_event("web");
        metrics.add_activity("web", 10, 1000);
        metrics.set_memory("web", 300_000_000);
        metrics.add_memory_saved("web", 3600.0 * 3e8);
        metrics.wait_page("web");
        metrics.fail_fast("api");
        metrics.hung_up("web");
        metrics.listener_accepted();
        // The scrape the API makes renders after refreshing from the views.
        Self::parse(&metrics.render_with(&views))
    }

    fn parse(text: &str) -> Self {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("the exposition parses");
        let mut exported = Self {
            labels: HashMap::new(),
            values: HashMap::new(),
        };
        exported.add("up", &[]);
        for sample in &scrape.samples {
            let labels: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match &sample.value {
                prometheus_parse::Value::Histogram(buckets) => {
                    for bucket in buckets {
                        let le = bucket.less_than.to_string();
                        let mut with_le = labels.clone();
                        with_le.push(("le", le.as_str()));
                        exported.add(&format!("{}_bucket", sample.metric), &with_le);
                    }
                    exported.add(&format!("{}_sum", sample.metric), &labels);
                    exported.add(&format!("{}_count", sample.metric), &labels);
                }
                _ => exported.add(&sample.metric, &labels),
            }
        }
        exported
    }

    fn add(&mut self, name: &str, labels: &[(&str, &str)]) {
        let names = self.labels.entry(name.to_owned()).or_default();
        names.extend(TARGET_LABELS.iter().map(|l| (*l).to_owned()));
        for (label, value) in labels {
            names.insert((*label).to_owned());
            self.values
                .entry((name.to_owned(), (*label).to_owned()))
                .or_default()
                .insert((*value).to_owned());
        }
    }

    /// The label names of sample `name`, or `None` when it is not exported.
    pub fn labels_of(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.labels.get(name)
    }

    /// Whether `name{label="value"}` can exist: the agent renders that
    /// value, or the label is one Prometheus sets from its configuration.
    pub fn has_value(&self, name: &str, label: &str, value: &str) -> bool {
        TARGET_LABELS.contains(&label)
            || self
                .values
                .get(&(name.to_owned(), label.to_owned()))
                .is_some_and(|values| values.contains(value))
    }

    /// Whether any sample has `label`.
    pub fn any_has_label(&self, label: &str) -> bool {
        self.labels.values().any(|names| names.contains(label))
    }
}
