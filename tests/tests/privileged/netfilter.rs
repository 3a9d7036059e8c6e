//! Privileged: the warm-up redirect over netlink against an emulated Docker
//! (a "container" namespace behind an nft DNAT at priority -100, no Docker
//! needed). Checks which server a new connection reaches with and without
//! an element, for every local address and for one address only, from the
//! host and from an external namespace; the elements' timeout and refresh;
//! what `nft` lists back; table reconciliation; and that the kernel deletes
//! the table when its owner dies. `nft` is used here only to read (and to
//! build the emulated Docker); the agent never runs it. Conntrack clean-up
//! and the timing figures are in `conntrack`.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use autostop::{
    netfilter::{WarmupOptions, WarmupRedirect},
    published::HostPort,
};
use autostop_tests::{
    eventually,
    netlab::{
        greet, greeting_of, nft_table_exists, nft_table_listing, runtime, unique_index,
        warmup_options, DockerLike, GreetingServer, NftTableGuard,
    },
    require_root_and_bpf,
};

/// Options with a table name of this test's own.
fn options() -> WarmupOptions {
    warmup_options("autostop_test_")
}

/// The stand-in for the agent's steered listener: 0.0.0.0 on a free port,
/// which becomes the published port P.
fn agent_listener() -> GreetingServer {
    GreetingServer::start(None, SocketAddr::from(([0, 0, 0, 0], 0)), "agent")
}

#[test]
fn privileged_warming_port_skips_docker_dnat_until_cooled() {
    require_root_and_bpf();
    let rt = runtime();
    let agent = agent_listener();
    let port = agent.addr.port();
    let lab = DockerLike::new(&[port]);
    let redirect = rt
        .block_on(WarmupRedirect::install(options()))
        .expect("install");

    assert_eq!(
        greeting_of(lab.local(port)),
        "container",
        "not warming: Docker's DNAT applies"
    );

    let host = HostPort::any(port);
    rt.block_on(redirect.warm(host)).expect("warm");
    assert_eq!(redirect.warming(), [host]);
    assert_eq!(
        greeting_of(lab.local(port)),
        "agent",
        "warming, host client"
    );
    assert_eq!(
        greeting_of(SocketAddr::from(([127, 0, 0, 1], port))),
        "agent",
        "warming, loopback client"
    );
    assert_eq!(
        lab.external_greeting(port),
        "agent",
        "warming, external client"
    );
    let mut held = greet(lab.local(port)).expect("connection during warm-up");
    assert_eq!(held.greeting, "agent");

    rt.block_on(redirect.cool(host)).expect("cool");
    assert!(redirect.warming().is_empty());
    assert_eq!(
        greeting_of(lab.local(port)),
        "container",
        "cooled: new connections reach the container"
    );
    assert_eq!(
        held.echo("still here"),
        "still here",
        "connection held across cool"
    );
    assert!(rt
        .block_on(redirect.kernel_elements())
        .expect("list")
        .is_empty());
    rt.block_on(redirect.shutdown()).expect("shutdown");
}

#[test]
fn privileged_address_element_redirects_that_address_only() {
    require_root_and_bpf();
    let rt = runtime();
    let agent = agent_listener();
    let port = agent.addr.port();
    let lab = DockerLike::new(&[port]);
    let redirect = rt
        .block_on(WarmupRedirect::install(options()))
        .expect("install");
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    // The lab's two veth addresses are both local to the host; Docker's
    // emulated DNAT sends either to the container. (Not 127.0.0.1: a DNAT
    // from loopback to the container needs route_localnet, which is why
    // Docker proxies loopback instead.)
    let other = SocketAddr::from((lab.host_cli_side, port));

    // One non-loopback local address.
    let on_veth = HostPort::on(IpAddr::V4(lab.host_ctr_side), port);
    rt.block_on(redirect.warm(on_veth)).expect("warm");
    assert_eq!(greeting_of(lab.local(port)), "agent", "the warmed address");
    assert_eq!(
        greeting_of(other),
        "container",
        "another local address on the same port keeps Docker's DNAT"
    );
    // From outside, Docker's DNAT forwards to the container, which the
    // host's FORWARD policy (Docker's DROP) stops in this lab: all that can
    // be seen is that the agent does not answer.
    assert_ne!(
        lab.external_greeting(port),
        "agent",
        "that other address, from outside, is not redirected"
    );
    rt.block_on(redirect.cool(on_veth)).expect("cool");
    assert_eq!(greeting_of(lab.local(port)), "container", "cooled");

    // 127.0.0.1 only, as `-p 127.0.0.1:P:80` publishes.
    let on_loopback = HostPort::on(IpAddr::from([127, 0, 0, 1]), port);
    rt.block_on(redirect.warm(on_loopback)).expect("warm");
    assert_eq!(greeting_of(loopback), "agent", "127.0.0.1 is redirected");
    assert_eq!(
        greeting_of(lab.local(port)),
        "container",
        "a veth address is not"
    );
    assert_ne!(lab.external_greeting(port), "agent", "nor from outside");
    let elements = rt.block_on(redirect.kernel_elements()).expect("list");
    assert_eq!(elements.len(), 1, "{elements:?}");
    assert_eq!(elements[0].host, on_loopback);
    rt.block_on(redirect.cool(on_loopback)).expect("cool");
    assert!(rt
        .block_on(redirect.kernel_elements())
        .expect("list")
        .is_empty());
}

