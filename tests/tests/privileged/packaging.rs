//! Privileged: what `cargo xtask dist` ships (`target/dist/`, fixtures in
//! `tests/src/packaging/`), installed and run as a user would.
//!
//! - The .deb installs with `dpkg -i` into a throwaway root (`dpkg --root`,
//!   maintainer scripts run chrootless with `DPKG_ROOT`, dependencies
//!   checked against this host's packages; the live system is checked
//!   untouched): every file where it belongs, nothing enabled or started,
//!   the next steps printed; `autostop --version` and `autostop check` on
//!   the packaged config work; every man page renders without a warning;
//!   the bash completion loads; a reinstall keeps an edited conffile;
//!   `dpkg -r` keeps the conffile; `dpkg --purge` leaves no file of ours,
//!   state and an enablement link included. lintian passes (overrides
//!   carry their reasons).
//! - The installed binary serves a cold start through nginx; the time from
//!   `dpkg -i` to the first answer is printed (no timed assertion).
//! - The tarball holds what it should; the image holds exactly the agent,
//!   the shared objects `ldd` lists for it, the CA bundle and the config.
//! - The image, run by docker-compose v1 from `packaging/compose.yaml`, is
//!   the agent, with exactly the compose file's two capabilities, no new
//!   privileges and Docker's seccomp filter: `autostop check` in a one-off
//!   container, a cold start in blocking mode through nginx, a dynamic wait
//!   page, `hold_while_connected` (which needs `pid: host`), an idle stop,
//!   and after `docker kill` of its container none of its BPF programs,
//!   links or maps and no nft table of its remain.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use autostop_tests::{
    agent::{
        container, echo_script, httpd_script, kernel_objects_of, local, running, setup,
        AgentConfig, Launch, RunningAgent,
    },
    docker::{docker, free_port},
    e2e::{http_get, Nginx},
    eventually,
    packaging::{
        deb, dist_file, image, image_files, ldd_paths, nft_table_exists, output_text, proc_status,
        render_man_page, render_man_pages, stdout, ComposeAgent, DpkgRoot, HostPaths,
        CAP_NET_ADMIN, CAP_SYS_ADMIN, INSTALLED_FILES, VERSION,
    },
    require_root_and_bpf,
};

/// A browser's Accept header (dynamic mode answers it with the wait page).
const HTML_ACCEPT: (&str, &str) = (
    "Accept",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
);
/// Bound on one cold start seen by a client.
const COLD: Duration = Duration::from_secs(60);

