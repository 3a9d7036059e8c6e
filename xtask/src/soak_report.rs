//! The soak's report: every failed request placed inside a fault's window
//! (explained) or outside all of them (a bug, listed with the agent's and
//! nginx's log lines around it), the faults, anomalies, the agent's
//! footprint and the leftovers; as JSON (`target/soak/report.json`) and
//! as a summary for people.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{
    soak_agent::{Life, Sample},
    soak_faults::FaultKind,
    soak_record::{secs, Anomaly, Clock, FaultRecord, Outcome, SETTLE},
};

/// A life's first samples are its warm-up (adoption, first starts).
const FOOTPRINT_WARMUP_MS: u64 = 30_000;
/// Log lines shown before a failure's start and after its end.
const LOG_BEFORE_MS: u64 = 2_000;
const LOG_AFTER_MS: u64 = 1_000;
/// At most this many log lines per failure.
const LOG_LINES: usize = 40;
/// At most this many explained failures listed in the JSON.
const LISTED_INSIDE: usize = 300;

/// Everything a run recorded.
pub struct Report {
    /// The schedule's seed.
    pub seed: u64,
    /// The run's length asked for.
    pub minutes: f64,
    /// Whether dockerd restarts were among the faults.
    pub dockerd_restarts: bool,
    /// When the clients stopped (run ms).
    pub ended: u64,
    /// From when no fault restarted the agent or Docker (run ms).
    pub quiet_from: u64,
    /// Every request.
    pub outcomes: Vec<Outcome>,
    /// Every fault.
    pub faults: Vec<FaultRecord>,
    /// Every anomaly.
    pub anomalies: Vec<Anomaly>,
    /// The agent's footprint readings.
    pub samples: Vec<Sample>,
    /// The agent's lives.
    pub lives: Vec<Life>,
    /// What was left behind.
    pub leftovers: Vec<String>,
    /// Soak containers paused when the agent stopped (by design).
    pub paused_at_exit: Vec<String>,
    /// The agent's log lines (every life), stamped.
    pub log: Vec<(u64, String)>,
    /// nginx's error log lines, stamped.
    pub nginx_log: Vec<(u64, String)>,
}

/// A failed request and the fault whose window explains it, if any.
struct Placed<'a> {
    outcome: &'a Outcome,
    fault: Option<&'a FaultRecord>,
}