#[test]
fn privileged_nft_lists_back_what_netlink_built() {
    require_root_and_bpf();
    let rt = runtime();
    let options = options();
    let redirect = rt
        .block_on(WarmupRedirect::install(options.clone()))
        .expect("install");
    let hosts = [
        HostPort::any(40101),
        HostPort::on(IpAddr::from([127, 0, 0, 1]), 40102),
        HostPort::on("::1".parse().expect("ip"), 40103),
    ];
    for host in hosts {
        rt.block_on(redirect.warm(host)).expect("warm");
    }
    let listing = nft_table_listing("inet", &options.table);
    eprintln!("{listing}");
    for expected in [
        "flags owner",
        "type inet_service",
        "type ipv4_addr . inet_service",
        "type ipv6_addr . inet_service",
        "40101 timeout 5s expires",
        "127.0.0.1 . 40102 timeout 5s expires",
        "::1 . 40103 timeout 5s expires",
        // -110: nft names it from the hook's standard priority.
        "type nat hook prerouting priority dstnat - 10; policy accept;",
        "type nat hook output priority -110; policy accept;",
        // nft folds the nfproto and l4proto checks into what implies them.
        "fib daddr type local tcp dport @warming dnat ip to ip daddr",
        "fib daddr type local tcp dport @warming dnat ip6 to ip6 daddr",
        "fib daddr type local ip daddr . tcp dport @warming4 dnat ip to ip daddr",
        "fib daddr type local ip6 daddr . tcp dport @warming6 dnat ip6 to ip6 daddr",
    ] {
        assert!(
            listing.contains(expected),
            "nft does not list {expected:?}:\n{listing}"
        );
    }
    let mut elements = rt.block_on(redirect.kernel_elements()).expect("list");
    elements.sort_by_key(|e| e.host);
    let mut listed: Vec<HostPort> = elements.iter().map(|e| e.host).collect();
    listed.sort();
    let mut expected = hosts.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(elements
        .iter()
        .all(|e| e.timeout == Some(Duration::from_secs(5))
            && e.expires.is_some_and(|x| x <= Duration::from_secs(5))));
}

#[test]
fn privileged_element_expires_unless_refreshed() {
    require_root_and_bpf();
    let rt = runtime();
    let short = |refresh: Duration| WarmupOptions {
        element_timeout: Duration::from_secs(1),
        refresh_interval: refresh,
        ..options()
    };
    // Refreshed every 300 ms: present for three whole timeouts.
    let refreshed = rt
        .block_on(WarmupRedirect::install(short(Duration::from_millis(300))))
        .expect("install");
    rt.block_on(refreshed.warm(HostPort::any(40001)))
        .expect("warm");
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let elements = rt.block_on(refreshed.kernel_elements()).expect("list");
        assert_eq!(
            elements.len(),
            1,
            "refreshed element vanished: {elements:?}"
        );
        assert_eq!(elements[0].host, HostPort::any(40001));
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(refreshed);

    // Never refreshed (a wedged agent): expires by itself.
    let stale = rt
        .block_on(WarmupRedirect::install(short(Duration::from_secs(3600))))
        .expect("install");
    let on = HostPort::on(IpAddr::from([127, 0, 0, 1]), 40002);
    rt.block_on(stale.warm(on)).expect("warm");
    assert_eq!(rt.block_on(stale.kernel_elements()).expect("list").len(), 1);
    assert!(
        eventually(Duration::from_secs(4), || rt
            .block_on(stale.kernel_elements())
            .expect("list")
            .is_empty()),
        "an unrefreshed element outlived its timeout"
    );
}

