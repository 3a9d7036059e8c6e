//! Privileged end to end (the agent binary, real stopped containers): a
//! non-agent listener always wins its port. A file-configured and a
//! label-configured service sleep, steered; then a plain program of the
//! host binds each one's published port (on 127.0.0.1, inside Docker's
//! every-address binding). Clients reach that program (the connection the
//! kernel had already steered is reset, the next one is the program's),
//! the agent reports the problem and starts nothing; once the program
//! exits the port is steered again and a client wakes the service.

use std::time::Duration;

use autostop_tests::{
    agent::{
        container, http_get_timeout, httpd_script, local, running, setup, AgentConfig, AppletImage,
        RunningAgent,
    },
    docker::{free_port, unique, TestContainer},
    eventually,
    host::HostProgram,
};

/// Bound on one cold start seen by a client.
const COLD: Duration = Duration::from_secs(60);
/// Bound on noticing the program (a few connection attempts) and its
/// leaving (the guard looks again every 2 s).
const NOTICE: Duration = Duration::from_secs(10);

fn problems(agent: &RunningAgent) -> String {
    let (status, body) = agent.api_get("/api/problems").expect("GET /api/problems");
    assert_eq!(status, 200, "{body}");
    body
}

/// A labelled, stopped container publishing `port` → 80.
fn labelled(image: &AppletImage, port: u16, name: &str) -> TestContainer {
    let publish = format!("{port}:80");
    let port_label = format!("autostop.port={port}");
    let name_label = format!("autostop.name={name}");
    TestContainer::create(
        &unique("as-guard"),
        &[
            "-p",
            &publish,
            "--label",
            "autostop.enable=true",
            "--label",
            &port_label,
            "--label",
            &name_label,
            "--label",
            "autostop.mode=blocking",
        ],
        &image.tag,
        &["sh", "-c", &httpd_script("labelled-ok", 0)],
    )
}

#[test]
fn privileged_a_program_that_binds_a_sleeping_services_port_wins_it_until_it_exits() {
    let image = setup();
    let file_port = free_port();
    let label_port = free_port();
    let file_container = container(&image, file_port, &httpd_script("file-ok", 0));
    let label_container = labelled(&image, label_port, "guarded");
    let config = AgentConfig::new("");
    config.with_labels(
        "",
        &format!(
            "[[service]]\nname = \"filed\"\nport = {file_port}\nmode = \"blocking\"\n\
             containers = [\"{}\"]\nidle_timeout = \"10m\"\nstart_timeout = \"60s\"\n",
            file_container.name
        ),
    );
    let agent = RunningAgent::start(&config);
    agent.wait_state("filed", "stopped", Duration::from_secs(20));
    assert!(
        eventually(Duration::from_secs(25), || agent.state("guarded")
            == "stopped"),
        "the labelled service is not managed: {}",
        agent.services()
    );

    for (name, port, container, body) in [
        ("filed", file_port, &file_container, "file-ok"),
        ("guarded", label_port, &label_container, "labelled-ok"),
    ] {
        // The port is steered; then a plain program binds it.
        let program = HostProgram::start(local(port));
        assert!(
            eventually(NOTICE, || program.answers()),
            "{name}: clients of 127.0.0.1:{port} never reached the program that listens there"
        );
        for _ in 0..3 {
            assert!(
                program.answers(),
                "{name}: a client was taken from the program"
            );
        }
        let found = problems(&agent);
        assert!(
            found.contains(&format!("listens on 127.0.0.1:{port}")),
            "{name}: no problem entry: {found}"
        );
        assert!(
            agent.service(name)["problems"]
                .to_string()
                .contains("listens on"),
            "{name}: its status shows no problem: {}",
            agent.service(name)
        );
        assert_eq!(agent.starts(name), 0, "{name} was started");
        assert!(!running(&container.name), "{name}'s container runs");
        assert_eq!(agent.state(name), "stopped");

        // The program exits: the port is the agent's again.
        program.stop();
        assert!(
            eventually(NOTICE, || !problems(&agent)
                .contains(&format!("listens on 127.0.0.1:{port}"))),
            "{name}: the problem stayed after the program left"
        );
        let (code, got) =
            http_get_timeout(local(port), "/", COLD).expect("the service wakes again");
        assert_eq!((code, got.trim()), (200, body), "{name}");
        assert_eq!(agent.starts(name), 1, "{name}");
    }
}
