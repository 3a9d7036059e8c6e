//! Privileged: the warm-up redirect against an emulated Docker (a
//! "container" namespace behind an nft DNAT at priority -100, no Docker
//! needed). Checks which server a new connection reaches with and without
//! the port in `warming`, from the host and from an external namespace,
//! the elements' timeout and refresh, table reconciliation and clean-up,
//! and the SYN_SENT conntrack clean-up.

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use autostop::netfilter::{WarmupOptions, WarmupRedirect};
use autostop_tests::{
    eventually,
    netlab::{
        greet, greeting_of, nft_table_exists, syn_sent_entries, unique_index, DockerLike,
        GreetingServer, NftTableGuard,
    },
    require_root_and_bpf,
};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Options with a table name of this test's own.
fn options() -> WarmupOptions {
    WarmupOptions {
        table: format!("autostop_test_{}", unique_index()),
        ..WarmupOptions::default()
    }
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

    rt.block_on(redirect.warm(port)).expect("warm");
    assert_eq!(
        greeting_of(lab.local(port)),
        "agent",
        "warming, host client"
    );
    assert_eq!(
        lab.external_greeting(port),
        "agent",
        "warming, external client"
    );
    let mut held = greet(lab.local(port)).expect("connection during warm-up");
    assert_eq!(held.greeting, "agent");

    rt.block_on(redirect.cool(port)).expect("cool");
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
    rt.block_on(refreshed.warm(40001)).expect("warm");
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let elements = rt.block_on(refreshed.kernel_elements()).expect("list");
        assert_eq!(
            elements.len(),
            1,
            "refreshed element vanished: {elements:?}"
        );
        assert_eq!(elements[0].0, 40001);
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(refreshed);

    // Never refreshed (the agent is gone): expires by itself.
    let stale = rt
        .block_on(WarmupRedirect::install(short(Duration::from_secs(3600))))
        .expect("install");
    rt.block_on(stale.warm(40002)).expect("warm");
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
    rt.block_on(redirect.warm(40003)).expect("warm");
    // After 3 s without refresh the expiry would read 2 s or less.
    std::thread::sleep(Duration::from_secs(3));
    let elements = rt.block_on(redirect.kernel_elements()).expect("list");
    let expires = elements[0].1.expect("expiry listed");
    assert!(expires >= 3, "expiry not refreshed: {elements:?}");
}

#[test]
fn privileged_install_replaces_a_stale_table_and_drop_removes_it() {
    require_root_and_bpf();
    let rt = runtime();
    let options = options();
    // A dead agent's table, with a chain ours never has.
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
    let listing = autostop_tests::netlab::run(
        "nft",
        &["-j", "list", "table", "inet", &options.table],
        None,
    );
    let text = String::from_utf8_lossy(&listing.stdout);
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
        text.contains("\"prerouting\"") && text.contains("\"output\""),
        "{text}"
    );
    assert!(nft_table_exists("inet", &options.table));
    drop(redirect);
    assert!(
        !nft_table_exists("inet", &options.table),
        "Drop left the table"
    );
}

/// Sends a SYN to `addr` that nobody answers, leaving a SYN_SENT entry.
fn unanswered_syn(addr: SocketAddr) {
    let result = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(
        result.is_err(),
        "{addr} answered; the container should drop SYNs"
    );
}

#[test]
fn privileged_forget_syn_sent_removes_only_that_ports_entries() {
    require_root_and_bpf();
    let rt = runtime();
    let (port, other) = (40005, 40006);
    let lab = DockerLike::new(&[port, other]);
    lab.drop_syns();
    let redirect = rt
        .block_on(WarmupRedirect::install(options()))
        .expect("install");
    unanswered_syn(lab.local(port));
    unanswered_syn(lab.local(other));
    assert!(syn_sent_entries(port) >= 1, "no SYN_SENT entry for {port}");
    assert!(
        syn_sent_entries(other) >= 1,
        "no SYN_SENT entry for {other}"
    );

    let deleted = rt.block_on(redirect.forget_syn_sent(port)).expect("forget");
    assert!(deleted >= 1, "reported {deleted} deleted");
    assert_eq!(syn_sent_entries(port), 0);
    assert!(
        syn_sent_entries(other) >= 1,
        "another port's entry was deleted"
    );
    assert_eq!(
        rt.block_on(redirect.forget_syn_sent(port))
            .expect("forget again"),
        0
    );
    rt.block_on(redirect.forget_syn_sent(other))
        .expect("clean up");
}
