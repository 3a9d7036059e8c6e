//! Exact activity counts through the real agent: a container that publishes
//! a UDP port with a receiver bound inside its network namespace, senders of
//! an exact number of datagrams from any address (loopback, a client
//! namespace), and reads of the agent's `autostop_activity_packets_total`.
//!
//! UDP makes counts exact: one datagram sent is one packet to the
//! container's address and port on the bridge's egress, whether it is
//! DNAT'd (external clients; loopback without the userland proxy) or relayed
//! one for one by docker-proxy. The receiver is a socket the test binds
//! inside the container (busybox's `nc` has no UDP mode), so no datagram is
//! answered by an ICMP error that docker-proxy could trip over.

use std::{
    fs::File,
    net::{SocketAddr, UdpSocket},
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use nix::sched::{setns, CloneFlags};

use crate::agent::{metric_sum, AppletImage, RunningAgent};
use crate::docker::{inspect, unique, TestContainer, TestNetwork};
use crate::eventually;

/// Port the container receives on.
pub const CONTAINER_PORT: u16 = 80;
/// Longer than the agent's counter sampling period (5 s): a metric read
/// after this includes every packet the kernel counted before it.
pub const SAMPLE: Duration = Duration::from_millis(5_500);

/// A container publishing `host_port/udp` → 80/udp (on `network` if given;
/// Docker's default bridge otherwise), idling until SIGTERM. Created
/// stopped.
pub fn udp_container(image: &AppletImage, host_port: u16, network: Option<&str>) -> TestContainer {
    udp_container_named(&unique("as-udp"), image, host_port, network)
}

/// [`udp_container`] with a given name.
pub fn udp_container_named(
    name: &str,
    image: &AppletImage,
    host_port: u16,
    network: Option<&str>,
) -> TestContainer {
    let publish = format!("{host_port}:{CONTAINER_PORT}/udp");
    let mut opts = vec!["-p", publish.as_str()];
    if let Some(network) = network {
        opts.extend(["--network", network]);
    }
    TestContainer::create(
        name,
        &opts,
        &image.tag,
        &["sh", "-c", "trap 'exit 0' TERM; sleep 2147483647 & wait"],
    )
}

/// A `[[service]]` whose only port is `host_port/udp`, for `container`,
/// never stopped for idleness during a test.
pub fn udp_service_toml(name: &str, host_port: u16, container: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nports = [\"{host_port}/udp\"]\nmode = \"blocking\"\n\
         containers = [\"{container}\"]\nidle_timeout = \"1h\"\nstart_timeout = \"60s\"\n\n"
    )
}

/// A Docker network with IPv6 on a ULA /64 of its own; removed on drop.
pub fn ipv6_network() -> TestNetwork {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid = std::process::id() & 0xffff;
    let subnet = format!(
        "fd00:a5:{pid:x}:{:x}::/64",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    TestNetwork::create_with(&unique("as-v6"), &["--ipv6", "--subnet", &subnet])
}

/// The global IPv6 address of running container `name` on `network`.
pub fn container_ipv6(name: &str, network: &str) -> std::net::IpAddr {
    let text = inspect(
        name,
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").GlobalIPv6Address}}}}"),
    );
    text.parse()
        .unwrap_or_else(|e| panic!("IPv6 address of {name} on {network}: {text:?}: {e}"))
}

/// UDP sockets bound to port 80 inside a running container's network
/// namespace (IPv4, and IPv6 when `ipv6`), so datagrams are delivered and
/// never answered with ICMP. They stay open until dropped; datagrams queue
/// in the kernel unread, which is fine for the counts the tests send.
pub struct UdpSink {
    _sockets: Vec<UdpSocket>,
}

impl UdpSink {
    /// Binds the sockets inside container `name`'s namespace.
    pub fn bind(name: &str, ipv6: bool) -> Self {
        let pid = inspect(name, "{{.State.Pid}}");
        assert!(pid != "0", "container {name} is not running");
        let path = format!("/proc/{pid}/ns/net");
        let sockets = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            // Changes only this short-lived thread's network namespace.
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
            let mut sockets = vec![UdpSocket::bind(("0.0.0.0", CONTAINER_PORT)).expect("bind v4")];
            if ipv6 {
                // Linux binds `[::]` v6-only when a v4 socket holds the port.
                let v6 = socket2::Socket::new(
                    socket2::Domain::IPV6,
                    socket2::Type::DGRAM,
                    Some(socket2::Protocol::UDP),
                )
                .expect("v6 socket");
                v6.set_only_v6(true).expect("IPV6_V6ONLY");
                let any: SocketAddr = format!("[::]:{CONTAINER_PORT}").parse().expect("addr");
                v6.bind(&any.into()).expect("bind v6");
                sockets.push(v6.into());
            }
            sockets
        })
        .join()
        .expect("binding the sink");
        Self { _sockets: sockets }
    }
}

/// Sends `count` datagrams to `to` from one socket bound to `from` (port 0).
pub fn send_datagrams(from: SocketAddr, to: SocketAddr, count: usize) {
    let sender = UdpSocket::bind(from).unwrap_or_else(|e| panic!("binding {from}: {e}"));
    for i in 0..count {
        sender
            .send_to(format!("datagram {i}").as_bytes(), to)
            .unwrap_or_else(|e| panic!("send_to {to}: {e}"));
    }
}

/// The wildcard address of `to`'s family, port 0 (a sender's bind address).
pub fn any_for(to: SocketAddr) -> SocketAddr {
    if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    }
}

/// `autostop_activity_packets_total` of `service` (0 before its first
/// sample).
pub fn packets(agent: &RunningAgent, service: &str) -> u64 {
    metric_sum(
        &agent.metrics(),
        "autostop_activity_packets_total",
        service,
        |_| true,
    )
}

/// Sends one datagram per second with `send_one` until the counter of
/// `service` rises above `above` (the agent has registered the container's
/// address and attached its bridge), then returns the settled count.
pub fn wait_counting(
    agent: &RunningAgent,
    service: &str,
    above: u64,
    mut send_one: impl FnMut(),
) -> u64 {
    let counting = eventually(Duration::from_secs(60), || {
        send_one();
        std::thread::sleep(Duration::from_secs(1));
        packets(agent, service) > above
    });
    assert!(
        counting,
        "the agent never counted traffic into {service} (above {above} packets)"
    );
    std::thread::sleep(SAMPLE);
    packets(agent, service)
}

/// Waits until the counter of `service` reaches `expected`, then one more
/// sampling period, and asserts it is exactly `expected` (neither short nor
/// over). Returns it, as the next baseline.
pub fn assert_packets(agent: &RunningAgent, service: &str, expected: u64, path: &str) -> u64 {
    eventually(Duration::from_secs(15), || {
        packets(agent, service) >= expected
    });
    std::thread::sleep(SAMPLE);
    let got = packets(agent, service);
    assert_eq!(
        got, expected,
        "{path}: activity packets of {service} should be exactly {expected}, got {got}"
    );
    got
}
