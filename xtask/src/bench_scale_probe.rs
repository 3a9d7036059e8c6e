//! What the `scale` section reads of a process in `/proc`: a field of
//! `status` (kB values in bytes), and over an idle window its CPU time, its
//! wake-ups and dockerd's CPU time. A wake-up is a context switch of one of
//! its threads (`voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of
//! every `/proc/PID/task/*/status`): a sleeping thread that is woken
//! (a timer, a socket, a futex) and goes back to sleep counts one.

use std::{
    fs, thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::bench_stack::{cpu_sample, cpu_seconds, dockerd_pid, round_to};

/// Field `key` of a `status` text; kB values in bytes.
pub fn status_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name != key {
            return None;
        }
        let mut words = value.split_whitespace();
        let number: u64 = words.next()?.parse().ok()?;
        let scale = if words.next() == Some("kB") { 1024 } else { 1 };
        Some(number * scale)
    })
}

/// Field `key` of `/proc/<pid>/status`.
pub fn proc_field(pid: u32, key: &str) -> anyhow::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    status_field(&text, key).with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Context switches of one thread's `status` text.
pub fn switches(text: &str) -> u64 {
    status_field(text, "voluntary_ctxt_switches").unwrap_or(0)
        + status_field(text, "nonvoluntary_ctxt_switches").unwrap_or(0)
}

/// Context switches of every thread of `pid` so far, and how many threads
/// it has (a thread that ended took its count along).
pub fn wakeups(pid: u32) -> anyhow::Result<(u64, usize)> {
    let mut total = 0;
    let mut threads = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).context("threads")? {
        let path = entry?.path().join("status");
        // A thread may end between the listing and the read.
        if let Ok(text) = fs::read_to_string(path) {
            total += switches(&text);
            threads += 1;
        }
    }
    Ok((total, threads))
}

/// One idle window of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Its CPU seconds during the window.
    pub cpu_s: f64,
    /// dockerd's CPU seconds during the window.
    pub dockerd_s: f64,
    /// Its threads' context switches during the window.
    pub switches: u64,
    /// The window's length in seconds.
    pub seconds: f64,
    /// Its threads at the end.
    pub threads: usize,
    /// Docker events (any container or network, anyone's) during the
    /// window: each reaches the agent, so a busy Docker is not idle.
    pub docker_events: usize,
}

impl Window {
    /// Measures `pid` (and dockerd) over `length`.
    pub fn measure(pid: u32, length: Duration) -> anyhow::Result<Self> {
        let dockerd = dockerd_pid()?;
        let since = unix_now();
        let (cpu0, docker0, (switches0, _)) =
            (cpu_sample(pid)?, cpu_seconds(dockerd)?, wakeups(pid)?);
        thread::sleep(length);
        let (cpu1, docker1, (switches1, threads)) =
            (cpu_sample(pid)?, cpu_seconds(dockerd)?, wakeups(pid)?);
        let until = unix_now();
        let events = crate::bench_dockerapi::call(
            "GET",
            &format!("/events?since={since:.3}&until={until:.3}"),
            None,
        )
        .context("Docker's events of the window")?;
        Ok(Self {
            cpu_s: cpu1.seconds_since(&cpu0),
            dockerd_s: docker1 - docker0,
            switches: switches1.saturating_sub(switches0),
            seconds: length.as_secs_f64(),
            threads,
            docker_events: count_events(&events),
        })
    }

    /// Its CPU in percent of one core.
    pub fn cpu_percent(&self) -> f64 {
        round_to(self.cpu_s / self.seconds * 100.0, 4)
    }

    /// dockerd's CPU in percent of one core.
    pub fn dockerd_cpu_percent(&self) -> f64 {
        round_to(self.dockerd_s / self.seconds * 100.0, 4)
    }

    /// Its wake-ups per second.
    pub fn wakeups_per_s(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // far below 2^52
        let switches = self.switches as f64;
        round_to(switches / self.seconds, 3)
    }
}

/// Seconds since the epoch, with a fraction.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Events in Docker's `/events` answer (one JSON object per line).
pub fn count_events(body: &str) -> usize {
    body.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tautostop\nThreads:\t5\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n\
                          voluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t3\n";

    #[test]
    fn status_fields_in_bytes_or_plain() {
        assert_eq!(status_field(STATUS, "VmRSS"), Some(10_240 * 1024));
        assert_eq!(status_field(STATUS, "Threads"), Some(5));
        assert_eq!(status_field(STATUS, "VmSwap"), None);
        // A key is matched whole, not as a prefix.
        assert_eq!(status_field(STATUS, "Vm"), None);
        assert_eq!(switches(STATUS), 123);
    }

    #[test]
    fn a_window_reports_percent_of_a_core_and_wakeups_per_second() {
        let w = Window {
            cpu_s: 0.006,
            dockerd_s: 0.03,
            switches: 45,
            seconds: 60.0,
            threads: 4,
            docker_events: 0,
        };
        assert_eq!(w.cpu_percent(), 0.01);
        assert_eq!(w.dockerd_cpu_percent(), 0.05);
        assert_eq!(w.wakeups_per_s(), 0.75);
    }

    #[test]
    fn docker_events_are_counted_by_line() {
        let body = "{\"Type\":\"container\"}\n{\"Type\":\"network\"}\n\n";
        assert_eq!(count_events(body), 2);
        assert_eq!(count_events(""), 0);
    }

    #[test]
    fn a_sleep_is_a_wakeup_of_this_process() {
        let (switches, threads) = wakeups(std::process::id()).expect("own threads");
        assert!(threads >= 1);
        // Sleeping gives the CPU up: one voluntary switch at least.
        thread::sleep(Duration::from_millis(5));
        let (later, _) = wakeups(std::process::id()).expect("own threads");
        assert!(later > switches, "{switches} then {later}");
    }
}
