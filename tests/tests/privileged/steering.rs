//! Privileged: drives the agent's `Datapath` in-process to check the
//! sk_lookup steering of cold ports (IPv4, IPv6, from another network
//! namespace), the wake events and their in-kernel rate limit, ignored
//! sources in the classifier, and that dropping the datapath leaves the
//! stock path and no link behind.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use autostop::{
    bpf::{Datapath, Family, Target, WakeEvent, WakeEvents},
    config::Protocol,
    published::HostPort,
};
use autostop_common::WAKE_EVENT_INTERVAL_NS;
use autostop_tests::{
    docker::free_port, eventually, links_of_program, netns::VethNamespace, program_loaded,
    require_root_and_bpf,
};

const WAIT: Duration = Duration::from_secs(5);

/// The agent-side listeners (IPv4 and IPv6 loopback, ephemeral ports),
/// registered with the datapath.
fn agent_listeners(datapath: &mut Datapath) -> (TcpListener, TcpListener) {
    let v4 = TcpListener::bind("127.0.0.1:0").expect("v4 listener");
    let v6 = TcpListener::bind("[::1]:0").expect("v6 listener");
    let slots = datapath.register_listener(&v4).expect("register v4");
    assert!(slots.ipv4 && !slots.ipv6, "{slots:?}");
    let slots = datapath.register_listener(&v6).expect("register v6");
    assert!(slots.ipv6, "{slots:?}");
    (v4, v6)
}

/// A loaded datapath with steering attached.
fn steering_datapath() -> Datapath {
    let mut datapath = Datapath::load().expect("loading the datapath");
    datapath.attach_steering().expect("attaching sk_lookup");
    datapath
}

/// Accepts one connection within `WAIT`.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no connection reached the agent's listener: {e}"),
        }
    }
}

/// Sends a line each way and checks it arrived intact.
fn round_trip(client: &mut TcpStream, server: &mut TcpStream, tag: &str) {
    for stream in [&*client, &*server] {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
    }
    let ping = format!("ping {tag}");
    client.write_all(ping.as_bytes()).expect("client write");
    let mut got = vec![0u8; ping.len()];
    server.read_exact(&mut got).expect("server read");
    assert_eq!(got, ping.as_bytes());
    server.write_all(b"pong").expect("server write");
    let mut got = [0u8; 4];
    client.read_exact(&mut got).expect("client read");
    assert_eq!(&got, b"pong");
}

fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, WAIT) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("expected ECONNREFUSED from {addr} (stock path), got {other:?}"),
    }
}

fn next_event(runtime: &tokio::runtime::Runtime, events: &mut WakeEvents) -> WakeEvent {
    runtime
        .block_on(tokio::time::timeout(WAIT, events.next()))
        .expect("a wake event within 5 s")
        .expect("reading the ring buffer")
}

#[test]
fn privileged_an_address_specific_binding_steers_that_address_only() {
    require_root_and_bpf();
    let mut datapath = steering_datapath();
    let (v4_listener, _v6_listener) = agent_listeners(&mut datapath);
    let port = free_port();
    let lo: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Another local address: every 127/8 address is local on `lo`.
    let other: SocketAddr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), port));
    let lo6: SocketAddr = format!("[::1]:{port}").parse().expect("addr");

    let binding = HostPort::on(lo.ip(), port);
    datapath.steer(binding, 4).expect("steer");
    assert_eq!(datapath.steered().expect("list"), vec![(binding, 4)]);
    let mut client = TcpStream::connect_timeout(&lo, WAIT).expect("steered connect");
    let mut server = accept(&v4_listener);
    assert_eq!(server.local_addr().expect("name"), lo);
    round_trip(&mut client, &mut server, "exact address");
    // Docker would not accept these: the stock path refuses them.
    assert_refused(other);
    assert_refused(lo6);

    // An every-address binding on another port beside it, and the exact
    // one removed: the port filter keeps serving the remaining entry.
    let port2 = free_port();
    datapath.steer(HostPort::any(port2), 5).expect("steer any");
    datapath.unsteer(binding).expect("unsteer");
    assert_refused(lo);
    let any2: SocketAddr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), port2));
    let _client2 = TcpStream::connect_timeout(&any2, WAIT).expect("every-address connect");
    let server2 = accept(&v4_listener);
    assert_eq!(server2.local_addr().expect("name"), any2);
    datapath.unsteer(HostPort::any(port2)).expect("unsteer any");
    assert!(datapath.steered().expect("list").is_empty());
    let stats = datapath.stats().expect("stats");
    assert_eq!(stats.steer_failures, 0, "{stats:?}");
}

