//! Network fixtures for the netfilter tests: Docker's port publishing
//! emulated without Docker. A "container" network namespace on a veth pair
//! with a TCP server inside, a test-only nft table doing Docker's DNAT
//! (priority -100) to it, a "client" namespace for the external path, and
//! a server that stands in for the agent's steered listener. Every fixture
//! is a Drop guard.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

/// Runs `program args…` with `input` on stdin, panicking if it fails.
pub fn run(program: &str, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).expect("writing stdin");
    }
    let output = child.wait_with_output().expect("waiting");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A tokio runtime with one worker, to drive the agent's netfilter code
/// from a (synchronous) test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Warm-up options with a table name of this test's own (`PREFIX<index>`).
pub fn warmup_options(prefix: &str) -> autostop::netfilter::WarmupOptions {
    autostop::netfilter::WarmupOptions {
        table: format!("{prefix}{}", unique_index()),
        ..autostop::netfilter::WarmupOptions::default()
    }
}

/// A number unique to this test (pid and a counter), for names and subnets.
pub fn unique_index() -> u8 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id()
        .wrapping_mul(7)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    u8::try_from(n % 250).expect("below 250")
}

/// A named network namespace (`ip netns`), deleted on drop.
pub struct NetNs {
    /// Its name under /run/netns.
    pub name: String,
}

impl NetNs {
    /// Creates the namespace and brings its loopback up.
    pub fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name], None);
        let ns = Self { name };
        ns.exec("ip", &["link", "set", "lo", "up"], None);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str], input: Option<&str>) -> Output {
        let mut argv = vec!["netns", "exec", &self.name, program];
        argv.extend_from_slice(args);
        run("ip", &argv, input)
    }

    /// Runs `f` on a thread that has joined this namespace; sockets it
    /// creates live in the namespace.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(&path);
                    f()
                })
                .join()
                .expect("thread in namespace panicked")
        })
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // Changes only this thread's network namespace.
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A TCP server that greets each connection with a line, then echoes the
/// lines it reads. Stops accepting on drop.
pub struct GreetingServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GreetingServer {
    /// Binds `addr` (in namespace `ns`, if given) and serves `greeting`.
    pub fn start(ns: Option<&NetNs>, addr: SocketAddr, greeting: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let path = ns.map(|ns| format!("/run/netns/{}", ns.name));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            if let Some(path) = path {
                enter(&path);
            }
            let listener = TcpListener::bind(addr).expect("binding the greeting server");
            listener.set_nonblocking(true).expect("nonblocking");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("send addr");
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || serve(stream, greeting));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let addr = rx.recv().expect("server bound");
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(stream: TcpStream, greeting: &str) {
    let _ = stream.set_nonblocking(false);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if writeln!(writer, "{greeting}").is_err() {
        return;
    }
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        if writeln!(writer, "{line}").is_err() {
            return;
        }
    }
}

impl Drop for GreetingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A connected client that has read the server's greeting.
pub struct Greeted {
    /// The first line the server sent ("agent" or "container").
    pub greeting: String,
    reader: BufReader<TcpStream>,
}

impl Greeted {
    /// Sends `line` and returns the echoed line.
    pub fn echo(&mut self, line: &str) -> String {
        writeln!(self.reader.get_mut(), "{line}").expect("writing");
        let mut answer = String::new();
        self.reader.read_line(&mut answer).expect("reading echo");
        answer.trim().to_owned()
    }
}

/// Connects to `addr` and reads the greeting; Err describes what failed.
pub fn greet(addr: SocketAddr) -> Result<Greeted, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("read timeout");
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader
        .read_line(&mut greeting)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    Ok(Greeted {
        greeting: greeting.trim().to_owned(),
        reader,
    })
}

/// The greeting `addr` answers with, or the error text.
pub fn greeting_of(addr: SocketAddr) -> String {
    greet(addr).map(|g| g.greeting).unwrap_or_else(|e| e)
}

/// A veth pair `NAMEh` (host, 10.251.n.base+1/30) – `NAMEn` (in `ns`,
/// 10.251.n.base+2/30, default route via the host side). Returns the host
/// side's name.
fn veth(name: &str, ns: &NetNs, n: u8, base: u8) -> String {
    let (host, inner) = (format!("{name}h"), format!("{name}n"));
    let _ = Command::new("ip").args(["link", "del", &host]).output();
    run(
        "ip",
        &[
            "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &ns.name,
        ],
        None,
    );
    let host_addr = format!("10.251.{n}.{}/30", base + 1);
    let inner_addr = format!("10.251.{n}.{}/30", base + 2);
    let gateway = format!("10.251.{n}.{}", base + 1);
    run("ip", &["addr", "add", &host_addr, "dev", &host], None);
    run("ip", &["link", "set", &host, "up"], None);
    ns.exec("ip", &["addr", "add", &inner_addr, "dev", &inner], None);
    ns.exec("ip", &["link", "set", &inner, "up"], None);
    ns.exec("ip", &["route", "add", "default", "via", &gateway], None);
    host
}