#[test]
fn privileged_refresh_restarts_the_element_timeout() {
    require_root_and_bpf();
    let rt = runtime();
    let options = WarmupOptions {
        element_timeout: Duration::from_secs(5),
        refresh_interval: Duration::from_millis(500),
        ..options()
    };
    let redirect = rt
        .block_on(WarmupRedirect::install(options))
        .expect("install");
    rt.block_on(redirect.warm(HostPort::any(40003)))
        .expect("warm");
    // After 3 s without refresh the expiry would read 2 s or less.
    std::thread::sleep(Duration::from_secs(3));
    let elements = rt.block_on(redirect.kernel_elements()).expect("list");
    let expires = elements[0].expires.expect("expiry listed");
    assert!(
        expires >= Duration::from_secs(3),
        "expiry not refreshed: {elements:?}"
    );
}

#[test]
fn privileged_install_replaces_a_stale_table_and_drop_removes_it() {
    require_root_and_bpf();
    let rt = runtime();
    let options = options();
    // A table left by an agent of the nft era, with a chain ours never has.
    let _guard = NftTableGuard {
        family: "inet".to_owned(),
        name: options.table.clone(),
    };
    let stale = format!(
        "table inet {t} {{\n\
         set warming {{ type inet_service; flags timeout; elements = {{ 40004 timeout 1h }}; }}\n\
         chain stale_marker {{\n}}\n}}\n",
        t = options.table
    );
    autostop_tests::netlab::run("nft", &["-f", "-"], Some(&stale));
    let redirect = rt
        .block_on(WarmupRedirect::install(options.clone()))
        .expect("install");
    let text = nft_table_listing("inet", &options.table);
    assert!(
        !text.contains("stale_marker"),
        "stale chain survived: {text}"
    );
    assert!(
        rt.block_on(redirect.kernel_elements())
            .expect("list")
            .is_empty(),
        "stale element survived"
    );
    assert!(
        text.contains("chain prerouting") && text.contains("chain output"),
        "{text}"
    );
    assert!(nft_table_exists("inet", &options.table));
    drop(redirect);
    assert!(
        !nft_table_exists("inet", &options.table),
        "Drop left the table"
    );
}

#[test]
fn privileged_sigkill_of_the_owner_leaves_no_table_within_1s() {
    require_root_and_bpf();
    let table = format!("autostop_test_kill_{}", unique_index());
    let _guard = NftTableGuard {
        family: "inet".to_owned(),
        name: table.clone(),
    };
    let mut holder = Command::new(env!("CARGO_BIN_EXE_hold_warmup_table"))
        .args([table.as_str(), "40005"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting hold_warmup_table");
    let stdout = holder.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the holder");
    assert_eq!(line.trim(), "installed", "the holder did not install");
    assert!(
        nft_table_exists("inet", &table),
        "no table while its owner lives"
    );
    assert!(
        nft_table_listing("inet", &table).contains("40005"),
        "no element while its owner lives"
    );

    holder.kill().expect("SIGKILL");
    let killed = Instant::now();
    holder.wait().expect("wait");
    assert!(
        eventually(Duration::from_secs(1), || !nft_table_exists("inet", &table)),
        "the table outlived its owner by 1 s"
    );
    eprintln!("table gone {:?} after SIGKILL", killed.elapsed());
}

#[test]
fn privileged_a_second_owner_of_the_same_table_is_refused_clearly() {
    require_root_and_bpf();
    let rt = runtime();
    let options = options();
    let first = rt
        .block_on(WarmupRedirect::install(options.clone()))
        .expect("install");
    let error = match rt.block_on(WarmupRedirect::install(options.clone())) {
        Ok(_) => panic!("a second agent took over a living agent's table"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("another running agent owns this table"),
        "{error}"
    );
    assert!(
        rt.block_on(first.kernel_elements()).is_ok(),
        "the first owner's table was disturbed"
    );
}