#[test]
fn privileged_deb_installs_runs_its_commands_and_purges_cleanly() {
    require_root_and_bpf();
    let deb = deb();
    let host = HostPaths::record();
    let mut root = DpkgRoot::new(&deb);
    let before = root.files();

    let installed = root.install(&deb);
    assert!(
        installed.contains("not enabled") && installed.contains("systemctl enable --now autostop"),
        "postinst did not print the next steps:\n{installed}"
    );
    for (file, wanted) in INSTALLED_FILES {
        assert_eq!(root.mode(file), *wanted, "mode of /{file}");
    }
    assert!(
        root.path("var/lib/autostop").is_dir(),
        "no /var/lib/autostop"
    );
    let unit =
        std::fs::read_to_string(root.path("lib/systemd/system/autostop.service")).expect("unit");
    assert!(
        unit.contains("\nExecStart=/usr/bin/autostop run --config /etc/autostop/autostop.toml\n"),
        "{unit}"
    );
    let status = String::from_utf8_lossy(&root.dpkg(&["-s", "autostop"]).stdout).into_owned();
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("Conffiles:\n /etc/autostop/autostop.toml "),
        "{status}"
    );
    // Nothing enabled or started: a half-configured agent never runs.
    assert!(
        !root.path("etc/systemd/system").exists(),
        "postinst enabled the unit"
    );

    let binary = root.path("usr/bin/autostop");
    let version = stdout(Command::new(&binary).arg("--version"));
    assert_eq!(version, format!("autostop {VERSION}"));
    let check = Command::new(&binary)
        .arg("check")
        .arg("--config")
        .arg(root.path("etc/autostop/autostop.toml"))
        .output()
        .expect("autostop check");
    let report = output_text(&check);
    assert!(
        check.status.success() && report.contains("OK, 0 services"),
        "{report}"
    );

    let pages = render_man_pages(&root.path("usr/share/man/man1"));
    assert!(pages.len() >= 11, "{} man pages", pages.len());
    let top = render_man_page(&root.path("usr/share/man/man1/autostop.1.gz"));
    for wanted in ["SUBCOMMANDS", "set-timeout", "FILES", "EXIT STATUS"] {
        assert!(top.contains(wanted), "autostop(1) lacks {wanted}:\n{top}");
    }
    let completion = stdout(Command::new("bash").arg("-c").arg(format!(
        "source {}; complete -p autostop",
        root.path("usr/share/bash-completion/completions/autostop").display()
    )));
    assert!(completion.contains("autostop"), "{completion}");

    // A reinstall (postinst's upgrade path) keeps an edited conffile.
    let conffile = root.path("etc/autostop/autostop.toml");
    let edited = format!(
        "{}\n# edited by the administrator\n",
        std::fs::read_to_string(&conffile).expect("conffile")
    );
    std::fs::write(&conffile, &edited).expect("editing the conffile");
    root.install(&deb);
    assert_eq!(
        std::fs::read_to_string(&conffile).expect("conffile"),
        edited
    );

    // Remove keeps the configuration; purge removes everything of ours,
    // the agent's state and an enablement link `systemctl enable` made.
    root.remove("-r");
    assert!(!binary.exists(), "dpkg -r left the binary");
    assert!(conffile.exists(), "dpkg -r removed the conffile");
    std::fs::create_dir_all(root.path("var/lib/autostop")).expect("state dir");
    std::fs::write(root.path("var/lib/autostop/state.json"), "{}").expect("state");
    let wants = root.path("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).expect("wants dir");
    std::os::unix::fs::symlink(
        "/lib/systemd/system/autostop.service",
        wants.join("autostop.service"),
    )
    .expect("enablement link");
    root.remove("--purge");
    // The directories the test made for the link (and /etc, which dpkg
    // could not remove because of them) must be empty now.
    root.remove_empty_dirs(&[
        "etc/systemd/system/multi-user.target.wants",
        "etc/systemd/system",
        "etc/systemd",
        "etc",
    ]);
    let left: BTreeSet<PathBuf> = root.files().difference(&before).cloned().collect();
    assert!(left.is_empty(), "dpkg --purge left {left:?}");
    host.assert_unchanged();
}

#[test]
fn privileged_deb_is_lintian_clean() {
    let deb = deb();
    let out = Command::new("lintian")
        .args([
            "--fail-on",
            "error,warning,info",
            "--display-info",
            "--info",
        ])
        .arg(&deb)
        .output()
        .expect("running lintian (package lintian)");
    let text = output_text(&out);
    eprintln!("lintian {}:\n{text}", deb.display());
    assert!(out.status.success(), "lintian: {text}");
}

