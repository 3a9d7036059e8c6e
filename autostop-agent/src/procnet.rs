//! TCP sockets as the kernel lists them in `/proc` (through `procfs`):
//!
//! - established connections to a port inside another process's network
//!   namespace (`hold_while_connected`: a container's own namespace sees
//!   every client, whichever path — proxy, DNAT, external — it came by);
//! - sockets listening on given ports in the agent's own namespace (the
//!   host's), with the process that owns each: labels may not claim a port
//!   another program listens on.

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
        let at = self.args.iter().position(|a| a == "-container-ip")?;
        self.args.get(at + 1)?.parse().ok()
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

/// The TCP sockets listening on any of `ports` in this process's network
/// namespace, with their owners. Owners are searched only when a listener
/// was found, so the usual answer costs two table reads.
pub fn host_listeners(ports: &BTreeSet<u16>) -> Result<Vec<HostListener>, ProcnetError> {
    let mut listening: Vec<TcpNetEntry> = Vec::new();
    for table in [procfs::net::tcp()?, procfs::net::tcp6()?] {
        listening.extend(
            table
                .into_iter()
                .filter(|e| e.state == TcpState::Listen && ports.contains(&e.local_address.port())),
        );
    }
    if listening.is_empty() {
        return Ok(Vec::new());
    }
    let inodes: BTreeSet<u64> = listening.iter().map(|e| e.inode).collect();
    let owners = socket_owners(&inodes);
    Ok(listening
        .into_iter()
        .map(|e| HostListener {
            local: e.local_address,
            owner: owners
                .iter()
                .find(|(inode, _)| *inode == e.inode)
                .map(|(_, owner)| owner.clone()),
        })
        .collect())
}

/// The processes holding the sockets `inodes`, as far as `/proc` shows.
fn socket_owners(inodes: &BTreeSet<u64>) -> Vec<(u64, Owner)> {
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
}
