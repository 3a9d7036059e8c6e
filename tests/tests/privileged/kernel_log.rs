//! Privileged: the kernel programs' log lines (aya-log) reach the agent's
//! log. `autostop run` steers a stopped service's port; the test empties
//! the agent's listener slots behind its back (as if its listeners had
//! gone), knocks on the port, and finds the sk_lookup program's line about
//! the missing listener among the agent's logs, under `autostop::ebpf`,
//! with the failure counted in the datapath's own counters; the reader is
//! a task on `/healthz` and ends with the agent.

use std::{net::TcpStream, time::Duration};

use autostop_tests::{
    agent::{
        clear_listener_slots, container, datapath_stats, echo_script, local, service_toml, setup,
        steered_entries, AgentConfig, RunningAgent,
    },
    docker::free_port,
    eventually,
};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn privileged_a_missing_listener_is_logged_by_the_kernel_under_autostop_ebpf() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, echo_script());
    let config = AgentConfig::new(&service_toml("kernlog", port, &c.name, "10m"));
    let mut agent = RunningAgent::start_with_env(&config, &[("RUST_LOG", "autostop=debug")]);
    agent.wait_state("kernlog", "stopped", WAIT);
    // Healthy once the first refresh has reached Docker (just after start).
    let healthy = || {
        agent
            .api_get("/healthz")
            .is_ok_and(|(status, _)| status == 200)
    };
    assert!(eventually(WAIT, healthy), "{:?}", agent.api_get("/healthz"));
    let (_, health) = agent.api_get("/healthz").expect("healthz");
    let health: serde_json::Value = serde_json::from_str(&health).expect("healthz JSON");
    assert_eq!(health["tasks"]["kernel-log"], "running", "{health}");
    let pid = agent.pid();
    assert!(
        eventually(WAIT, || steered_entries(pid) > 0),
        "the stopped service's port is not steered"
    );

    let cleared = clear_listener_slots(pid);
    assert!(cleared >= 1, "the agent had no listener in its slots");
    let before = datapath_stats(pid);
    // Nothing to hand the connection to: it takes the stock path, where
    // nothing listens on the stopped container's port.
    let _ = TcpStream::connect_timeout(&local(port), Duration::from_secs(2));
    assert!(
        eventually(WAIT, || datapath_stats(pid).steer_failures
            > before.steer_failures),
        "the steering program counted no failure: {:?}",
        datapath_stats(pid)
    );

    let needle = format!("port {port}: no listener in slot 0");
    let line = agent.wait_log(&needle, WAIT);
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains("autostop::ebpf:"), "{line}");
    assert!(line.contains("program=\"steer_lookup\""), "{line}");
    assert!(
        line.contains("the connection takes the stock path"),
        "{line}"
    );

    // The reader is one of the tasks shutdown joins: a clean exit.
    let status = agent.signal_and_wait(libc::SIGTERM, WAIT);
    assert!(status.success(), "exit after SIGTERM: {status}");
}
