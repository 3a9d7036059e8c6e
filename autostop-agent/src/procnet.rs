//! Counts established TCP connections to a port inside another process's
//! network namespace, from `/proc/<pid>/net/tcp` and `tcp6`. Used for
//! `hold_while_connected`: a container's own namespace sees every client,
//! whichever path (proxy, DNAT, external) it came by.

use std::path::Path;

/// `st` value of an established socket in `/proc/net/tcp`.
const TCP_ESTABLISHED: &str = "01";

/// Established connections whose local port is `port`, in the network
/// namespace of `pid`; 0 when the process is gone.
pub fn established(pid: u32, port: u16) -> u32 {
    let base = Path::new("/proc").join(pid.to_string()).join("net");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(base.join(file)).ok())
        .map(|table| count_established(&table, port))
        .sum()
}

/// Counts rows of a `/proc/net/tcp`-format table with local port `port` in
/// state ESTABLISHED.
pub fn count_established(table: &str, port: u16) -> u32 {
    let count = table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            let local_port = local
                .and_then(|l| l.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && state == Some(TCP_ESTABLISHED)
        })
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::count_established;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 020011AC:0050 010011AC:D2F4 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 020011AC:0050 010011AC:D2F6 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 020011AC:0050 010011AC:D2F8 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000
   4: 020011AC:1F90 010011AC:D2FA 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn counts_only_established_rows_on_the_port() {
        assert_eq!(count_established(TABLE, 80), 2);
        assert_eq!(count_established(TABLE, 8080), 1);
        assert_eq!(count_established(TABLE, 443), 0);
        assert_eq!(count_established("", 80), 0);
    }
}
