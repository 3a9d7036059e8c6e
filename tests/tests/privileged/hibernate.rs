//! Issue #20, hibernate (`sleep = "hibernate"`) against the real Docker
//! and cgroup v1: a heavy app (`memapp`: 300 MiB touched, a 20 s boot, an
//! in-memory counter) is paused after its idle timeout and its memory
//! pushed to a swap file the test makes and removes; the first request
//! thaws it without steering (its own listener queued the handshake) and
//! is answered with the counter intact; idle again, the agent is killed
//! while the container's memory limit is lowered, and the next agent puts
//! its own limits back before it wakes it (issue #25); it hibernates again.
//! Without swap it is only paused, with a warning; a killed agent leaves it
//! paused and the next agent adopts it as hibernated and wakes it.

use std::time::{Duration, Instant};

use autostop_fixtures::{memapp, swap};
use autostop_tests::{
    agent::{http_get, local, AgentConfig, RunningAgent},
    docker::{docker, free_port, inspect},
    eventually, OrFail,
};

/// A hibernating `[[service]]` for one named container. A request still
/// being answered (`/all` faulting 300 MiB back from swap can take longer
/// than the idle timeout) keeps it awake: `hold_while_connected`.
fn hibernate_toml(name: &str, port: u16, container: &str, idle: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nport = {port}\nmode = \"blocking\"\n\
         containers = [\"{container}\"]\nidle_timeout = \"{idle}\"\nstart_timeout = \"90s\"\n\
         sleep = \"hibernate\"\nhold_while_connected = true\n\n"
    )
}

fn image() -> autostop_fixtures::docker::Image {
    autostop_tests::require_root_and_bpf();
    autostop_tests::docker::require_docker();
    memapp::build_image("autostop-test-memapp:latest").or_fail()
}

/// Starts the container and waits for its app to answer (its boot).
#[track_caller]
fn start_and_wait(name: &str, port: u16, boot: Duration) {
    docker(&["start", name]);
    assert!(
        eventually(boot + Duration::from_secs(30), || http_get(
            local(port),
            "/"
        )
        .is_ok()),
        "{name} never answered"
    );
}

fn pid(name: &str) -> u32 {
    inspect(name, "{{.State.Pid}}").parse().or_fail()
}

fn resident(name: &str) -> u64 {
    swap::container_cgroup_value(pid(name), "memory.usage_in_bytes").or_fail()
}

fn paused(name: &str) -> bool {
    inspect(name, "{{.State.Paused}}") == "true"
}

/// One request: its time to the whole answer and the counter it returned.
#[track_caller]
fn count(port: u16) -> (Duration, u64) {
    count_at(port, "/")
}

/// [`count`] of `path` (`/all` touches every page of the app's memory).
#[track_caller]
fn count_at(port: u16, path: &str) -> (Duration, u64) {
    let began = Instant::now();
    let (status, body) = http_get(local(port), path).unwrap_or_else(|e| panic!("request: {e}"));
    let took = began.elapsed();
    assert_eq!(status, 200, "{body}");
    let n = memapp::intact_count(&body).unwrap_or_else(|| panic!("memory not intact: {body:?}"));
    (took, n)
}

