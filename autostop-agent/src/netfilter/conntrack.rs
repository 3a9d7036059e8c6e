//! Deletes a port's half-open (SYN_SENT) TCP conntrack entries with
//! Debian's `conntrack` tool.
//!
//! A SYN that got a conntrack entry keeps that entry's NAT decision for its
//! retransmits. At the switch from warm-up to the container, and when
//! warm-up begins, the entries of SYNs that have no socket yet must go, so
//! their retransmits are NATed afresh by the current rules.

use std::path::Path;

use super::{command, NetfilterError, Operation};

/// Address families `conntrack -f` is run for (it lists IPv4 only unless
/// told otherwise).
const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// Runs `conntrack -D -f FAMILY -p tcp --dport PORT --state SYN_SENT` for
/// both families and returns how many entries were deleted. `--dport`
/// matches the original direction, i.e. the published host port, also for
/// entries DNATed to a container.
pub(crate) async fn forget_syn_sent(conntrack: &Path, port: u16) -> Result<u64, NetfilterError> {
    let op = Operation::ForgetSynSent(port);
    let port = port.to_string();
    let mut deleted = 0;
    for family in FAMILIES {
        let args = [
            "-D", "-f", family, "-p", "tcp", "--dport", &port, "--state", "SYN_SENT",
        ];
        let output = command::run(op, conntrack, &args, None).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        match (output.status.code(), deleted_count(&stderr)) {
            (Some(0), Some(count)) => deleted += count,
            // Exit status 1 with a count of 0 only means nothing matched.
            (Some(1), Some(0)) => {}
            _ => return Err(command::failed(op, conntrack, &output)),
        }
    }
    Ok(deleted)
}

/// Reads N from conntrack's "N flow entries have been deleted." summary.
fn deleted_count(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        let (head, _) = line.split_once(" flow entries have been deleted")?;
        head.rsplit(' ').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::deleted_count;

    #[test]
    fn reads_the_deleted_count_from_the_summary_line() {
        let stderr = "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n";
        assert_eq!(deleted_count(stderr), Some(3));
        assert_eq!(deleted_count("conntrack v1.4.7: Operation failed"), None);
    }
}