#[test]
fn privileged_steered_port_reaches_agent_listener_until_unsteered() {
    require_root_and_bpf();
    let mut datapath = steering_datapath();
    let (v4_listener, v6_listener) = agent_listeners(&mut datapath);
    let port = free_port();
    let v4: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6: SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    assert_refused(v4);

    datapath.steer(HostPort::any(port), 7).expect("steer");
    assert_eq!(
        datapath.steered().expect("list"),
        vec![(HostPort::any(port), 7)]
    );
    let mut client4 = TcpStream::connect_timeout(&v4, WAIT).expect("steered v4 connect");
    let mut server4 = accept(&v4_listener);
    assert_eq!(
        server4.local_addr().expect("name"),
        v4,
        "original destination"
    );
    assert_eq!(
        server4.peer_addr().expect("peer"),
        client4.local_addr().expect("local")
    );
    round_trip(&mut client4, &mut server4, "v4");

    let mut client6 = TcpStream::connect_timeout(&v6, WAIT).expect("steered v6 connect");
    let mut server6 = accept(&v6_listener);
    assert_eq!(
        server6.local_addr().expect("name"),
        v6,
        "original destination"
    );
    round_trip(&mut client6, &mut server6, "v6");

    datapath.unsteer(HostPort::any(port)).expect("unsteer");
    assert!(datapath.steered().expect("list").is_empty());
    round_trip(&mut client4, &mut server4, "v4 after unsteer");
    round_trip(&mut client6, &mut server6, "v6 after unsteer");
    assert_refused(v4);
    assert_refused(v6);
    let stats = datapath.stats().expect("stats");
    assert_eq!(stats.steer_failures, 0, "{stats:?}");
}

#[test]
fn privileged_client_in_another_namespace_is_steered() {
    require_root_and_bpf();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = runtime.enter();
    let mut datapath = steering_datapath();
    let mut events = datapath.wake_events().expect("events");
    let (v4_listener, _v6_listener) = agent_listeners(&mut datapath);
    let ns = VethNamespace::new("steer");
    let port = free_port();
    datapath.steer(HostPort::any(port), 3).expect("steer");

    let target = SocketAddr::V4(SocketAddrV4::new(ns.host_addr, port));
    let client = ns.spawn(move || {
        let mut stream = TcpStream::connect_timeout(&target, WAIT).expect("connect from netns");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.write_all(b"hello").expect("write");
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).expect("read");
        (stream.local_addr().expect("local"), reply)
    });
    let mut server = accept(&v4_listener);
    server.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut hello = [0u8; 5];
    server.read_exact(&mut hello).expect("read");
    assert_eq!(&hello, b"hello");
    server.write_all(b"pong").expect("write");
    let (client_addr, reply) = client.join().expect("client thread");
    assert_eq!(&reply, b"pong");
    assert_eq!(
        server.local_addr().expect("name"),
        target,
        "original destination"
    );
    assert_eq!(server.peer_addr().expect("peer"), client_addr);
    assert_eq!(client_addr.ip(), std::net::IpAddr::V4(ns.ns_addr));

    let event = next_event(&runtime, &mut events);
    assert_eq!((event.service, event.port), (3, port), "{event:?}");
    assert_eq!(event.source, client_addr, "{event:?}");
}

#[test]
fn privileged_one_syn_gives_one_wake_event_with_port_family_and_source() {
    require_root_and_bpf();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = runtime.enter();
    let mut datapath = steering_datapath();
    let mut events = datapath.wake_events().expect("events");
    assert!(
        datapath.wake_events().is_err(),
        "a second reader is refused"
    );
    let (_v4_listener, _v6_listener) = agent_listeners(&mut datapath);
    let port = free_port();
    datapath.steer(HostPort::any(port), 5).expect("steer");

    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let event = next_event(&runtime, &mut events);
    assert_eq!(event.service, 5);
    assert_eq!(event.port, port);
    assert_eq!(event.family, Family::V4);
    assert_eq!(event.source, client.local_addr().expect("local"));
    assert!(!event.ignored_source);
    // Exactly one: nothing else arrives.
    let more = runtime.block_on(tokio::time::timeout(
        Duration::from_millis(300),
        events.next(),
    ));
    assert!(more.is_err(), "a second event for one SYN: {more:?}");

    // 300 ms later the limit has passed: an IPv6 SYN gets its own event.
    let client6 = TcpStream::connect(format!("[::1]:{port}")).expect("connect v6");
    let event6 = next_event(&runtime, &mut events);
    assert_eq!((event6.port, event6.family), (port, Family::V6));
    assert_eq!(event6.source, client6.local_addr().expect("local"));
    assert!(event6.ktime_ns - event.ktime_ns >= WAKE_EVENT_INTERVAL_NS);

    // A source in the ignored set is flagged.
    datapath
        .set_ignored_sources(&["127.0.0.0/8".parse().expect("cidr")])
        .expect("ignore");
    std::thread::sleep(Duration::from_millis(150));
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let flagged = next_event(&runtime, &mut events);
    assert!(flagged.ignored_source, "{flagged:?}");
}

/// Opens a non-blocking connection to `port` on 127.0.0.1 and closes it at
/// once with a reset (SO_LINGER 0), so no state piles up; the SYN has gone
/// through the loopback and its lookup by the time connect returns.
fn knock(port: u16) {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None).expect("socket");
    socket.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
    let addr = SockAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    match socket.connect(&addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => panic!("connect: {e}"),
    }
}

