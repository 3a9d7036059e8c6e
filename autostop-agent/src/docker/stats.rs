//! Memory use of a service's running containers from Docker's stats, the
//! way `docker stats` shows it: usage minus the inactive page cache, and
//! the limit, which the daemon reports as the host's RAM for a container
//! without a memory limit. A compose project's containers are summed; the
//! summed limit is capped at the host's RAM (several unlimited containers
//! share one machine, they cannot use it twice). The same answer gives the
//! containers' CPU time, which the busy guard reads.

use bollard::models::ContainerStatsResponse;

use super::resolve::RunState;
use super::runtime::{ctx, DockerRuntime};
use super::DockerError;

/// Memory of a service (or one container) at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUse {
    /// Bytes in use, page cache that can be dropped excluded.
    pub used_bytes: u64,
    /// The memory limit in bytes (the host's RAM when unlimited).
    pub limit_bytes: u64,
    /// CPU time used since the containers started, in nanoseconds (the
    /// busy guard reads its rate between samples).
    pub cpu_ns: u64,
}

impl MemoryUse {
    /// Adds another container's use; the limit sum is capped at
    /// `host_bytes` when known.
    pub fn add(self, other: MemoryUse, host_bytes: Option<u64>) -> MemoryUse {
        let limit = self.limit_bytes.saturating_add(other.limit_bytes);
        MemoryUse {
            used_bytes: self.used_bytes.saturating_add(other.used_bytes),
            limit_bytes: host_bytes.map_or(limit, |host| limit.min(host)),
            cpu_ns: self.cpu_ns.saturating_add(other.cpu_ns),
        }
    }
}

/// The memory figures of one stats answer, or `None` when the answer has
/// no memory section (a container that stopped meanwhile).
///
/// Like the Docker CLI: cgroup v1 subtracts `total_inactive_file`, cgroup
/// v2 `inactive_file`, each only when smaller than the usage.
pub fn memory_of(stats: &ContainerStatsResponse) -> Option<MemoryUse> {
    let memory = stats.memory_stats.as_ref()?;
    let usage = memory.usage?;
    let inactive = memory.stats.as_ref().and_then(|s| {
        s.get("total_inactive_file")
            .or_else(|| s.get("inactive_file"))
            .copied()
    });
    let used = match inactive {
        Some(inactive) if inactive < usage => usage - inactive,
        _ => usage,
    };
    let cpu_ns = stats
        .cpu_stats
        .as_ref()
        .and_then(|c| c.cpu_usage.as_ref())
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    Some(MemoryUse {
        used_bytes: used,
        limit_bytes: memory.limit.unwrap_or(0),
        cpu_ns,
    })
}

/// The host's RAM in bytes (`MemTotal` of `/proc/meminfo`), if readable.
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl DockerRuntime {
    /// Memory use of `service`'s running containers, summed (their stats
    /// are read concurrently, about a second each on Docker 20.10); `None`
    /// when none runs. A container that stops meanwhile is left out.
    pub async fn memory(&self, service: &str) -> Result<Option<MemoryUse>, DockerError> {
        let svc = self.config(service)?;
        let members = self.resolve_service(&svc).await?.members;
        let running = members
            .iter()
            .filter(|m| matches!(m.run_state(), RunState::Up | RunState::Unhealthy));
        let samples = futures_util::future::join_all(
            running.map(|m| async move { (m, self.client().stats_once(&m.id).await) }),
        )
        .await;
        let host = host_memory_bytes();
        let mut total: Option<MemoryUse> = None;
        for (m, sample) in samples {
            let sample = sample.map_err(|e| ctx(service, &m.name, e))?;
            if let Some(use_) = memory_of(&sample) {
                total = Some(total.map_or(use_, |t| t.add(use_, host)));
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: serde_json::Value) -> ContainerStatsResponse {
        serde_json::from_value(json).expect("stats json")
    }

    #[test]
    fn cgroup_v1_subtracts_total_inactive_file() {
        // Shape of Docker 20.10's answer on cgroup v1 (this host).
        let s = stats(serde_json::json!({
            "memory_stats": {
                "usage": 2_375_680u64,
                "limit": 25_276_510_208u64,
                "stats": {"cache": 1_703_936u64, "inactive_file": 946_176u64,
                          "total_inactive_file": 946_176u64}
            }
        }));
        assert_eq!(
            memory_of(&s),
            Some(MemoryUse {
                used_bytes: 2_375_680 - 946_176,
                limit_bytes: 25_276_510_208,
                cpu_ns: 0,
            })
        );
    }

    #[test]
    fn cgroup_v2_subtracts_inactive_file_and_never_underflows() {
        let s = stats(serde_json::json!({
            "memory_stats": {"usage": 1000u64, "limit": 4000u64,
                             "stats": {"inactive_file": 300u64}}
        }));
        assert_eq!(memory_of(&s).map(|m| m.used_bytes), Some(700));
        let odd = stats(serde_json::json!({
            "memory_stats": {"usage": 1000u64, "limit": 4000u64,
                             "stats": {"inactive_file": 5000u64}}
        }));
        assert_eq!(memory_of(&odd).map(|m| m.used_bytes), Some(1000));
    }

    #[test]
    fn a_stopped_container_has_no_figures() {
        let s = stats(serde_json::json!({"memory_stats": {}}));
        assert_eq!(memory_of(&s), None);
    }

    #[test]
    fn sums_cap_the_limit_at_host_memory() {
        let a = MemoryUse {
            used_bytes: 100,
            limit_bytes: 8_000,
            cpu_ns: 0,
        };
        let b = MemoryUse {
            used_bytes: 50,
            limit_bytes: 8_000,
            cpu_ns: 0,
        };
        assert_eq!(
            a.add(b, Some(8_000)),
            MemoryUse {
                used_bytes: 150,
                limit_bytes: 8_000,
                cpu_ns: 0,
            }
        );
        assert_eq!(a.add(b, None).limit_bytes, 16_000);
        let small = MemoryUse {
            used_bytes: 1,
            limit_bytes: 500,
            cpu_ns: 0,
        };
        assert_eq!(small.add(small, Some(8_000)).limit_bytes, 1_000);
    }

    #[test]
    fn mem_total_is_read_in_kib() {
        let text = "MemTotal:       24684092 kB\nMemFree:         8603440 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_684_092 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
    }
}