/// A host with a "container": namespaces, veths, a server on the
/// container's port 80 and Docker's DNAT for the published ports.
pub struct DockerLike {
    /// The container's server (stopped first on drop).
    _server: GreetingServer,
    /// The container's namespace (server on 10.251.N.2:80).
    pub ctr: NetNs,
    /// An external client's namespace (10.251.N.6, host side 10.251.N.5).
    pub cli: NetNs,
    /// Host-side address of the container's veth (a local, non-loopback
    /// address on the host).
    pub host_ctr_side: Ipv4Addr,
    /// Host-side address of the client's veth: what the client dials.
    pub host_cli_side: Ipv4Addr,
    /// The container's address.
    pub container: Ipv4Addr,
    /// Name of the test-only DNAT table (family ip).
    pub dnat_table: String,
    /// Host-side veth names, deleted on drop.
    links: Vec<String>,
}

impl DockerLike {
    /// Builds the lab and publishes each of `ports` (host) to the
    /// container's port 80, the way Docker's DNAT does.
    pub fn new(ports: &[u16]) -> Self {
        let n = unique_index();
        let ctr = NetNs::new(format!("autostop-ctr-{n}"));
        let cli = NetNs::new(format!("autostop-cli-{n}"));
        let links = vec![
            veth(&format!("asc{n}"), &ctr, n, 0),
            veth(&format!("asx{n}"), &cli, n, 4),
        ];
        let container = Ipv4Addr::new(10, 251, n, 2);
        let server =
            GreetingServer::start(Some(&ctr), SocketAddr::from((container, 80)), "container");
        let lab = Self {
            _server: server,
            ctr,
            cli,
            host_ctr_side: Ipv4Addr::new(10, 251, n, 1),
            host_cli_side: Ipv4Addr::new(10, 251, n, 5),
            container,
            dnat_table: format!("autostop_test_dnat_{n}"),
            links,
        };
        lab.publish(ports);
        lab
    }

    /// Docker's DNAT, as an nft table at nat priority -100: local
    /// destination, TCP port in `ports` → container:80.
    fn publish(&self, ports: &[u16]) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.dnat_table])
            .output();
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let rule = format!(
            "fib daddr type local tcp dport {{ {} }} dnat to {}:80",
            list.join(", "),
            self.container
        );
        let script = format!(
            "table ip {t} {{\n\
             chain pre {{ type nat hook prerouting priority -100; {rule}; }}\n\
             chain out {{ type nat hook output priority -100; {rule}; }}\n}}\n",
            t = self.dnat_table
        );
        run("nft", &["-f", "-"], Some(&script));
    }

    /// Makes the container drop incoming SYNs to port 80, so a DNATed
    /// connection stays in SYN_SENT.
    pub fn drop_syns(&self) {
        let script = "table inet blackhole {\n\
             chain input { type filter hook input priority 0; tcp dport 80 drop; }\n}\n";
        self.ctr.exec("nft", &["-f", "-"], Some(script));
    }

    /// `host_ctr_side:port`, a local non-loopback address of the host.
    pub fn local(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.host_ctr_side, port))
    }

    /// What an external client (in `cli`) dialing `host_cli_side:port`
    /// is greeted with.
    pub fn external_greeting(&self, port: u16) -> String {
        let addr = SocketAddr::V4(SocketAddrV4::new(self.host_cli_side, port));
        self.cli.within(|| greeting_of(addr))
    }
}

impl Drop for DockerLike {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.dnat_table])
            .output();
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

/// Number of TCP conntrack entries in SYN_SENT for destination `port`.
pub fn syn_sent_entries(port: u16) -> usize {
    conntrack_entries(None, port, "SYN_SENT")
}

/// Number of TCP conntrack entries (IPv4) in `state` whose original
/// destination is `port`, and `dst` when given (read with the `conntrack`
/// tool, a test-only dependency).
pub fn conntrack_entries(dst: Option<Ipv4Addr>, port: u16, state: &str) -> usize {
    let port = port.to_string();
    let mut args = vec!["-L", "-p", "tcp", "--dport", &port, "--state", state];
    let dst = dst.map(|d| d.to_string());
    if let Some(dst) = &dst {
        args.extend(["--orig-dst", dst]);
    }
    let output = Command::new("conntrack")
        .args(&args)
        .output()
        .expect("running conntrack -L");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(state))
        .count()
}

/// `nft list table FAMILY NAME` as text, or the empty string when the
/// table does not exist.
pub fn nft_table_listing(family: &str, name: &str) -> String {
    let output = Command::new("nft")
        .args(["list", "table", family, name])
        .output()
        .expect("running nft");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether `nft -j list tables` shows a table `family name`.
pub fn nft_table_exists(family: &str, name: &str) -> bool {
    let output = run("nft", &["-j", "list", "tables"], None);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("nft json");
    value["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .any(|item| item["table"]["family"] == family && item["table"]["name"] == name)
}

/// Deletes nft table `family name` on drop if it still exists (for tables
/// a test creates by hand, or expects the code under test to remove).
pub struct NftTableGuard {
    /// Table family.
    pub family: String,
    /// Table name.
    pub name: String,
}

impl Drop for NftTableGuard {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", &self.family, &self.name])
            .output();
    }
}
