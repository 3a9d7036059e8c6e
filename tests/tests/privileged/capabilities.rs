//! Privileged end to end: the agent runs with exactly the capabilities
//! `packaging/autostop.service` grants it, and with none fewer. There is no
//! systemd here, so the unit's `CapabilityBoundingSet=` (read from the file,
//! not copied) is applied with `setpriv` (util-linux) the way systemd does
//! for a root service: bounding, inheritable and ambient sets reduced to the
//! list, uid 0 kept, `no_new_privs` set as `NoNewPrivileges=yes` asks.
//!
//! With those capabilities a full cycle works: programs loaded and attached,
//! the warm-up nft table created, a stopped service woken by its first
//! connection, an open silent connection keeping it up (the agent reads the
//! container's `/proc/<pid>/net/tcp`), and the idle stop once it closes.
//! Without any one of them, start-up fails with an error naming the step.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use autostop_tests::{
    agent::{echo_script, local, running, setup, AgentConfig, RunningAgent},
    docker::{free_port, unique, TestContainer},
    eventually,
};

/// Capability names in kernel bit order (`include/uapi/linux/capability.h`),
/// to read `/proc/<pid>/status` masks.
const CAPABILITY_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The unit file shipped in `packaging/`.
fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("packaging")
        .join("autostop.service")
}

/// Every value of `key=` in the unit's `[Service]` section, split on
/// whitespace (systemd merges repeated lines).
fn unit_values(key: &str) -> Vec<String> {
    let path = unit_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut section = "";
    let mut values = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" {
            if let Some(value) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                values.extend(value.split_whitespace().map(str::to_owned));
            }
        }
    }
    values
}

/// The unit's capability bounding set, checked against the kernel's names.
fn unit_capabilities() -> Vec<String> {
    let caps = unit_values("CapabilityBoundingSet");
    assert!(
        !caps.is_empty(),
        "{}: no CapabilityBoundingSet= in [Service]",
        unit_path().display()
    );
    for cap in &caps {
        assert!(
            CAPABILITY_NAMES.contains(&cap.as_str()),
            "unknown capability {cap} in the unit"
        );
    }
    caps
}

/// `setpriv … --` reducing every set to `caps`, as systemd does for a root
/// service with `CapabilityBoundingSet=`/`AmbientCapabilities=` set to them.
fn setpriv(caps: &[String]) -> Vec<String> {
    let list = std::iter::once("-all".to_owned())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec![
        "setpriv".to_owned(),
        "--bounding-set".to_owned(),
        list.clone(),
        "--inh-caps".to_owned(),
        list.clone(),
        "--ambient-caps".to_owned(),
        list,
    ];
    if unit_values("NoNewPrivileges").iter().any(|v| v == "yes") {
        args.push("--no-new-privs".to_owned());
    }
    args.push("--".to_owned());
    args
}

/// Capability names set in the `field` mask (`CapEff`, `CapBnd`, …) of
/// process `pid`.
fn capabilities_of(pid: i32, field: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim();
    let mask = u64::from_str_radix(hex, 16).expect("hex capability mask");
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            CAPABILITY_NAMES
                .get(bit)
                .map_or_else(|| format!("cap#{bit}"), |n| (*n).to_owned())
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn echo(stream: &mut TcpStream, line: &str) {
    stream.write_all(line.as_bytes()).expect("write");
    let mut back = vec![0u8; line.len()];
    stream.read_exact(&mut back).expect("echo back");
    assert_eq!(String::from_utf8_lossy(&back), line);
}

#[test]
fn privileged_agent_runs_a_full_cycle_with_exactly_the_unit_capabilities() {
    let image = setup();
    let caps = unit_capabilities();
    eprintln!("unit capabilities: {caps:?}");
    let port = free_port();
    let publish = format!("{port}:80");
    let c = TestContainer::create(
        &unique("as-caps"),
        &["-p", &publish],
        &image.tag,
        &["sh", "-c", echo_script()],
    );
    let config = AgentConfig::new(&format!(
        "[[service]]\nname = \"caps\"\nport = {port}\nmode = \"blocking\"\n\
         containers = [\"{}\"]\nidle_timeout = \"2s\"\nstart_timeout = \"60s\"\n\
         hold_while_connected = true\n",
        c.name
    ));
    let agent = RunningAgent::start_under(&config, &setpriv(&caps));

    // The agent process holds exactly the unit's capabilities (setpriv
    // exec's it, so the pid is the agent's own).
    for field in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(
            sorted(capabilities_of(agent.pid(), field)),
            sorted(caps.clone()),
            "{field} of the agent"
        );
    }
    let exe = std::fs::read_link(format!("/proc/{}/exe", agent.pid())).expect("exe");
    assert!(
        exe.ends_with("autostop"),
        "pid {} is {} rather than the agent",
        agent.pid(),
        exe.display()
    );
    // Start-up: programs loaded and attached, warm-up table created.
    let objects = agent.kernel_objects();
    assert!(!objects.programs.is_empty(), "no BPF program: {objects:?}");
    assert!(
        objects.links.iter().any(|(_, kind)| kind == "netns"),
        "no sk_lookup link: {objects:?}"
    );
    let table = Command::new("nft")
        .args(["list", "table", "inet", &config.nft_table])
        .output()
        .expect("nft");
    assert!(
        table.status.success(),
        "no nft table {}: {}",
        config.nft_table,
        String::from_utf8_lossy(&table.stderr)
    );
    agent.wait_state("caps", "stopped", Duration::from_secs(10));

    // Cold start by the first connection, which is held then spliced.
    let mut stream = TcpStream::connect(local(port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    echo(&mut stream, "woken\n");
    assert!(running(&c.name), "the first connection did not start it");
    agent.wait_state("caps", "ready", Duration::from_secs(10));

    // Silent for three idle timeouts: the open connection (counted from the
    // container's /proc tables) keeps it up.
    let quiet_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(running(&c.name), "stopped although a connection was open");
    echo(&mut stream, "still here\n");
    // Memory is sampled from Docker's stats under the same capabilities.
    assert!(
        eventually(Duration::from_secs(20), || agent.service("caps")
            ["memory_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)),
        "no memory sample: {}",
        agent.service("caps")
    );

    // Idle stop once the connection closes.
    drop(stream);
    assert!(
        eventually(Duration::from_secs(20), || !running(&c.name)),
        "no idle stop within 20 s of the last connection closing"
    );
    agent.wait_state("caps", "stopped", Duration::from_secs(10));
    let logs = agent.logs().join("\n");
    assert!(
        !logs.contains("Operation not permitted") && !logs.contains("Permission denied"),
        "a permission error under the unit's capabilities:\n{logs}"
    );
}

#[test]
fn privileged_agent_fails_to_start_without_any_one_unit_capability() {
    autostop_tests::require_root_and_bpf();
    let caps = unit_capabilities();
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let config = AgentConfig::new("");
        let mut agent = RunningAgent::spawn_under(&config, &setpriv(&fewer));
        let exited = eventually(Duration::from_secs(30), || agent.exited().is_some());
        assert!(
            exited,
            "the agent kept running without {missing}: {:?}",
            agent.logs()
        );
        let status = agent.exited().expect("exited");
        assert!(!status.success(), "exit status without {missing}: {status}");
        let logs = agent.logs().join("\n");
        assert!(
            logs.contains("datapath") || logs.contains("warm-up"),
            "without {missing}, the failure does not name the step:\n{logs}"
        );
        eprintln!(
            "without {missing}: {}",
            logs.lines().next().unwrap_or_default()
        );
    }
}
