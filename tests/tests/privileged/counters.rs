//! Privileged, end to end: the real agent (`autostop run`) counts traffic
//! into a Docker service exactly on every path Docker delivers it by, with
//! the machine's default userland proxy: an external client DNAT'd to the
//! container, 127.0.0.1 and ::1 relayed by docker-proxy, and IPv6 routed to
//! the container's own address. Traffic from an ignored source CIDR does not
//! count, and a bridge deleted and made again under the same name is
//! counted again. (Loopback with the userland proxy off is in
//! `daemon`.)

use std::net::SocketAddr;

use autostop_tests::activity::{
    any_for, assert_packets, container_ipv6, ipv6_network, send_datagrams, udp_container,
    udp_container_named, udp_service_toml, wait_counting, UdpSink, CONTAINER_PORT,
};
use autostop_tests::agent::{local, setup, AgentConfig, RunningAgent};
use autostop_tests::daemon::docker_proxy_running;
use autostop_tests::docker::{docker, free_port, unique, TestNetwork};
use autostop_tests::netns::VethNamespace;

const SERVICE: &str = "udpsvc";

fn from(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().expect("address")
}

/// Sends `count` datagrams from the client namespace to `to`.
fn from_namespace(client: &VethNamespace, to: SocketAddr, count: usize) {
    let bind = SocketAddr::new(client.ns_addr.into(), 0);
    client
        .spawn(move || send_datagrams(bind, to, count))
        .join()
        .expect("namespace sender");
}

#[test]
fn privileged_udp_counts_are_exact_on_every_path_with_the_userland_proxy() {
    let image = setup();
    let network = ipv6_network();
    let port = free_port();
    let container = udp_container(&image, port, Some(&network.name));
    docker(&["start", &container.name]);
    let _sink = UdpSink::bind(&container.name, true);
    assert!(
        docker_proxy_running(port),
        "this test covers the default userland proxy, but no docker-proxy relays port {port}"
    );
    let config = AgentConfig::new(&udp_service_toml(SERVICE, port, &container.name));
    let agent = RunningAgent::start(&config);
    let client = VethNamespace::new("cnt");

    let mut total = wait_counting(&agent, SERVICE, 0, || {
        send_datagrams(from("127.0.0.1"), local(port), 1);
    });

    send_datagrams(from("127.0.0.1"), local(port), 137);
    total = assert_packets(&agent, SERVICE, total + 137, "127.0.0.1 via docker-proxy");

    let host = SocketAddr::new(client.host_addr.into(), port);
    from_namespace(&client, host, 59);
    total = assert_packets(&agent, SERVICE, total + 59, "external client, DNAT");

    let v6_loopback: SocketAddr = format!("[::1]:{port}").parse().expect("address");
    send_datagrams(from("[::1]"), v6_loopback, 41);
    total = assert_packets(&agent, SERVICE, total + 41, "::1 via docker-proxy (IPv6)");

    let direct = SocketAddr::new(
        container_ipv6(&container.name, &network.name),
        CONTAINER_PORT,
    );
    send_datagrams(any_for(direct), direct, 23);
    assert_packets(
        &agent,
        SERVICE,
        total + 23,
        "routed to the container's IPv6 address",
    );
}

#[test]
fn privileged_an_ignored_source_does_not_move_the_counter() {
    let image = setup();
    let port = free_port();
    let container = udp_container(&image, port, None);
    docker(&["start", &container.name]);
    let _sink = UdpSink::bind(&container.name, false);
    let client = VethNamespace::new("ign");
    let config = AgentConfig::new("");
    config.write_raw(&format!(
        "{}ignore_sources = [\"{}/32\"]\n\n{}",
        config.agent_table(),
        client.ns_addr,
        udp_service_toml(SERVICE, port, &container.name)
    ));
    let agent = RunningAgent::start(&config);

    let mut total = wait_counting(&agent, SERVICE, 0, || {
        send_datagrams(from("127.0.0.1"), local(port), 1);
    });

    let host = SocketAddr::new(client.host_addr.into(), port);
    from_namespace(&client, host, 80);
    total = assert_packets(&agent, SERVICE, total, "ignored external client");

    // The counter still moves for everyone else, through the same path.
    let other = VethNamespace::new("ign");
    let host = SocketAddr::new(other.host_addr.into(), port);
    let bind = SocketAddr::new(other.ns_addr.into(), 0);
    other
        .spawn(move || send_datagrams(bind, host, 31))
        .join()
        .expect("namespace sender");
    assert_packets(&agent, SERVICE, total + 31, "external client not ignored");
}

#[test]
fn privileged_a_bridge_made_again_under_the_same_name_is_counted_again() {
    let image = setup();
    // A fixed bridge name (compose `driver_opts`), at most 15 bytes.
    let bridge = format!("asbr{:x}", std::process::id());
    let option = format!("com.docker.network.bridge.name={bridge}");
    let network = || TestNetwork::create_with(&unique("as-samebr"), &["-o", &option]);
    let (name, port) = (unique("as-samebr"), free_port());
    let first_network = network();
    let first = udp_container_named(&name, &image, port, Some(&first_network.name));
    docker(&["start", &first.name]);
    let sink = UdpSink::bind(&first.name, false);
    let config = AgentConfig::new(&udp_service_toml(SERVICE, port, &name));
    let agent = RunningAgent::start(&config);
    let send_one = || send_datagrams(from("127.0.0.1"), local(port), 1);
    let before = wait_counting(&agent, SERVICE, 0, send_one);

    // Network and bridge go away with the container; both come back under
    // the same names (a new interface, which the old attachment died with).
    drop(sink);
    drop(first);
    drop(first_network);
    let second_network = network();
    let second = udp_container_named(&name, &image, port, Some(&second_network.name));
    docker(&["start", &second.name]);
    let _sink = UdpSink::bind(&second.name, false);
    let total = wait_counting(&agent, SERVICE, before, send_one);
    send_datagrams(from("127.0.0.1"), local(port), 43);
    assert_packets(&agent, SERVICE, total + 43, "bridge made again");
}
