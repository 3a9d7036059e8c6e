//! Privileged: loads the real eBPF object through the real agent binary,
//! sends known traffic on loopback and checks the kernel's counters and its
//! own listing of programs and links.

use std::{net::UdpSocket, time::Duration};

use autostop::{
    bpf::{Datapath, Target},
    config::Protocol,
};
use autostop_common::{proto, TargetSlotV4};
use autostop_tests::{
    eventually, links_of_program, program_loaded, require_root_and_bpf, AgentProcess,
};

const START: Duration = Duration::from_secs(20);

/// A bound UDP receiver, so the datagrams are delivered (no ICMP replies).
fn receiver(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"))
}

fn send_datagrams(to: std::net::SocketAddr, count: usize) {
    let bind = if to.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let sender = UdpSocket::bind(bind).expect("sender socket");
    for i in 0..count {
        sender
            .send_to(format!("packet {i}").as_bytes(), to)
            .expect("send_to");
    }
}

fn counted(event: &serde_json::Value, target: &str) -> u64 {
    event["targets"]
        .as_array()
        .and_then(|targets| targets.iter().find(|t| t["target"] == target))
        .and_then(|t| t["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter for {target} in {event}"))
}

#[test]
fn privileged_counts_loopback_udp_exactly_on_ipv4_and_ipv6() {
    require_root_and_bpf();
    let v4 = receiver("127.0.0.1:0");
    let v6 = receiver("[::1]:0");
    let (v4_addr, v6_addr) = (
        v4.local_addr().expect("addr"),
        v6.local_addr().expect("addr"),
    );
    let v4_target = format!("{v4_addr}/udp");
    let v6_target = format!("{v6_addr}/udp");
    let mut agent = AgentProcess::spawn(&[
        "watch",
        "--json",
        "--interval",
        "50ms",
        "--iface",
        "lo",
        "--target",
        &v4_target,
        "--target",
        &v6_target,
    ]);
    agent.wait_event("attached", START);

    send_datagrams(v4_addr, 137);
    send_datagrams(v6_addr, 59);

    let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "agent exited with {status}");
    let last = agent
        .drain_events()
        .into_iter()
        .rfind(|e| e["event"] == "counters")
        .expect("a final counters report");
    assert_eq!(counted(&last, &v4_target), 137, "IPv4 count in {last}");
    assert_eq!(counted(&last, &v6_target), 59, "IPv6 count in {last}");
}

#[test]
fn privileged_unregistered_traffic_is_not_counted() {
    require_root_and_bpf();
    let watched = receiver("127.0.0.1:0");
    let other = receiver("127.0.0.1:0");
    let target = format!("{}/udp", watched.local_addr().expect("addr"));
    let mut agent = AgentProcess::spawn(&[
        "watch",
        "--json",
        "--interval",
        "50ms",
        "--iface",
        "lo",
        "--target",
        &target,
    ]);
    agent.wait_event("attached", START);
    send_datagrams(other.local_addr().expect("addr"), 40);
    let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success());
    let last = agent
        .drain_events()
        .into_iter()
        .rfind(|e| e["event"] == "counters")
        .expect("a final counters report");
    assert_eq!(counted(&last, &target), 0, "{last}");
    assert!(
        last["packets_seen"].as_u64().unwrap_or(0) >= 40,
        "classifier saw the traffic: {last}"
    );
}

/// The port pre-filter (`TARGET_PORTS`) follows the targets: two targets
/// on one port are both counted, a target added twice goes with one
/// removal, the other keeps counting, and a port whose last target left
/// and came back is counted again.
#[test]
fn privileged_targets_sharing_a_port_count_until_each_is_removed() {
    require_root_and_bpf();
    let first = receiver("127.0.0.1:0");
    let port = first.local_addr().expect("addr").port();
    let second = receiver(&format!("127.0.0.2:{port}"));
    let (first, second) = (
        Target {
            addr: first.local_addr().expect("addr"),
            protocol: Protocol::Udp,
        },
        Target {
            addr: second.local_addr().expect("addr"),
            protocol: Protocol::Udp,
        },
    );
    let mut datapath = Datapath::load().expect("load");
    datapath.attach_egress("lo").expect("attach to lo");
    datapath.add_target(&first, 0).expect("first target");
    datapath.add_target(&first, 0).expect("first target again");
    datapath.add_target(&second, 1).expect("second target");
    let packets = |datapath: &Datapath, service| datapath.activity(service).expect("read").packets;

    send_datagrams(first.addr, 10);
    send_datagrams(second.addr, 7);
    assert_eq!((packets(&datapath, 0), packets(&datapath, 1)), (10, 7));

    datapath.remove_target(&first).expect("remove first");
    send_datagrams(first.addr, 10);
    send_datagrams(second.addr, 7);
    assert_eq!(
        (packets(&datapath, 0), packets(&datapath, 1)),
        (10, 14),
        "one removal ends a target added twice; the port stays open for the other"
    );

    datapath.remove_target(&second).expect("remove second");
    send_datagrams(second.addr, 7);
    assert_eq!(packets(&datapath, 1), 14, "no target left on the port");
    datapath.add_target(&second, 1).expect("second target back");
    send_datagrams(second.addr, 3);
    assert_eq!(packets(&datapath, 1), 17, "the port is open again");
}