impl Report {
    fn failures(&self) -> Vec<Placed<'_>> {
        self.outcomes
            .iter()
            .filter(|o| o.failure.is_some())
            .map(|outcome| Placed {
                outcome,
                fault: self.faults.iter().find(|f| {
                    f.window
                        .is_some_and(|(a, b)| outcome.start <= b && outcome.end >= a)
                }),
            })
            .collect()
    }

    /// The agent's crash (how its life ended) if `o` overlaps the time
    /// from that crash until the next agent ran (+ [`SETTLE`]).
    fn during_crash(&self, o: &Outcome) -> Option<String> {
        self.lives.windows(2).find_map(|pair| {
            let (at, how) = pair[0].ended.as_ref()?;
            let back = pair[1].running + SETTLE.as_millis() as u64;
            let crashed = how.starts_with("exited on its own");
            (crashed && o.start <= back && o.end >= *at).then(|| format!("{how} at {}", secs(*at)))
        })
    }

    /// The log lines (agent, nginx) around one request.
    fn excerpt(&self, o: &Outcome) -> Vec<String> {
        let from = o.start.saturating_sub(LOG_BEFORE_MS);
        let to = o.end + LOG_AFTER_MS;
        let pick = |log: &[(u64, String)], tag: &str| -> Vec<String> {
            log.iter()
                .filter(|(at, _)| (from..=to).contains(at))
                .map(|(at, line)| format!("[{tag} {}] {line}", secs(*at)))
                .collect()
        };
        let mut lines = pick(&self.log, "agent");
        lines.extend(pick(&self.nginx_log, "nginx"));
        lines.truncate(LOG_LINES);
        lines
    }

    /// The life measured for RSS and fds (the one alive at the end), its
    /// first and last samples after its warm-up and the quiet phase began.
    fn footprint(&self) -> Option<(u32, Sample, Sample, u64)> {
        let life = self.lives.last()?;
        let from = (life.started + FOOTPRINT_WARMUP_MS).max(self.quiet_from);
        let mine: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.pid == life.pid && s.at >= from)
            .collect();
        let (first, last) = (mine.first()?, mine.last()?);
        let max = mine.iter().map(|s| s.rss).max().unwrap_or(0);
        Some((life.pid, **first, **last, max))
    }

    /// The first life's first sample after its warm-up and the run's last
    /// sample (different processes when the agent was restarted).
    fn run_span(&self) -> Option<(Sample, Sample)> {
        let first = self.lives.first()?;
        let start = self
            .samples
            .iter()
            .find(|s| s.pid == first.pid && s.at >= first.started + FOOTPRINT_WARMUP_MS)?;
        Some((*start, *self.samples.last()?))
    }

    /// What makes the run fail (empty: it passed).
    pub fn verdict(&self) -> Vec<String> {
        let outside = self.failures().iter().filter(|p| p.fault.is_none()).count();
        let mut verdict = Vec::new();
        if outside > 0 {
            verdict.push(format!(
                "{outside} failed requests outside every fault window"
            ));
        }
        if !self.anomalies.is_empty() {
            verdict.push(format!("{} anomalies", self.anomalies.len()));
        }
        if !self.leftovers.is_empty() {
            verdict.push(format!("{} leftovers", self.leftovers.len()));
        }
        if self.outcomes.is_empty() {
            verdict.push("no request was made".to_owned());
        }
        verdict
    }

    /// The JSON report.
    pub fn to_json(&self) -> Value {
        let placed = self.failures();
        let count_by = |items: &mut dyn Iterator<Item = String>| {
            let mut counts = BTreeMap::<String, u64>::new();
            for item in items {
                *counts.entry(item).or_default() += 1;
            }
            json!(counts)
        };
        let kind = |p: &Placed| {
            p.outcome
                .failure
                .as_ref()
                .map(|f| f.kind.name().to_owned())
                .unwrap_or_default()
        };
        let (inside, outside): (Vec<&Placed>, Vec<&Placed>) =
            placed.iter().partition(|p| p.fault.is_some());
        let mut clients = BTreeMap::<&str, (u64, u64)>::new();
        for o in &self.outcomes {
            let entry = clients.entry(o.client).or_default();
            entry.0 += 1;
            entry.1 += u64::from(o.failure.is_some());
        }
        let footprint = self.footprint().map(|(pid, a, b, max)| {
            json!({
                "pid": pid,
                "from_s": a.at as f64 / 1000.0,
                "to_s": b.at as f64 / 1000.0,
                "rss_bytes_start": a.rss, "rss_bytes_end": b.rss, "rss_bytes_max": max,
                "fds_start": a.fds, "fds_end": b.fds,
            })
        });
        json!({
            "command": format!("cargo xtask soak --minutes {} --seed {}", self.minutes, self.seed),
            "seed": self.seed,
            "minutes": self.minutes,
            "ran_s": self.ended as f64 / 1000.0,
            "dockerd_restarts": self.dockerd_restarts,
            "settle_s": SETTLE.as_secs_f64(),
            "windows": FaultKind::ALL.iter().map(|k| json!({
                "kind": k.name(), "rule": k.window_rule(), "cap_s": k.cap().map(|c| c.as_secs()),
            })).collect::<Vec<_>>(),
            "requests": {
                "total": self.outcomes.len(),
                "failed": placed.len(),
                "by_client": clients.iter().map(|(c, (n, f))| (c.to_string(), json!({"total": n, "failed": f}))).collect::<serde_json::Map<_, _>>(),
            },
            "failures_outside_windows": {
                "count": outside.len(),
                "by_kind": count_by(&mut outside.iter().map(|p| kind(p))),
                "list": outside.iter().map(|p| {
                    let mut v = p.outcome.to_json();
                    v["agent_down_after"] = json!(self.during_crash(p.outcome));
                    v["log"] = json!(self.excerpt(p.outcome));
                    v
                }).collect::<Vec<_>>(),
            },
            "failures_inside_windows": {
                "count": inside.len(),
                "by_fault": count_by(&mut inside.iter().filter_map(|p| p.fault.map(|f| f.kind.to_owned()))),
                "by_kind": count_by(&mut inside.iter().map(|p| kind(p))),
                "list": inside.iter().take(LISTED_INSIDE).map(|p| {
                    let mut v = p.outcome.to_json();
                    v["fault"] = json!(p.fault.map(|f| format!("{} {} at {}", f.kind, f.target, secs(f.injected))));
                    v
                }).collect::<Vec<_>>(),
            },
            "faults": {
                "count": self.faults.len(),
                "by_kind": count_by(&mut self.faults.iter().map(|f| f.kind.to_owned())),
                "list": self.faults.iter().map(FaultRecord::to_json).collect::<Vec<_>>(),
            },
            "anomalies": self.anomalies.iter().map(|a| json!({"at_s": a.at as f64 / 1000.0, "what": a.what})).collect::<Vec<_>>(),
            "agent": {
                "lives": self.lives.iter().map(|l| json!({
                    "pid": l.pid, "log": l.log.display().to_string(),
                    "started_s": l.started as f64 / 1000.0,
                    "running_s": l.running as f64 / 1000.0,
                    "ended_s": l.ended.as_ref().map(|(at, _)| *at as f64 / 1000.0),
                    "end": l.ended.as_ref().map(|(_, how)| how.clone()),
                })).collect::<Vec<_>>(),
                "footprint": footprint,
                "run_start_end": self.run_span().map(|(a, b)| json!({
                    "start": {"at_s": a.at as f64 / 1000.0, "pid": a.pid, "rss_bytes": a.rss, "fds": a.fds},
                    "end": {"at_s": b.at as f64 / 1000.0, "pid": b.pid, "rss_bytes": b.rss, "fds": b.fds},
                })),
                "samples": self.samples.iter().map(|s| json!([s.at, s.pid, s.rss, s.fds])).collect::<Vec<_>>(),
            },
            "leftovers": self.leftovers,
            "paused_at_agent_exit": self.paused_at_exit,
            "verdict": self.verdict(),
        })
    }

    /// The summary for people.
    pub fn summary(&self) -> String {
        let placed = self.failures();
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "\n== soak: seed {}, {} min asked, {} ran, {} agent lives, dockerd restarts {} ==",
            self.seed,
            self.minutes,
            secs(self.ended),
            self.lives.len(),
            if self.dockerd_restarts { "on" } else { "off" }
        ));
        line(format!(
            "requests: {} ({} failed)",
            self.outcomes.len(),
            placed.len()
        ));
        let mut faults = BTreeMap::<&str, u64>::new();
        for f in &self.faults {
            *faults.entry(f.kind).or_default() += 1;
        }
        line(format!("faults: {} {faults:?}", self.faults.len()));
        let mut by_fault = BTreeMap::<&str, u64>::new();
        for p in placed.iter().filter_map(|p| p.fault) {
            *by_fault.entry(p.kind).or_default() += 1;
        }
        line(format!(
            "failures inside windows (explained): {} {by_fault:?}",
            placed.iter().filter(|p| p.fault.is_some()).count()
        ));
        let outside: Vec<&Placed> = placed.iter().filter(|p| p.fault.is_none()).collect();
        line(format!("failures OUTSIDE windows: {}", outside.len()));
        for p in &outside {
            let o = p.outcome;
            let f = o
                .failure
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            line(format!(
                "  {}..{} {} ({}) {}: {f}",
                secs(o.start),
                secs(o.end),
                o.client,
                o.service,
                o.op
            ));
            for l in self.excerpt(o).iter().take(12) {
                line(format!("      {l}"));
            }
        }
        line(format!("anomalies: {}", self.anomalies.len()));
        for a in &self.anomalies {
            line(format!("  {}: {}", secs(a.at), a.what));
        }
        match self.footprint() {
            Some((pid, a, b, max)) => line(format!(
                "agent footprint (pid {pid}, {}..{}): RSS {:.1} → {:.1} MiB (max {:.1}), open fds {} → {}",
                secs(a.at),
                secs(b.at),
                a.rss as f64 / 1048576.0,
                b.rss as f64 / 1048576.0,
                max as f64 / 1048576.0,
                a.fds,
                b.fds
            )),
            None => line("agent footprint: no samples after the warm-up".to_owned()),
        }
        if let Some((a, b)) = self.run_span() {
            line(format!(
                "agent at the run's start (pid {}, {}) and end (pid {}, {}): RSS {:.1} / {:.1} MiB, \
                 open fds {} / {}",
                a.pid,
                secs(a.at),
                b.pid,
                secs(b.at),
                a.rss as f64 / 1048576.0,
                b.rss as f64 / 1048576.0,
                a.fds,
                b.fds
            ));
        }
        line(format!(
            "leftovers: {}",
            if self.leftovers.is_empty() {
                "none".to_owned()
            } else {
                self.leftovers.join("; ")
            }
        ));
        if !self.paused_at_exit.is_empty() {
            line(format!(
                "paused when the agent stopped (by design; removed with the containers): {}",
                self.paused_at_exit.join(", ")
            ));
        }
        out
    }
}

/// Stamps log lines that begin with an RFC 3339 UTC time (the agent's).
pub fn stamp_agent_log(clock: &Clock, lines: Vec<String>) -> Vec<(u64, String)> {
    let mut last = 0;
    lines
        .into_iter()
        .map(|line| {
            let stamp = line
                .split_whitespace()
                .next()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
            if let Some(at) = stamp.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()) {
                last = clock.of_unix(at.as_millis() as u64);
            }
            (last, line)
        })
        .collect()
}

/// Stamps nginx error log lines (`YYYY/MM/DD HH:MM:SS`, this host's time
/// zone, `utc_offset_s` east of UTC).
pub fn stamp_nginx_log(clock: &Clock, text: &str, utc_offset_s: i64) -> Vec<(u64, String)> {
    text.lines()
        .filter_map(|line| {
            let stamp = line.get(..19)?.replace('/', "-").replacen(' ', "T", 1);
            let local = humantime::parse_rfc3339_weak(&format!("{stamp}Z")).ok()?;
            let unix =
                local.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64 - utc_offset_s;
            Some((clock.of_unix(unix.max(0) as u64 * 1000), line.to_owned()))
        })
        .collect()
}

#[cfg(test)]
#[path = "soak_report_tests.rs"]
mod tests;
