//! TCP sockets as the kernel lists them in `/proc` (through `procfs`):
//!
//! - established connections to a port inside another process's network
//!   namespace (`hold_while_connected`: a container's own namespace sees
//!   every client, whichever path — proxy, DNAT, external — it came by);
//! - sockets listening on given ports in the agent's own namespace (the
//!   host's), with the process that owns each: the agent never steers a
//!   port another program listens on (see `agent::port_guard`).

// Reads untrusted bytes (labels, /proc, netlink answers): no byte-offset
// slicing of strings, no unchecked indexing, no unchecked arithmetic.
#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::{collections::BTreeSet, net::SocketAddr};

use procfs::{
    net::{TcpNetEntry, TcpState},
    process::{FDTarget, Process},
};

/// Why `/proc` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcnetError {
    /// A `/proc` file could not be read or parsed.
    #[error("reading /proc: {0}")]
    Proc(#[from] procfs::ProcError),
}

/// Established connections whose local port is `port`, in the network
/// namespace of `pid`; 0 when the process is gone.
pub fn established(pid: u32, port: u16) -> u32 {
    let Ok(process) = i32::try_from(pid)
        .map_err(|_| ())
        .and_then(|pid| Process::new(pid).map_err(|_| ()))
    else {
        return 0;
    };
    let tables = [process.tcp(), process.tcp6()];
    let count = tables
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.local_address.port() == port && entry.state == TcpState::Established)
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The process owning a socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    /// Its PID.
    pub pid: i32,
    /// Its command name (`comm`), e.g. `docker-proxy` or `nginx`.
    pub command: String,
    /// Its command line.
    pub args: Vec<String>,
}

impl Owner {
    /// For a docker-proxy, the container address it relays to (its
    /// `-container-ip` argument).
    pub fn container_ip(&self) -> Option<std::net::IpAddr> {
        let mut after = self.args.iter().skip_while(|a| *a != "-container-ip");
        after.nth(1)?.parse().ok()
    }
}

/// A TCP socket listening in the agent's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostListener {
    /// Its local address (an unspecified address listens on all).
    pub local: SocketAddr,
    /// Its owner, when `/proc` tells (processes of other users may hide
    /// their descriptors from an agent without CAP_SYS_PTRACE).
    pub owner: Option<Owner>,
}

/// A TCP socket in the `LISTEN` state, as `/proc/net/tcp*` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// Its local address (an unspecified address listens on all).
    pub local: SocketAddr,
    /// Its inode, to find the process holding it.
    pub inode: u64,
}

/// The TCP sockets listening on any of `ports` in this process's network
/// namespace (two table reads; no owner search).
pub fn listening(ports: &BTreeSet<u16>) -> Result<Vec<Listening>, ProcnetError> {
    let mut found = Vec::new();
    for table in [procfs::net::tcp()?, procfs::net::tcp6()?] {
        found.extend(listening_in(table, ports));
    }
    Ok(found)
}

/// The entries of one parsed table that listen on one of `ports`.
pub fn listening_in<'a>(
    table: impl IntoIterator<Item = TcpNetEntry, IntoIter: 'a>,
    ports: &'a BTreeSet<u16>,
) -> impl Iterator<Item = Listening> + 'a {
    table
        .into_iter()
        .filter(|e| e.state == TcpState::Listen && ports.contains(&e.local_address.port()))
        .map(|e| Listening {
            local: e.local_address,
            inode: e.inode,
        })
}

/// The TCP sockets listening on any of `ports` in this process's network
/// namespace, with their owners. Owners are searched only when a listener
/// was found, so the usual answer costs two table reads.
pub fn host_listeners(ports: &BTreeSet<u16>) -> Result<Vec<HostListener>, ProcnetError> {
    let found = listening(ports)?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let inodes: BTreeSet<u64> = found.iter().map(|e| e.inode).collect();
    let owners = socket_owners(&inodes);
    Ok(found
        .into_iter()
        .map(|e| HostListener {
            local: e.local,
            owner: owners
                .iter()
                .find(|(inode, _)| *inode == e.inode)
                .map(|(_, owner)| owner.clone()),
        })
        .collect())
}