#[test]
fn privileged_wake_events_are_rate_limited_per_port_in_the_kernel() {
    require_root_and_bpf();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = runtime.enter();
    let mut datapath = steering_datapath();
    let mut events = datapath.wake_events().expect("events");
    let (v4_listener, _v6_listener) = agent_listeners(&mut datapath);
    let ports = [free_port(), free_port()];
    for (service, port) in (1u32..).zip(ports) {
        datapath.steer(HostPort::any(port), service).expect("steer");
    }
    let before = datapath.stats().expect("stats");

    const CONNECTS: u64 = 10_000;
    let started = Instant::now();
    for i in 0..CONNECTS {
        knock(ports[(i % 2) as usize]);
    }
    let duration = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = datapath.stats().expect("stats");

    let mut got: Vec<WakeEvent> = Vec::new();
    while let Some(event) = events.try_next() {
        got.push(event);
    }
    // Every SYN was looked up and steered, whatever the listener's backlog
    // did with it afterwards: the count below is the limiter's doing.
    assert!(
        after.steered_lookups - before.steered_lookups >= CONNECTS,
        "lookups {} of {CONNECTS} connects",
        after.steered_lookups - before.steered_lookups
    );
    assert_eq!(after.wake_events_lost, 0, "{after:?}");
    let windows = u64::try_from(duration.as_nanos()).expect("fits") / WAKE_EVENT_INTERVAL_NS;
    let bound = windows + 2;
    for port in ports {
        let mut times: Vec<u64> = got
            .iter()
            .filter(|e| e.port == port)
            .map(|e| e.ktime_ns)
            .collect();
        let count = times.len() as u64;
        eprintln!(
            "port {port}: {count} events for {} connects in {duration:?} (bound {bound})",
            CONNECTS / 2
        );
        assert!(
            (1..=bound).contains(&count),
            "port {port}: {count} events in {duration:?}, expected 1..={bound}"
        );
        // At most one per 100 ms bucket, even with CPUs racing.
        times.sort_unstable();
        let mut buckets: Vec<u64> = times.iter().map(|t| t / WAKE_EVENT_INTERVAL_NS).collect();
        buckets.dedup();
        assert_eq!(
            buckets.len(),
            times.len(),
            "two events in one bucket: {times:?}"
        );
    }
    assert!(got.iter().all(|e| ports.contains(&e.port)), "{got:?}");
    drop(v4_listener);
}

#[test]
fn privileged_ignored_source_is_not_counted() {
    require_root_and_bpf();
    let mut datapath = Datapath::load().expect("load");
    datapath.attach_egress("lo").expect("attach to lo");
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("receiver");
    let target = Target {
        addr: receiver.local_addr().expect("addr"),
        protocol: Protocol::Udp,
    };
    datapath.add_target(&target, 0).expect("target");
    datapath
        .set_ignored_sources(&["127.0.0.2/32".parse().expect("cidr")])
        .expect("ignore");
    assert_eq!(
        datapath.ignored_sources(),
        vec!["127.0.0.2/32".parse().expect("cidr")]
    );

    let counted = UdpSocket::bind("127.0.0.1:0").expect("sender .1");
    let ignored = UdpSocket::bind("127.0.0.2:0").expect("sender .2");
    let send = |from: &UdpSocket, count: usize| {
        for i in 0..count {
            from.send_to(format!("datagram {i}").as_bytes(), target.addr)
                .expect("send");
        }
    };
    send(&counted, 50);
    send(&ignored, 70);
    assert_eq!(datapath.activity(0).expect("activity").packets, 50);
    assert_eq!(datapath.stats().expect("stats").packets_ignored, 70);

    // Replacing the set with nothing counts .2 again.
    datapath.set_ignored_sources(&[]).expect("clear");
    send(&ignored, 10);
    assert_eq!(datapath.activity(0).expect("activity").packets, 60);
}

#[test]
fn privileged_dropping_the_datapath_removes_sk_lookup_link_and_steering() {
    require_root_and_bpf();
    let mut datapath = steering_datapath();
    let (v4_listener, _v6_listener) = agent_listeners(&mut datapath);
    let port = free_port();
    datapath.steer(HostPort::any(port), 9).expect("steer");
    let id = datapath.steering_program_id().expect("program id");
    assert!(program_loaded(id));
    assert_eq!(links_of_program(id).len(), 1, "one sk_lookup link");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let _held = TcpStream::connect_timeout(&addr, WAIT).expect("steered connect");
    let _accepted = accept(&v4_listener);

    drop(datapath);
    assert!(
        eventually(WAIT, || !program_loaded(id)
            && links_of_program(id).is_empty()),
        "sk_lookup program {id} or its link outlived the Datapath"
    );
    // The agent's listener is still open, yet the port is back on the stock
    // path.
    assert_refused(addr);
}