/// Two IPv4 targets that hash to the same `TARGETS_V4` slot are both
/// counted (the slot then sends the classifier to the hash map), and
/// whichever stays after the other is removed keeps counting (the slot
/// holds it alone again).
#[test]
fn privileged_targets_sharing_an_array_slot_are_counted() {
    require_root_and_bpf();
    let first = receiver("127.0.0.1:0");
    let port = first.local_addr().expect("addr").port();
    let index = |octets| TargetSlotV4::index(octets, port, proto::UDP);
    // All of 127.0.0.0/8 is loopback: 16 million candidates for 16,384
    // slots never miss (127.1.0.0/16 alone missed about one run in 55).
    let twin = (0x01_0000..=0xff_ffff_u32)
        .map(|n| {
            let [_, a, b, c] = n.to_be_bytes();
            [127, a, b, c]
        })
        .find(|octets| index(*octets) == index([127, 0, 0, 1]))
        .expect("a loopback address in the same slot");
    let second = receiver(&format!("{}:{port}", std::net::Ipv4Addr::from(twin)));
    let target = |socket: &UdpSocket| Target {
        addr: socket.local_addr().expect("addr"),
        protocol: Protocol::Udp,
    };
    let (first, second) = (target(&first), target(&second));
    let packets = |datapath: &Datapath, service| datapath.activity(service).expect("read").packets;

    for stays in [&first, &second] {
        let mut datapath = Datapath::load().expect("load");
        datapath.attach_egress("lo").expect("attach to lo");
        datapath.add_target(&first, 0).expect("first target");
        datapath.add_target(&second, 1).expect("second target");
        send_datagrams(first.addr, 10);
        send_datagrams(second.addr, 7);
        assert_eq!((packets(&datapath, 0), packets(&datapath, 1)), (10, 7));

        let (goes, service) = if *stays == first {
            (&second, 0)
        } else {
            (&first, 1)
        };
        datapath.remove_target(goes).expect("remove one");
        send_datagrams(first.addr, 10);
        send_datagrams(second.addr, 7);
        let expected = if service == 0 { (20, 7) } else { (10, 14) };
        assert_eq!(
            (packets(&datapath, 0), packets(&datapath, 1)),
            expected,
            "{stays} alone in its slot"
        );
    }
}

/// IPv4 headers with options (IHL > 5) take the classifier's other way to
/// the port (the load helper instead of a fixed offset); they count too.
#[test]
fn privileged_ipv4_with_header_options_is_counted() {
    require_root_and_bpf();
    let watched = receiver("127.0.0.1:0");
    let target = Target {
        addr: watched.local_addr().expect("addr"),
        protocol: Protocol::Udp,
    };
    let mut datapath = Datapath::load().expect("load");
    datapath.attach_egress("lo").expect("attach to lo");
    datapath.add_target(&target, 0).expect("target");

    let sender = UdpSocket::bind("127.0.0.1:0").expect("sender");
    // Three NOPs and an end-of-options: a 24-byte header (IHL 6).
    let options = [1u8, 1, 1, 0];
    set_ip_options(&sender, &options).expect("IP_OPTIONS");
    for i in 0..9 {
        sender
            .send_to(format!("with options {i}").as_bytes(), target.addr)
            .expect("send");
    }
    let mut buf = [0u8; 64];
    watched
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for _ in 0..9 {
        watched.recv(&mut buf).expect("datagram delivered");
    }
    assert_eq!(datapath.activity(0).expect("read").packets, 9);
}

/// Sets IP_OPTIONS on `socket`: raw option bytes, which neither nix nor
/// socket2 wraps, hence the one libc call here.
fn set_ip_options(socket: &UdpSocket, options: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::socklen_t::try_from(options.len()).map_err(std::io::Error::other)?;
    // SAFETY: setsockopt only reads `len` bytes from `options`, a live slice
    // of exactly that length, on a socket we borrow for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            options.as_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts a watcher, checks the kernel lists its program and tcx link, then
/// stops it with `signal` and checks neither remains.
fn leaves_nothing_behind(signal: i32, extra_args: &[&str]) {
    require_root_and_bpf();
    let mut args = vec!["watch", "--json", "--iface", "lo"];
    args.extend_from_slice(extra_args);
    let mut agent = AgentProcess::spawn(&args);
    let attached = agent.wait_event("attached", START);
    let id = attached["program_id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .expect("program_id in the attached event");
    assert!(
        program_loaded(id),
        "kernel does not list program {id} while the agent runs"
    );
    assert_eq!(
        links_of_program(id).len(),
        1,
        "expected one tcx link for program {id}"
    );

    let status = agent.signal_and_wait(signal, Duration::from_secs(10));
    if signal == libc::SIGTERM {
        assert!(status.success(), "clean exit expected, got {status}");
    }
    // The kernel frees programs asynchronously after the last fd closes.
    assert!(
        eventually(Duration::from_secs(5), || !program_loaded(id)
            && links_of_program(id).is_empty()),
        "program {id} or its link is still in the kernel after the agent exited ({status})"
    );
}

#[test]
fn privileged_sigterm_detaches_program_and_link() {
    leaves_nothing_behind(libc::SIGTERM, &[]);
}

/// The benchmark's empty classifier is attached and released like the real
/// one, so a bench run leaves nothing behind either.
#[test]
fn privileged_calibration_program_is_attached_then_released() {
    leaves_nothing_behind(libc::SIGTERM, &["--calibrate"]);
}

#[test]
fn privileged_sigkill_leaves_no_program_or_link() {
    leaves_nothing_behind(libc::SIGKILL, &[]);
}
