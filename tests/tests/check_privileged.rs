//! Privileged (Docker): `autostop check` validates that each service's
//! containers exist when Docker answers, and exits 2 naming the service
//! when they do not.

use std::process::Command;

use autostop_tests::{
    agent_binary,
    docker::{require_docker, unique, TestContainer, TestImage},
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
    let name = unique("check");
    let _container = TestContainer::create(&name, &[], &image.tag, &["/bin/busybox", "true"]);
    let missing = unique("missing");
    let state = tempfile::tempdir().expect("tempdir");
    let config = |container: &str| {
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[service]]\nname = \"svc\"\nport = 18999\ncontainers = [\"{container}\"]\n",
            state.path().display()
        )
    };

    let (code, stdout, stderr) = check(&config(&name));
    assert_eq!(code, 0, "existing container: {stdout}{stderr}");
    assert!(stdout.contains("OK, 1 services"), "{stdout}");

    let (code, _, stderr) = check(&config(&missing));
    assert_eq!(code, 2, "missing container must fail the check: {stderr}");
    assert!(
        stderr.contains("service svc") && stderr.contains(&missing),
        "{stderr}"
    );
}