#[test]
fn privileged_deb_installed_agent_serves_a_cold_start_through_nginx() {
    let applets = setup();
    let deb = deb();
    let host = HostPaths::record();
    let port = free_port();
    let app = container(&applets, port, &httpd_script("packaged-ok", 0));
    let config = AgentConfig::new(&format!(
        "[[service]]\nname = \"packaged\"\nport = {port}\nmode = \"blocking\"\n\
         containers = [\"{}\"]\nidle_timeout = \"10m\"\nstart_timeout = \"60s\"\n",
        app.name
    ));
    // nginx is already there on a server that installs autostop.
    let nginx = Nginx::start(port);
    let mut root = DpkgRoot::new(&deb);

    let begin = Instant::now();
    root.install(&deb);
    let installed = begin.elapsed();
    let agent = RunningAgent::spawn_with(
        &config,
        Launch {
            binary: Some(root.path("usr/bin/autostop")),
            ..Launch::default()
        },
    );
    let up = eventually(COLD, || {
        http_get(
            local(config.status.port()),
            "/api/services/packaged",
            &[],
            Duration::from_secs(2),
        )
        .is_ok_and(|r| r.status == 200 && r.text().contains("\"stopped\""))
    });
    assert!(up, "the installed agent never reported the service stopped");
    let attached = begin.elapsed();
    let r = http_get(nginx.addr, "/", &[], COLD)
        .unwrap_or_else(|e| panic!("GET through nginx: {e}\n{}", nginx.error_log()));
    let served = begin.elapsed();
    assert_eq!((r.status, r.text().trim()), (200, "packaged-ok"));
    assert!(running(&app.name));
    eprintln!(
        "dpkg -i to a served cold start: {} ms (dpkg -i {} ms, agent up and service adopted \
         at {} ms, cold start through nginx {} ms)",
        served.as_millis(),
        installed.as_millis(),
        attached.as_millis(),
        (served - attached).as_millis()
    );
    drop(agent);
    root.remove("--purge");
    host.assert_unchanged();
}

