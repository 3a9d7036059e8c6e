//! Privileged: the SYN_SENT conntrack clean-up over ctnetlink against the
//! kernel's real conntrack table (an emulated Docker whose "container"
//! drops SYNs, so DNATed connections stay half-open), and the cost of a
//! warm-up change over netlink against the `nft`/`conntrack` processes the
//! agent used to spawn (printed, never asserted). The tools are used here
//! only to read the kernel's state and to time the old way.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use autostop::{
    netfilter::{WarmupOptions, WarmupRedirect},
    published::HostPort,
};
use autostop_tests::{
    netlab::{
        conntrack_entries, greet, run, runtime, syn_sent_entries, unique_index, warmup_options,
        DockerLike, GreetingServer, NftTableGuard,
    },
    require_root_and_bpf,
};

/// Options with a table name of this test's own.
fn options() -> WarmupOptions {
    warmup_options("autostop_test_ct_")
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
fn privileged_forget_syn_sent_removes_only_that_ports_half_open_entries() {
    require_root_and_bpf();
    let rt = runtime();
    // P has a stand-in agent listener (for an ESTABLISHED entry on P made
    // during warm-up); `other` has nothing.
    let agent = GreetingServer::start(None, SocketAddr::from(([0, 0, 0, 0], 0)), "agent");
    let port = agent.addr.port();
    let other = port.wrapping_add(1).max(1024);
    let lab = DockerLike::new(&[port, other]);
    lab.drop_syns();
    let redirect = rt
        .block_on(WarmupRedirect::install(options()))
        .expect("install");

    let host = HostPort::any(port);
    rt.block_on(redirect.warm(host)).expect("warm");
    let mut held = greet(lab.local(port)).expect("connection during warm-up");
    assert_eq!(held.greeting, "agent");
    rt.block_on(redirect.cool(host)).expect("cool");
    // Now P goes to the container, which drops the SYN.
    unanswered_syn(lab.local(port));
    unanswered_syn(lab.local(other));
    assert!(syn_sent_entries(port) >= 1, "no SYN_SENT entry for {port}");
    assert!(
        syn_sent_entries(other) >= 1,
        "no SYN_SENT entry for {other}"
    );
    assert!(
        conntrack_entries(None, port, "ESTABLISHED") >= 1,
        "no ESTABLISHED entry for {port}"
    );

    let deleted = rt.block_on(redirect.forget_syn_sent(host)).expect("forget");
    assert!(deleted >= 1, "reported {deleted} deleted");
    assert_eq!(
        syn_sent_entries(port),
        0,
        "a SYN_SENT entry of {port} is left"
    );
    assert!(
        syn_sent_entries(other) >= 1,
        "another port's entry was deleted"
    );
    assert!(
        conntrack_entries(None, port, "ESTABLISHED") >= 1,
        "the established connection's entry was deleted"
    );
    assert_eq!(held.echo("still here"), "still here", "held connection");
    assert_eq!(
        rt.block_on(redirect.forget_syn_sent(host))
            .expect("forget again"),
        0
    );
    rt.block_on(redirect.forget_syn_sent(HostPort::any(other)))
        .expect("clean up");
}

#[test]
fn privileged_forget_syn_sent_of_an_address_keeps_other_addresses_entries() {
    require_root_and_bpf();
    let rt = runtime();
    let port = 40300 + u16::from(unique_index());
    let lab = DockerLike::new(&[port]);
    lab.drop_syns();
    let redirect = rt
        .block_on(WarmupRedirect::install(options()))
        .expect("install");
    // Both veth addresses are local; Docker's emulated DNAT takes either to
    // the container, which drops the SYN.
    let (ctr_side, cli_side) = (lab.host_ctr_side, lab.host_cli_side);
    unanswered_syn(SocketAddr::from((ctr_side, port)));
    unanswered_syn(SocketAddr::from((cli_side, port)));
    assert!(conntrack_entries(Some(ctr_side), port, "SYN_SENT") >= 1);
    assert!(conntrack_entries(Some(cli_side), port, "SYN_SENT") >= 1);

    let target = HostPort::on(IpAddr::V4(ctr_side), port);
    let deleted = rt
        .block_on(redirect.forget_syn_sent(target))
        .expect("forget");
    assert!(deleted >= 1, "reported {deleted} deleted");
    assert_eq!(conntrack_entries(Some(ctr_side), port, "SYN_SENT"), 0);
    assert!(
        conntrack_entries(Some(cli_side), port, "SYN_SENT") >= 1,
        "the other address's entry was deleted"
    );
    rt.block_on(redirect.forget_syn_sent(HostPort::any(port)))
        .expect("clean up");
    assert_eq!(syn_sent_entries(port), 0);
}

/// Median and mean of `samples`, for printing.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).expect("count");
    format!(
        "median {:?}, mean {:?} over {}",
        samples[samples.len() / 2],
        mean,
        samples.len()
    )
}

