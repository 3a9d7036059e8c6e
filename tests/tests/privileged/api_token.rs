//! Privileged end to end: the API's token file against `autostop run` and
//! `autostop check`. A token file owned by another user than root or the
//! agent's (here: `nobody`) is refused with an error naming the file at
//! start, by `check`, and at a reload (which keeps the running config);
//! with a token, `/healthz` tells an anonymous client only ok or not, and
//! the details (task names carry service names) need the token.

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use autostop_tests::{
    agent::{cli, http_get, AgentConfig, RunningAgent},
    eventually,
};
use nix::unistd::{chown, Uid, User};

/// The uid of `nobody`, a user that is neither root nor the agent's.
fn nobody() -> Uid {
    User::from_name("nobody")
        .expect("reading the user database")
        .expect("a user named nobody")
        .uid
}

fn own(path: &Path, uid: Uid) {
    chown(path, Some(uid), None).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

#[test]
fn privileged_a_token_file_of_another_user_is_refused_at_start_check_and_reload() {
    autostop_tests::require_root_and_bpf();
    let config = AgentConfig::new("");
    let token = config.dir().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    config.write_raw(&config.agent_table_with(&format!(
        "docker_labels = false\ntoken_file = \"{}\"\n",
        token.display()
    )));
    let named = format!(
        "agent.token_file {}: owned by uid {}",
        token.display(),
        nobody()
    );

    // `nobody` could rewrite the token: check and start refuse it.
    own(&token, nobody());
    let (ok, out) = cli(&config, &["check"], Duration::from_secs(20));
    assert!(!ok && out.contains(&named), "check: {out}");
    let mut refused = RunningAgent::spawn_under(&config, &[]);
    assert!(
        eventually(Duration::from_secs(20), || refused.exited().is_some()),
        "the agent started with another user's token file"
    );
    assert!(
        refused.logs().iter().any(|l| l.contains(&named)),
        "no error naming the file:\n{}",
        refused.logs().join("\n")
    );
    drop(refused);

    // Root's file: it starts; anonymous clients learn only ok or not.
    own(&token, Uid::from_raw(0));
    let (ok, out) = cli(&config, &["check"], Duration::from_secs(20));
    assert!(ok, "check: {out}");
    let agent = RunningAgent::start(&config).with_token("s3cret");
    let anonymous = http_get(agent.status, "/healthz").expect("healthz");
    assert_eq!(anonymous, (200, "{\"ok\":true}".to_owned()));
    let (status, details) = agent.api_get("/healthz").expect("healthz with the token");
    assert_eq!(status, 200);
    let details: serde_json::Value = serde_json::from_str(&details).expect("JSON");
    assert_eq!(details["tasks"]["api"], "running", "{details}");

    // Given to `nobody` while the agent runs: the next reload is refused,
    // naming the file, and the running config stays.
    own(&token, nobody());
    agent.signal(libc::SIGHUP);
    let line = agent.wait_log("reload_rejected", Duration::from_secs(20));
    let logs = agent.logs().join("\n");
    assert!(logs.contains(&named), "{line}\n{logs}");
    let (status, _) = agent.api_get("/api/services").expect("API");
    assert_eq!(status, 200, "the agent kept running with its token");
    own(&token, Uid::from_raw(0));
}
