//! Privileged (Docker): `autostop check` validates that each service's
//! containers exist and publish its ports when Docker answers, and exits 2
//! naming the service (and port) when they do not.

use std::process::Command;

use autostop_tests::{
    agent_binary,
    docker::{free_port, require_docker, unique, TestContainer, TestImage},
};

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("autostop.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(agent_binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("running autostop check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn privileged_check_reports_missing_containers_and_accepts_existing_ones() {
    require_docker();
    let image = TestImage::build();
    let port = free_port();
    let name = unique("check");
    let publish = format!("127.0.0.1:{port}:80");
    let _container = TestContainer::create(
        &name,
        &["-p", &publish],
        &image.tag,
        &["/bin/busybox", "true"],
    );
    let missing = unique("missing");
    let state = tempfile::tempdir().expect("tempdir");
    let config = |container: &str, port: u16| {
        format!(
            "[agent]\nstate_dir = \"{}\"\ndocker_labels = false\n\n[[service]]\nname = \"svc\"\nport = {port}\ncontainers = [\"{container}\"]\n",
            state.path().display()
        )
    };

    let (code, stdout, stderr) = check(&config(&name, port));
    assert_eq!(code, 0, "existing container: {stdout}{stderr}");
    assert!(stdout.contains("OK, 1 services"), "{stdout}");

    let (code, _, stderr) = check(&config(&missing, port));
    assert_eq!(code, 2, "missing container must fail the check: {stderr}");
    assert!(
        stderr.contains("service svc") && stderr.contains(&missing),
        "{stderr}"
    );

    // A port the container does not publish would never be steered.
    let other = free_port();
    let (code, _, stderr) = check(&config(&name, other));
    assert_eq!(code, 2, "an unpublished port must fail the check: {stderr}");
    assert!(
        stderr.contains(&format!("port {other}/tcp")) && stderr.contains("publishes"),
        "{stderr}"
    );
}
