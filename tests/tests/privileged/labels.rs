//! Privileged end to end: Docker labels are a request the agent checks,
//! never an order. A labelled container that claims a port it does not
//! publish, or the status API's port, is refused and reported; one that
//! publishes a port a host program listens on is managed but its port is
//! never steered (a problem entry, the program keeps answering, nothing
//! starts); one that publishes its port is managed. A scan that fails (Docker gone)
//! keeps the labelled services. A compose-file label naming a FIFO or a
//! huge file is a warning, never a wedged or bloated agent.

use std::time::Duration;

use autostop_tests::{
    agent::{http_get, httpd_script, local, setup, AgentConfig, AppletImage, RunningAgent},
    docker::{free_port, unique, DockerRelay, TestContainer},
    eventually,
    host::HostProgram,
};

/// How long a label scan may take to notice a change (a scan follows each
/// labelled container created, removed or renamed, and Docker lost or back).
const SCAN: Duration = Duration::from_secs(25);

/// A labelled container running `script`, with extra `docker create`
/// options (publish flags) and labels.
fn labelled(image: &AppletImage, opts: &[&str], labels: &[(&str, String)]) -> TestContainer {
    let mut args: Vec<String> = opts.iter().map(|o| (*o).to_owned()).collect();
    args.extend(["--label".to_owned(), "autostop.enable=true".to_owned()]);
    for (key, value) in labels {
        args.extend(["--label".to_owned(), format!("{key}={value}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestContainer::create(
        &unique("as-label"),
        &args,
        &image.tag,
        &["sh", "-c", &httpd_script("labelled-ok", 0)],
    )
}

fn problems(agent: &RunningAgent) -> Vec<String> {
    let (status, body) = http_get(agent.status, "/api/problems").expect("GET /api/problems");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    json["problems"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect()
}

fn managed(agent: &RunningAgent, name: &str) -> bool {
    agent
        .services()
        .as_array()
        .is_some_and(|all| all.iter().any(|s| s["name"] == name))
}

#[test]
fn privileged_labels_never_take_a_port_from_its_owner_or_the_api() {
    let image = setup();
    let taken = free_port();
    let host = HostProgram::start(local(taken));
    let config = AgentConfig::new("");
    let status = config.status.port();
    let good_port = free_port();
    let thief = labelled(&image, &[], &[("autostop.port", taken.to_string())]);
    let api_thief = labelled(&image, &[], &[("autostop.port", status.to_string())]);
    // Publishing the port does not make it Docker's while a program owns it.
    let squatter = labelled(
        &image,
        &["-p", &format!("{taken}:80")],
        &[("autostop.port", taken.to_string())],
    );
    let good = labelled(
        &image,
        &["-p", &format!("{good_port}:80")],
        &[
            ("autostop.port", good_port.to_string()),
            ("autostop.name", "good".to_owned()),
        ],
    );
    config.with_labels("", "");
    let agent = RunningAgent::start(&config);
    assert!(
        eventually(SCAN, || managed(&agent, "good")),
        "the labelled container that publishes its port is not managed: {}",
        agent.services()
    );
    agent.wait_state("good", "stopped", Duration::from_secs(10));

    let found = problems(&agent);
    let about = |name: &str| found.iter().find(|p| p.contains(name)).cloned();
    let refusal =
        about(&thief.name).unwrap_or_else(|| panic!("no refusal of {}: {found:?}", thief.name));
    assert!(refusal.contains("not published"), "{refusal}");
    let refusal = about(&api_thief.name)
        .unwrap_or_else(|| panic!("no refusal of {}: {found:?}", api_thief.name));
    assert!(refusal.contains("status_listen"), "{refusal}");
    // The squatter is managed, but the port guard gives its port to the
    // program that listens on it.
    let yielded_entry = || {
        problems(&agent)
            .into_iter()
            .find(|p| p.contains(&squatter.name) && p.contains("listens on"))
    };
    assert!(
        eventually(Duration::from_secs(5), || yielded_entry().is_some()),
        "no problem entry of {}: {:?}",
        squatter.name,
        problems(&agent)
    );
    let yielded = yielded_entry().unwrap_or_default();
    assert!(yielded.contains("listens on 127.0.0.1"), "{yielded}");
    assert!(managed(&agent, &squatter.name), "{}", agent.services());
    for refused in [&thief, &api_thief] {
        assert!(
            !managed(&agent, &refused.name),
            "{} is managed",
            refused.name
        );
    }
    agent.wait_log("label_rejected", Duration::ZERO);

    for _ in 0..3 {
        assert!(host.answers(), "the host program stopped answering");
        let (code, _) = http_get(agent.status, "/api/services").expect("the API answers");
        assert_eq!(code, 200);
    }
    assert!(
        !autostop_tests::agent::running(&squatter.name),
        "the squatter was started for its port's connections"
    );
    let (code, body) = http_get(local(good_port), "/").expect("the managed service wakes");
    assert_eq!((code, body.trim()), (200, "labelled-ok"));
    drop(good);
}

#[test]
fn privileged_a_failed_label_scan_keeps_the_labelled_services() {
    let image = setup();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = runtime.enter();
    let mut relay = DockerRelay::new();
    relay.up();
    let port = free_port();
    let _c = labelled(
        &image,
        &["-p", &format!("{port}:80")],
        &[
            ("autostop.port", port.to_string()),
            ("autostop.name", "kept".to_owned()),
        ],
    );
    let config = AgentConfig::new("");
    config.with_labels(
        &format!("docker_socket = \"{}\"\n", relay.path.display()),
        "",
    );
    let agent = RunningAgent::start(&config);
    assert!(
        eventually(SCAN, || managed(&agent, "kept")),
        "{}",
        agent.services()
    );

    relay.down();
    agent.wait_log("label scan failed", SCAN);
    assert!(
        managed(&agent, "kept"),
        "Docker going away unmanaged a labelled service"
    );
    relay.up();
}

#[test]
fn privileged_a_compose_file_label_naming_a_fifo_or_a_huge_file_is_only_a_warning() {
    let image = setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.yml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let huge = dir.path().join("huge.yml");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(100 * 1024 * 1024))
        .expect("a 100 MiB file");

    let config = AgentConfig::new("");
    let mut containers = Vec::new();
    let mut ports = Vec::new();
    for (name, file) in [("fifo", &fifo), ("huge", &huge)] {
        let port = free_port();
        let project = dir.path().join(name);
        std::fs::create_dir_all(&project).expect("project dir");
        containers.push(labelled(
            &image,
            &["-p", &format!("{port}:80")],
            &[
                ("autostop.port", port.to_string()),
                ("com.docker.compose.project", unique("asproj")),
                ("com.docker.compose.service", "web".to_owned()),
                (
                    "com.docker.compose.project.working_dir",
                    project.display().to_string(),
                ),
                (
                    "com.docker.compose.project.config_files",
                    file.display().to_string(),
                ),
            ],
        ));
        ports.push(port);
    }
    config.with_labels("", "");
    let agent = RunningAgent::start(&config);
    assert!(
        eventually(SCAN, || agent
            .services()
            .as_array()
            .is_some_and(|a| a.len() == 2)),
        "{}",
        agent.services()
    );
    for port in ports {
        let (code, body) = http_get(local(port), "/").expect("cold start despite the label");
        assert_eq!((code, body.trim()), (200, "labelled-ok"));
    }
    let warning = agent.wait_log("compose file not read", Duration::ZERO);
    assert!(
        warning.contains("not a regular file") || warning.contains("larger"),
        "{warning}"
    );
    let (code, _) = http_get(agent.status, "/healthz").expect("healthz");
    assert_eq!(code, 200, "the agent is healthy");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .expect("agent status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    assert!(rss_kib < 80 * 1024, "the agent's RSS grew to {rss_kib} KiB");
    drop(containers);
}
