//! Privileged end to end (the agent binary, docker-compose, real
//! containers): a compose project is what Docker's labels say it is, and
//! no more. Containers of another project that merely carry the managed
//! project's working-dir label, one crash-looping (`--restart always`,
//! exits 1) and two whose compose `depends_on` labels make a cycle, neither
//! trip the managed service's crash-loop guard, nor fail its starts, nor
//! stop it from starting; each is named in `GET /api/problems`.

use std::time::Duration;

use autostop_tests::{
    agent::{http_get_timeout, httpd_script, local, running, setup, AgentConfig, RunningAgent},
    docker::{docker, free_port, unique, ComposeProject, TestContainer},
    eventually,
};

/// Bound on one cold start seen by a client.
const COLD: Duration = Duration::from_secs(60);

fn problems(agent: &RunningAgent) -> String {
    let (status, body) = agent.api_get("/api/problems").expect("GET /api/problems");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn privileged_foreign_containers_with_the_projects_working_dir_do_not_disturb_it() {
    let image = setup();
    let port = free_port();
    let web = httpd_script("project-ok", 0);
    let yaml = format!(
        "version: '2.4'\nservices:\n  web:\n    image: {tag}\n    stop_grace_period: 1s\n    \
         ports: [\"{port}:80\"]\n    command: [\"sh\", \"-c\", {web:?}]\n",
        tag = image.tag,
    );
    let project = ComposeProject::create(&yaml);
    let dir = project.path().display().to_string();
    let config = AgentConfig::new(&format!(
        "[[service]]\nname = \"proj\"\nport = {port}\nmode = \"blocking\"\n\
         compose_dir = \"{dir}\"\nidle_timeout = \"10m\"\nstart_timeout = \"60s\"\n"
    ));
    let agent = RunningAgent::start(&config);
    agent.wait_state("proj", "stopped", Duration::from_secs(20));

    // Then another project's containers appear in the same directory (a
    // `-p` run, or labels written by hand): one that crash-loops, two in a
    // `depends_on` cycle. The project the agent resolved stays the project.
    let foreign = |service: &str, depends: &str, opts: &[&str], cmd: &str| {
        let labels = [
            format!("com.docker.compose.project.working_dir={dir}"),
            "com.docker.compose.project=intruder".to_owned(),
            format!("com.docker.compose.service={service}"),
            format!("com.docker.compose.depends_on={depends}"),
        ];
        let mut args: Vec<String> = opts.iter().map(|o| (*o).to_owned()).collect();
        for label in labels {
            args.extend(["--label".to_owned(), label]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestContainer::create(&unique("as-foreign"), &args, &image.tag, &["sh", "-c", cmd])
    };
    let crash = foreign("crash", "", &["--restart", "always"], "sleep 0.2; exit 1");
    let a = foreign("a", "b:service_healthy:false", &[], "sleep 86400");
    let b = foreign("b", "a:service_healthy:false", &[], "sleep 86400");

    // The foreign container crash-loops: each restart is a start and a
    // death of a container with the project's working-dir label.
    docker(&["start", &crash.name]);
    let restarts = || {
        autostop_tests::docker::inspect(&crash.name, "{{.RestartCount}}")
            .parse::<u32>()
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(30), || restarts() >= 4),
        "the foreign container did not crash-loop"
    );
    assert_eq!(
        agent.start_failures("proj"),
        0,
        "a foreign container's exits counted as the project's failures: {}",
        agent.service("proj")
    );
    let view = agent.service("proj");
    assert_eq!(view["state"], "stopped", "{view}");
    assert!(view["start_block"].is_null(), "{view}");

    // A client wakes the project: the foreign cycle is not its order.
    let (code, body) =
        http_get_timeout(local(port), "/", COLD).expect("the managed project answers");
    assert_eq!((code, body.trim()), (200, "project-ok"));
    assert!(running(&project.container("web")));
    for bystander in [&a, &b] {
        assert!(
            !running(&bystander.name),
            "{} was started with the project",
            bystander.name
        );
    }
    let found = problems(&agent);
    for name in [&crash.name, &a.name, &b.name] {
        assert!(
            found.contains(name.as_str()) && found.contains("intruder"),
            "{name} is not reported as ignored: {found}"
        );
    }
    assert_eq!(agent.start_failures("proj"), 0);
}