#[test]
fn privileged_tarball_holds_the_binary_unit_config_docs_and_completions() {
    let tarball = dist_file(&format!("autostop-{VERSION}-x86_64-linux-gnu.tar.gz"));
    let listing = stdout(Command::new("tar").arg("-tzvf").arg(&tarball));
    let prefix = format!("autostop-{VERSION}/");
    for wanted in [
        "autostop",
        "autostop.service",
        "autostop.toml",
        "compose.yaml",
        "README.md",
        "man/autostop.1",
        "man/autostop-run.1",
        "completions/autostop",
        "completions/_autostop",
        "completions/autostop.fish",
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {prefix}{wanted}")))
            .unwrap_or_else(|| panic!("{prefix}{wanted} not in the tarball:\n{listing}"));
        assert!(line.contains(" 0/0 "), "not owned by root: {line}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    stdout(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir.path()),
    );
    let version = stdout(Command::new(dir.path().join(&prefix).join("autostop")).arg("--version"));
    assert_eq!(version, format!("autostop {VERSION}"));
}

#[test]
fn privileged_image_holds_only_the_agent_its_libraries_and_certificates() {
    autostop_tests::docker::require_docker();
    let tag = image();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = image_files(&tag, dir.path());
    // Exactly what the binary links: ldd on the image's own copy.
    let mut wanted = ldd_paths(&dir.path().join("rootfs/usr/bin/autostop"));
    wanted.extend(
        [
            "/usr/bin/autostop",
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/autostop/autostop.toml",
            // Docker's own, made by `docker create`.
            "/.dockerenv",
            "/dev/console",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/mtab",
            "/etc/resolv.conf",
        ]
        .map(str::to_owned),
    );
    assert_eq!(files, wanted, "image files vs the agent's needs");
    let version = docker(&["run", "--rm", &tag, "--version"]);
    assert_eq!(version, format!("autostop {VERSION}"));
}

#[test]
fn privileged_image_runs_the_agent_from_the_packaged_compose_file() {
    let applets = setup();
    image();
    let blocking_port = free_port();
    let dynamic_port = free_port();
    let held_port = free_port();
    let blocking = container(
        &applets,
        blocking_port,
        &httpd_script("compose-blocking-ok", 1),
    );
    let dynamic = container(
        &applets,
        dynamic_port,
        &httpd_script("compose-dynamic-ok", 1),
    );
    let held = container(&applets, held_port, echo_script());
    let agent = ComposeAgent::new(&format!(
        "[[service]]\nname = \"blocking\"\nport = {blocking_port}\nmode = \"blocking\"\n\
         containers = [\"{}\"]\nidle_timeout = \"5s\"\nstart_timeout = \"60s\"\n\n\
         [[service]]\nname = \"dynamic\"\nport = {dynamic_port}\nmode = \"dynamic\"\n\
         containers = [\"{}\"]\nidle_timeout = \"10m\"\nstart_timeout = \"60s\"\n\n\
         [[service]]\nname = \"held\"\nport = {held_port}\nmode = \"blocking\"\n\
         containers = [\"{}\"]\nidle_timeout = \"3s\"\nstart_timeout = \"60s\"\n\
         hold_while_connected = true\n",
        blocking.name, dynamic.name, held.name
    ));
    // `autostop check` in a one-off container, as compose.yaml's header
    // says to before the first `up` (compose v1 refuses a one-off
    // container beside a running host-network one).
    let check = agent
        .compose(&["run", "--rm", "-T", "autostop", "check"])
        .output()
        .expect("docker-compose run");
    assert!(
        check.status.success(),
        "check in the image: {}",
        output_text(&check)
    );
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("OK, 3 services"),
        "{}",
        output_text(&check)
    );

    agent.up();
    for name in ["blocking", "dynamic", "held"] {
        agent.wait_state(name, "stopped", COLD);
    }

    // Exactly the compose file's capabilities, no new privileges, and
    // Docker's seccomp filter on.
    let pid = agent.pid();
    let effective = u64::from_str_radix(&proc_status(pid, "CapEff"), 16).expect("CapEff");
    assert_eq!(
        effective,
        CAP_NET_ADMIN | CAP_SYS_ADMIN,
        "effective capabilities {effective:#x}"
    );
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status(pid, "Seccomp"), "2", "no seccomp filter");

    // A cold start in blocking mode, through nginx.
    let nginx = Nginx::start(blocking_port);
    let r = http_get(nginx.addr, "/", &[], COLD)
        .unwrap_or_else(|e| panic!("GET through nginx: {e}\n{}", nginx.error_log()));
    assert_eq!((r.status, r.text().trim()), (200, "compose-blocking-ok"));
    assert!(running(&blocking.name));

    // Dynamic mode: a browser gets the themed wait page while it starts.
    let r = http_get(
        local(dynamic_port),
        "/",
        &[HTML_ACCEPT],
        Duration::from_secs(10),
    )
    .expect("wait page");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "Retry-After missing");
    assert!(r.text().contains("dynamic"), "the page names the service");
    agent.wait_state("dynamic", "ready", COLD);

    // hold_while_connected sees the container's connections through the
    // host PID namespace (`pid: host`): an open silent connection keeps
    // the service up well past its 3 s idle timeout; closing it lets it stop.
    let mut client = std::net::TcpStream::connect(local(held_port)).expect("connect held");
    client.set_read_timeout(Some(COLD)).expect("timeout");
    client.write_all(b"ping\n").expect("write");
    let mut echo = [0u8; 5];
    client
        .read_exact(&mut echo)
        .expect("echo through the cold start");
    assert_eq!(&echo, b"ping\n");
    agent.wait_state("held", "ready", COLD);
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        agent.state("held"),
        "ready",
        "stopped while a connection was open"
    );
    drop(client);
    agent.wait_state("held", "stopped", COLD);

    // The idle stop (5 s without traffic).
    agent.wait_state("blocking", "stopped", COLD);
    assert!(
        !running(&blocking.name),
        "idle stop left the container running"
    );

    // SIGKILL of the container: the kernel drops everything it held.
    let objects = kernel_objects_of(pid);
    objects.assert_attached();
    assert!(
        nft_table_exists(&agent.nft_table),
        "no table inet {}",
        agent.nft_table
    );
    docker(&["kill", &agent.container()]);
    objects.assert_gone(Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(1), || !nft_table_exists(
            &agent.nft_table
        )),
        "table inet {} outlived the killed agent",
        agent.nft_table
    );
}