/// The processes holding the sockets `inodes`, as far as `/proc` shows
/// (every process's descriptors are listed: call it only when a listener
/// was found).
pub fn socket_owners(inodes: &BTreeSet<u64>) -> Vec<(u64, Owner)> {
    let mut found = Vec::new();
    let Ok(processes) = procfs::process::all_processes() else {
        return found;
    };
    for process in processes.flatten() {
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            let FDTarget::Socket(inode) = fd.target else {
                continue;
            };
            if !inodes.contains(&inode) || found.iter().any(|(i, _)| *i == inode) {
                continue;
            }
            let command = process.stat().map(|s| s.comm).unwrap_or_default();
            found.push((
                inode,
                Owner {
                    pid: process.pid,
                    command,
                    args: process.cmdline().unwrap_or_default(),
                },
            ));
        }
    }
    found
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found_with_its_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let found = host_listeners(&BTreeSet::from([port])).expect("proc");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].local, listener.local_addr().expect("addr"));
        let owner = found[0].owner.as_ref().expect("own sockets are visible");
        assert_eq!(owner.pid, i32::try_from(std::process::id()).expect("pid"));
        drop(listener);
        assert!(host_listeners(&BTreeSet::from([port]))
            .expect("proc")
            .is_empty());
    }

    #[test]
    fn a_docker_proxy_names_the_container_it_relays_to() {
        let owner = Owner {
            pid: 1,
            command: "docker-proxy".into(),
            args: "/usr/bin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80"
                .split(' ')
                .map(str::to_owned)
                .collect(),
        };
        assert_eq!(
            owner.container_ip(),
            Some("172.17.0.2".parse().expect("ip"))
        );
        assert_eq!(Owner::default().container_ip(), None);
    }

    #[test]
    fn established_connections_of_this_process_are_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _server = listener.accept().expect("accept");
        assert_eq!(established(std::process::id(), port), 1);
        assert_eq!(established(u32::MAX, port), 0);
    }

    /// A `/proc/net/tcp` line for `local` (hex, little-endian as on x86)
    /// in state `st`.
    fn line(slot: u8, local: &str, st: &str, inode: &str) -> String {
        format!(
            "{slot:4}: {local} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0"
        )
    }

    fn parse(text: &[u8]) -> procfs::ProcResult<procfs::net::TcpNetEntries> {
        use procfs::FromBufReadSI as _;
        let info = procfs::ExplicitSystemInfo {
            boot_time_secs: 0,
            ticks_per_second: 100,
            page_size: 4096,
            is_little_endian: true,
        };
        procfs::net::TcpNetEntries::from_buf_read(text, &info)
    }

    #[test]
    fn listeners_on_the_ports_asked_are_picked_from_a_table() {
        let text = [
            "  sl  local_address rem_address   st".to_owned(),
            line(0, "0100007F:1F90", "0A", "111"),
            line(1, "0100007F:1F91", "01", "112"),
            line(2, "00000000:1F92", "0A", "113"),
        ]
        .join("\n");
        let table = parse(text.as_bytes()).expect("a valid table").0;
        let found: Vec<Listening> = listening_in(table, &BTreeSet::from([8080, 8081])).collect();
        assert_eq!(
            found,
            [Listening {
                local: "127.0.0.1:8080".parse().expect("addr"),
                inode: 111
            }]
        );
    }

    use proptest::prelude::*;

    /// Table-like text: header, then lines of hex-ish fields.
    fn table_text() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            "[0-9A-F]{8}:[0-9A-F]{4}",
            "[0-9A-F]{32}:[0-9A-F]{4}",
            "[0-9A-Fa-z:]{0,12}",
            "[0-9]{1,25}",
        ];
        prop::collection::vec(prop::collection::vec(field, 0..18), 0..6).prop_map(|lines| {
            let mut text = "  sl  local_address rem_address   st\n".to_owned();
            for fields in lines {
                text.push_str(&fields.join(" "));
                text.push('\n');
            }
            text
        })
    }

    proptest! {
        /// Any bytes where a TCP table is read: an error or entries,
        /// never a panic; picking listeners from them neither.
        #[test]
        fn prop_tcp_tables_from_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(table) = parse(&bytes) {
                let _ = listening_in(table.0, &BTreeSet::from([80])).count();
            }
        }

        /// Table-shaped text with wrong, short or huge fields: the same.
        #[test]
        fn prop_tcp_table_shaped_text_never_panics(text in table_text(), port in any::<u16>()) {
            if let Ok(table) = parse(text.as_bytes()) {
                for found in listening_in(table.0, &BTreeSet::from([port])) {
                    prop_assert_eq!(found.local.port(), port);
                }
            }
        }

        /// Any command line: docker-proxy's container address is read
        /// without a panic, and only from the word after `-container-ip`.
        #[test]
        fn prop_container_ip_from_any_arguments(args in prop::collection::vec(any::<String>(), 0..8)) {
            let owner = Owner { pid: 1, command: "docker-proxy".into(), args: args.clone() };
            if let Some(ip) = owner.container_ip() {
                let at = args.iter().position(|a| a == "-container-ip").expect("flag present");
                prop_assert_eq!(args.get(at + 1).and_then(|a| a.parse().ok()), Some(ip));
            }
        }
    }
}