/// Times `f` `rounds` times.
fn time(rounds: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect()
}

#[test]
fn privileged_measure_warm_and_cool_over_netlink_and_by_spawning_nft() {
    require_root_and_bpf();
    let rt = runtime();
    let rounds = 50;
    let port = 40600 + u16::from(unique_index());
    let host = HostPort::any(port);

    // After: the agent's way, one netlink transaction each.
    let redirect = rt
        .block_on(WarmupRedirect::install(options()))
        .expect("install");
    let (mut warm, mut cool) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        warm.extend(time(1, || rt.block_on(redirect.warm(host)).expect("warm")));
        cool.extend(time(1, || rt.block_on(redirect.cool(host)).expect("cool")));
    }
    let mut forget = time(rounds, || {
        rt.block_on(redirect.forget_syn_sent(host)).expect("forget");
    });
    assert!(rt
        .block_on(redirect.kernel_elements())
        .expect("list")
        .is_empty());
    drop(redirect);

    // Before: what the agent spawned for the same changes.
    let table = format!("autostop_test_spawn_{}", unique_index());
    let _guard = NftTableGuard {
        family: "inet".to_owned(),
        name: table.clone(),
    };
    run(
        "nft",
        &["-f", "-"],
        Some(&format!(
            "table inet {table} {{\n set warming {{ type inet_service; flags timeout; }}\n}}\n"
        )),
    );
    let element = |timeout: bool| {
        let elem = if timeout {
            format!(r#"{{"elem":{{"val":{port},"timeout":5}}}}"#)
        } else {
            format!(r#"{{"elem":{{"val":{port}}}}}"#)
        };
        format!(
            r#"{{"element":{{"family":"inet","table":"{table}","name":"warming","elem":[{elem}]}}}}"#
        )
    };
    let add = format!(r#"{{"nftables":[{{"add":{}}}]}}"#, element(true));
    let remove = format!(
        r#"{{"nftables":[{{"add":{}}},{{"delete":{}}}]}}"#,
        element(true),
        element(false)
    );
    let port_text = port.to_string();
    let conntrack_args = |family| {
        [
            "-D", "-f", family, "-p", "tcp", "--dport", &port_text, "--state", "SYN_SENT",
        ]
        .map(str::to_owned)
    };
    let (mut warm_spawn, mut cool_spawn) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        warm_spawn.extend(time(1, || {
            run("nft", &["-j", "-f", "-"], Some(&add));
        }));
        cool_spawn.extend(time(1, || {
            run("nft", &["-j", "-f", "-"], Some(&remove));
            for family in ["ipv4", "ipv6"] {
                // Exit status 1 with "0 flow entries" when nothing matched.
                let _ = std::process::Command::new("conntrack")
                    .args(conntrack_args(family))
                    .output()
                    .expect("running conntrack");
            }
        }));
    }

    eprintln!("warm  over netlink:         {}", summary(&mut warm));
    eprintln!("warm  spawning nft:         {}", summary(&mut warm_spawn));
    eprintln!("cool  over netlink:         {}", summary(&mut cool));
    eprintln!("cool  spawning nft+conntrack: {}", summary(&mut cool_spawn));
    eprintln!("forget_syn_sent (netlink):  {}", summary(&mut forget));
}
