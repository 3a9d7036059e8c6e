//! Issue #25, the state file as the real agent meets it: a `state.json`
//! that is not UTF-8 (4354d82 refused to start on it) is set aside as
//! `state.json.bad-<time>` byte for byte, with a warning, and the agent
//! starts empty and serves; a state directory and file others could read
//! are tightened to 0700 and 0600, with a log line.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use autostop_tests::{
    agent::{
        container, http_get, httpd_script, local, service_toml, setup, AgentConfig, RunningAgent,
    },
    docker::free_port,
    OrFail,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).or_fail().permissions().mode() & 0o7777
}

#[test]
fn privileged_state_file_not_utf8_is_set_aside_and_the_agent_starts_and_serves() {
    let image = setup();
    let port = free_port();
    let c = container(&image, port, &httpd_script("state-ok", 0));
    let config = AgentConfig::new(&service_toml("web", port, &c.name, "10m"));
    let state_dir = config.dir().join("state");
    std::fs::create_dir_all(&state_dir).or_fail();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o755)).or_fail();
    let bytes: &[u8] = b"{\"version\":1,\"services\":{\"w\xffb\":{\"learned_start_ms\":1}}}\n";
    let state = state_dir.join("state.json");
    std::fs::write(&state, bytes).or_fail();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).or_fail();

    let agent = RunningAgent::start(&config);
    let line = agent.wait_log("unusable state", Duration::from_secs(5));
    assert!(line.contains("not UTF-8"), "says why: {line}");
    assert!(line.contains("state.json.bad-"), "says where: {line}");
    agent.wait_log("now 0700", Duration::from_secs(5));
    let aside: Vec<_> = std::fs::read_dir(&state_dir)
        .or_fail()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.bad-")
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).or_fail(),
        bytes,
        "kept byte for byte"
    );
    assert_eq!(mode(&aside[0]), 0o600);
    assert_eq!(mode(&state_dir), 0o700, "the state directory is private");

    // It serves: the first request wakes the stopped service.
    let (status, body) = http_get(local(port), "/").or_fail();
    assert_eq!((status, body.trim()), (200, "state-ok"));
    agent.wait_state("web", "ready", Duration::from_secs(10));
    drop(agent);
    // The state it saved at shutdown is private, and valid.
    assert_eq!(mode(&state), 0o600, "the state file is private");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).or_fail()).or_fail();
    assert!(saved["services"]["web"].is_object(), "{saved}");
}
