//! A network namespace joined to the host by a veth pair, for tests that
//! need a client that is not on the host's loopback. Created with `ip`,
//! removed on Drop (deleting the namespace deletes the pair).

use std::{
    fs::File,
    net::Ipv4Addr,
    process::Command,
    sync::atomic::{AtomicU8, Ordering},
};

use nix::sched::{setns, CloneFlags};

/// Per-process counter so each fixture gets its own names and /30.
static NEXT: AtomicU8 = AtomicU8::new(0);

/// Namespace `name` with `ns_addr`/30 on its veth end; the host end has
/// `host_addr`/30. Both ends are up.
pub struct VethNamespace {
    /// Namespace name (under /var/run/netns).
    pub name: String,
    /// Host-side interface name.
    pub host_if: String,
    /// Address of the host end (10.250.x.1).
    pub host_addr: Ipv4Addr,
    /// Address of the namespace end (10.250.x.2).
    pub ns_addr: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e} (install iproute2)"));
    assert!(status.success(), "ip {args:?} failed: {status}");
}

impl VethNamespace {
    /// Creates the namespace and the pair. Names carry the pid and a counter.
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 bytes.
        let short = format!("{:x}{n:x}", pid % 0x10000);
        let subnet = u8::try_from((pid + u32::from(n) * 7) % 64).expect("< 64") * 4;
        let fixture = Self {
            name: format!("as-{tag}-{pid}-{n}"),
            host_if: format!("asv{short}h"),
            host_addr: Ipv4Addr::new(10, 250, subnet, 1),
            ns_addr: Ipv4Addr::new(10, 250, subnet, 2),
        };
        let ns_if = format!("asv{short}n");
        // From here on Drop cleans up whatever was made.
        ip(&["netns", "add", &fixture.name]);
        ip(&[
            "link",
            "add",
            &fixture.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
            "netns",
            &fixture.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", fixture.host_addr),
            "dev",
            &fixture.host_if,
        ]);
        ip(&["link", "set", &fixture.host_if, "up"]);
        let netns_ip = |args: &[&str]| {
            let mut all = vec!["-n", fixture.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        netns_ip(&[
            "addr",
            "add",
            &format!("{}/30", fixture.ns_addr),
            "dev",
            &ns_if,
        ]);
        netns_ip(&["link", "set", &ns_if, "up"]);
        netns_ip(&["link", "set", "lo", "up"]);
        fixture
    }

    /// Runs `f` on a new thread that has joined the namespace (setns
    /// affects the calling thread only); join the handle for its result.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            // Only changes this thread's network namespace.
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end and with it the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