#[test]
fn privileged_hibernate_gives_ram_back_and_the_first_request_thaws_it() {
    let image = image();
    let swapfile =
        swap::SwapFile::create(&autostop_fixtures::unique("autostop-hib-swap"), 1024).or_fail();
    let port = free_port();
    let name = autostop_fixtures::unique("hibheavy");
    let c = memapp::container(&name, &image, port, 300, 20).or_fail();
    start_and_wait(&c.name, port, Duration::from_secs(20));
    let (_, first) = count(port);
    let awake = resident(&c.name);
    let started_at = inspect(&c.name, "{{.State.StartedAt}}");
    assert!(
        awake >= 300 << 20,
        "the app holds {awake} bytes, expected ≥ 300 MiB"
    );

    let config = AgentConfig::new(&hibernate_toml("heavy", port, &c.name, "3s"));
    let agent = RunningAgent::start(&config);
    agent.wait_state("heavy", "hibernated", Duration::from_secs(90));
    assert!(paused(&c.name), "hibernated but not paused");
    let asleep = resident(&c.name);
    println!(
        "awake {} MiB, hibernated {} MiB resident",
        awake >> 20,
        asleep >> 20
    );
    assert!(
        asleep * 10 <= awake,
        "resident {asleep} bytes is more than 10 % of awake {awake}"
    );
    let view = agent.service("heavy");
    let h = &view["hibernation"];
    assert_eq!(h["reclaimed"], true, "{view}");
    assert!(h["swap_bytes"].as_u64().unwrap_or(0) >= 250 << 20, "{view}");
    assert_eq!(view["sleep"], "hibernate");

    // The first request: answered by the app itself, counter intact.
    let (ttfb, second) = count(port);
    println!("TTFB after hibernate: {ttfb:?}");
    assert_eq!(second, first + 1, "the in-memory counter survived");
    assert!(!paused(&c.name));
    agent.wait_state("heavy", "ready", Duration::from_secs(10));
    assert_eq!(agent.starts("heavy"), 1, "one wake (a thaw), no cold start");
    assert_eq!(
        inspect(&c.name, "{{.State.StartedAt}}"),
        started_at,
        "thawed, not restarted"
    );

    // Idle again: the agent is SIGKILLed while the limit is lowered
    // (issue #25). The next agent puts the original limits back before any
    // unpause; the first request wakes the app under them, intact. All its
    // memory back in RAM first, so the reclaim has 300 MiB to move.
    let (_, touched) = count_at(port, "/all");
    assert_eq!(touched, second + 1);
    let pid = pid(&c.name);
    let limit = || swap::container_cgroup_value(pid, "memory.limit_in_bytes").or_fail();
    let swappiness = || swap::container_cgroup_value(pid, "memory.swappiness").or_fail();
    let (own_limit, own_swappiness) = (limit(), swappiness());
    let mut agent = agent;
    let lowered_at = Instant::now();
    let deadline = lowered_at + Duration::from_secs(90);
    while limit() >= own_limit {
        assert!(Instant::now() < deadline, "the limit was never lowered");
        std::thread::sleep(Duration::from_millis(2));
    }
    agent.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    let stuck = limit();
    println!(
        "agent killed with memory.limit_in_bytes at {} MiB (own: {own_limit})",
        stuck >> 20
    );
    assert!(stuck < own_limit, "killed while the limit was lowered");
    assert!(paused(&c.name));
    let state = config.dir().join("state").join("state.json");
    // Checked after the wake, so a missing record shows as what it does.
    let at_kill = std::fs::read_to_string(&state).unwrap_or_default();

    let agent = RunningAgent::start(&config);
    agent.wait_state("heavy", "hibernated", Duration::from_secs(30));
    assert!(paused(&c.name), "adopted paused");
    assert_eq!(
        (limit(), swappiness()),
        (own_limit, own_swappiness),
        "the original limits are back before any unpause"
    );
    let (_, third) = count(port);
    assert_eq!(third, touched + 1, "the in-memory counter survived");
    assert!(!paused(&c.name));
    assert_eq!(limit(), own_limit, "woken under its own limit");
    assert_eq!(
        inspect(&c.name, "{{.State.StartedAt}}"),
        started_at,
        "thawed, not restarted"
    );
    assert!(
        at_kill.contains(&format!("\"limit_in_bytes\": {own_limit}")),
        "the original limit was on disk before it was lowered: {at_kill}"
    );
    let now = std::fs::read_to_string(&state).or_fail();
    assert!(
        !now.contains("\"limits\""),
        "the record is cleared once restored: {now}"
    );

    // Idle again under the new agent: hibernated again; and again woken.
    agent.wait_state("heavy", "hibernated", Duration::from_secs(90));
    assert!(paused(&c.name));
    assert!(resident(&c.name) * 10 <= awake);
    assert_eq!(limit(), own_limit);
    let (_, fourth) = count(port);
    assert_eq!(fourth, third + 1);
    drop(agent);
    drop(c);
    drop(swapfile);
}

#[test]
fn privileged_hibernate_without_swap_pauses_with_a_warning_and_survives_an_agent_kill() {
    let image = image();
    assert_eq!(
        swap::meminfo("SwapTotal").or_fail(),
        0,
        "this test needs a host without swap (another swap is active)"
    );
    let port = free_port();
    let name = autostop_fixtures::unique("hibnoswap");
    let c = memapp::container(&name, &image, port, 64, 0).or_fail();
    start_and_wait(&c.name, port, Duration::ZERO);
    let (_, first) = count(port);

    let config = AgentConfig::new(&hibernate_toml("noswap", port, &c.name, "2s"));
    let mut agent = RunningAgent::start(&config);
    agent.wait_state("noswap", "hibernated", Duration::from_secs(60));
    assert!(paused(&c.name));
    let view = agent.service("noswap");
    let h = &view["hibernation"];
    assert_eq!(h["reclaimed"], false, "{view}");
    assert!(
        h["note"].as_str().is_some_and(|n| n.contains("swap")),
        "the status says why: {view}"
    );
    agent.wait_log("paused without reclaim", Duration::from_secs(5));

    // SIGKILL: the container stays paused; the next agent adopts it as
    // hibernated and the first request wakes it.
    agent.signal_and_wait(libc::SIGKILL, Duration::from_secs(5));
    assert!(
        paused(&c.name),
        "a killed agent leaves the container paused"
    );
    let agent = RunningAgent::start(&config);
    agent.wait_state("noswap", "hibernated", Duration::from_secs(30));
    let (_, second) = count(port);
    assert_eq!(second, first + 1, "the in-memory counter survived");
    agent.wait_state("noswap", "ready", Duration::from_secs(10));
    assert!(!paused(&c.name));
}
