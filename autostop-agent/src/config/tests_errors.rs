//! Tests for rejected configurations: each checks the reported line,
//! column, field path and message, and that all errors are reported.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use super::*;

/// A service table body prefix used by most cases (name on line 2).
fn svc(name: &str, rest: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\n{rest}")
}

fn errors(text: &str) -> Vec<LocatedError> {
    match Config::parse(text, "autostop.toml", &ThemeCatalog::builtin()) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.located().to_vec(),
    }
}

/// Asserts the single error is at `line:column` on `field`, mentioning `needle`.
#[track_caller]
fn single(text: &str, line: usize, column: usize, field: &str, needle: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (line, column, field),
        "{e}"
    );
    assert!(e.message.contains(needle), "{e}");
    let prefix = format!("autostop.toml:{line}:{column}: {field}: ");
    assert!(e.to_string().starts_with(&prefix), "{e}");
}

#[test]
fn invalid_duration() {
    let text = svc(
        "a",
        "port = 1\nidle_timeout = \"3 mins x\"\ncompose_dir = \"/a\"\n",
    );
    single(
        &text,
        4,
        16,
        "service[0].idle_timeout",
        "invalid duration \"3 mins x\"",
    );
    let text = svc(
        "a",
        "port = 1\nstart_timeout = \"500ms\"\ncompose_dir = \"/a\"\n",
    );
    single(&text, 4, 17, "service[0].start_timeout", "minimum of 1s");
    let text = svc("a", "port = 1\ntimeout = 500\ncompose_dir = \"/a\"\n");
    single(&text, 4, 11, "service[0].timeout", "minimum of 1s");
}

#[test]
fn timeout_and_idle_timeout_together() {
    let text = svc(
        "a",
        "port = 1\nidle_timeout = \"3m\"\ntimeout = 180000\ncompose_dir = \"/a\"\n",
    );
    single(&text, 5, 11, "service[0].timeout", "not both");
}

#[test]
fn duplicate_name() {
    let text = format!(
        "{}\n{}",
        svc("a", "port = 1\ncompose_dir = \"/a\"\n"),
        svc("a", "port = 2\ncompose_dir = \"/b\"\n")
    );
    single(
        &text,
        7,
        8,
        "service[1].name",
        "duplicate service name \"a\"",
    );
}

#[test]
fn duplicate_port() {
    let a = svc("a", "ports = [8080, \"53/udp\"]\ncompose_dir = \"/a\"\n");
    let b = svc(
        "b",
        "ports = [\"53/tcp\", \"8080/tcp\"]\ncompose_dir = \"/b\"\n",
    );
    single(
        &format!("{a}\n{b}"),
        8,
        20,
        "service[1].ports[1]",
        "port 8080/tcp is already used by service[0].ports[0]",
    );
    let c = svc("c", "port = 8080\ncompose_dir = \"/c\"\n");
    single(
        &format!("{a}\n{c}"),
        8,
        8,
        "service[1].port",
        "already used",
    );
}

#[test]
fn port_out_of_range() {
    single(
        &svc("a", "port = 0\ncompose_dir = \"/a\"\n"),
        3,
        8,
        "service[0].port",
        "out of range",
    );
    single(
        &svc("a", "port = 70000\ncompose_dir = \"/a\"\n"),
        3,
        8,
        "service[0].port",
        "port 70000 is out of range",
    );
    let text = svc("a", "ports = [80, \"70000/udp\"]\ncompose_dir = \"/a\"\n");
    single(&text, 3, 14, "service[0].ports[1]", "out of range");
    let text = svc("a", "ports = [\"80/sctp\"]\ncompose_dir = \"/a\"\n");
    single(
        &text,
        3,
        10,
        "service[0].ports[0]",
        "unknown protocol \"sctp\"",
    );
}

#[test]
fn port_presence() {
    single(
        &svc("a", "compose_dir = \"/a\"\n"),
        1,
        1,
        "service[0]",
        "missing `port`",
    );
    single(
        &svc("a", "port = 1\nports = [2]\ncompose_dir = \"/a\"\n"),
        4,
        9,
        "service[0].ports",
        "not both",
    );
    single(
        &svc("a", "ports = []\ncompose_dir = \"/a\"\n"),
        3,
        9,
        "service[0].ports",
        "must not be empty",
    );
}

#[test]
fn mode_typo() {
    let text = svc("a", "port = 1\nmode = \"dynamc\"\ncompose_dir = \"/a\"\n");
    single(&text, 4, 8, "service[0].mode", "unknown mode \"dynamc\"");
}

#[test]
fn sleep_typo() {
    let text = svc(
        "a",
        "port = 1\nsleep = \"hibernat\"\ncompose_dir = \"/a\"\n",
    );
    single(
        &text,
        4,
        9,
        "service[0].sleep",
        "unknown sleep \"hibernat\"",
    );
}

#[test]
fn unknown_theme() {
    let text = svc(
        "a",
        "port = 1\nmode = \"dynamic\"\ntheme = \"neon\"\ncompose_dir = \"/a\"\n",
    );
    single(&text, 5, 9, "service[0].theme", "unknown theme \"neon\"");
}

#[test]
fn theme_path_traversal() {
    let text = svc(
        "a",
        "port = 1\nmode = \"dynamic\"\ntheme = \"../x\"\ncompose_dir = \"/a\"\n",
    );
    single(&text, 5, 9, "service[0].theme", "bare name");
}

#[test]
fn compose_dir_and_containers() {
    let both = svc(
        "a",
        "port = 1\ncompose_dir = \"/a\"\ncontainers = [\"x\"]\n",
    );
    single(&both, 5, 14, "service[0].containers", "not both");
    single(
        &svc("a", "port = 1\n"),
        1,
        1,
        "service[0]",
        "missing `compose_dir`",
    );
    single(
        &svc("a", "port = 1\ncompose_dir = \"opt/a\"\n"),
        4,
        15,
        "service[0].compose_dir",
        "must be absolute",
    );
    single(
        &svc("a", "port = 1\ncontainers = []\n"),
        4,
        14,
        "service[0].containers",
        "must not be empty",
    );
    let dup = svc("a", "port = 1\ncontainers = [\"x\", \"x\"]\n");
    single(&dup, 4, 20, "service[0].containers[1]", "listed twice");
}

#[test]
fn bad_cidr() {
    let text = "[agent]\nignore_sources = [\"10.0.0.0/8\", \"10.0.0.300/32\"]\n";
    single(
        text,
        2,
        33,
        "agent.ignore_sources[1]",
        "invalid CIDR \"10.0.0.300/32\"",
    );
}

#[test]
fn bad_status_listen() {
    single(
        "[agent]\nstatus_listen = \"localhost\"\n",
        2,
        17,
        "agent.status_listen",
        "invalid socket address",
    );
}

#[test]
fn bad_agent_values() {
    single(
        "[agent]\nalert_webhook = \"ftp://x\"\n",
        2,
        17,
        "agent.alert_webhook",
        "http://",
    );
    single(
        "[agent]\nalert_webhook = \"https://user:pw@hooks.example/SECRET\"\n",
        2,
        17,
        "agent.alert_webhook",
        "credentials",
    );
    let errs = errors("[agent]\nalert_webhook = \"gopher://hooks.example/SECRET\"\n");
    assert!(!errs[0].to_string().contains("SECRET"), "{}", errs[0]);
    single(
        "[agent]\nalert_webhook = \"https://h/x\"\nalert_ca_file = \"ca.pem\"\n",
        3,
        17,
        "agent.alert_ca_file",
        "absolute",
    );
    single(
        "[agent]\napi_hosts = [\"ok.lan\", \"status.lan:8080\"]\n",
        2,
        24,
        "agent.api_hosts[1]",
        "no scheme, port or path",
    );
    single(
        "[agent]\nstate_dir = \"state\"\n",
        2,
        13,
        "agent.state_dir",
        "absolute",
    );
}

#[test]
fn bad_service_values() {
    let name = "[[service]]\nname = \"-bad name\"\nport = 1\ncompose_dir = \"/a\"\n";
    single(name, 2, 8, "service[0].name", "invalid service name");
    let held = svc(
        "a",
        "port = 1\ncompose_dir = \"/a\"\nmax_held_connections = 0\n",
    );
    single(&held, 5, 24, "service[0].max_held_connections", "1..=65536");
}

#[test]
fn unknown_keys() {
    single(
        "[agent]\nstatus_listen = \"127.0.0.1:1\"\nbogus = 1\n",
        3,
        1,
        "agent.bogus",
        "unknown field `bogus`",
    );
    let text = format!(
        "{}\n{}",
        svc("a", "port = 1\ncompose_dir = \"/a\"\n"),
        svc("b", "port = 2\nidle = \"3m\"\n")
    );
    single(&text, 9, 1, "service[1].idle", "unknown field `idle`");
    single("[agents]\n", 1, 2, "agents", "unknown field `agents`");
}

#[test]
fn type_and_syntax_errors() {
    single(
        &svc("a", "port = \"80\"\ncompose_dir = \"/a\"\n"),
        3,
        8,
        "service[0].port",
        "invalid type",
    );
    single(
        &svc("a", "port = 80\nhold_while_connected = \"yes\"\n"),
        4,
        24,
        "service[0].hold_while_connected",
        "invalid type",
    );
    single(
        &svc("a", "port = 80\nmode = dynamic\n"),
        4,
        8,
        "service[0].mode",
        "quoted",
    );
    single(
        "[[service]]\nport = 80\n",
        1,
        1,
        "service[0]",
        "missing field `name`",
    );
}

#[test]
fn all_errors_are_reported_in_order() {
    let text =
        "[agent]\nstatus_listen = \"nope\"\n\n[[service]]\nname = \"a\"\nport = 0\nmode = \"x\"\n";
    let errs = errors(text);
    let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
    let want = [
        (2, "agent.status_listen"),
        (4, "service[0]"),
        (6, "service[0].port"),
        (7, "service[0].mode"),
    ];
    assert_eq!(got, want, "{errs:#?}");
    let err = Config::parse(text, "autostop.toml", &ThemeCatalog::builtin()).unwrap_err();
    assert_eq!(err.to_string().lines().count(), 4, "{err}");
}

#[test]
fn max_services_out_of_range() {
    single(
        "[agent]\nmax_services = 0\n",
        2,
        16,
        "agent.max_services",
        "out of range 1..=1024",
    );
    single(
        "[agent]\nmax_services = 1025\n",
        2,
        16,
        "agent.max_services",
        "kernel's service index space",
    );
}

#[test]
fn more_services_than_max_services() {
    let mut text = String::from("[agent]\nmax_services = 1\n");
    text.push_str(&svc("a", "port = 1\ncompose_dir = \"/a\"\n"));
    text.push_str(&svc("b", "port = 2\ncompose_dir = \"/b\"\n"));
    // Pointed at the first service beyond the limit (`b`'s name).
    single(
        &text,
        8,
        8,
        "agent.max_services",
        "2 services configured, more than agent.max_services (1)",
    );
    text = text.replace("max_services = 1", "max_services = 2");
    let config = Config::parse(&text, "autostop.toml", &ThemeCatalog::builtin()).expect("fits");
    assert_eq!(config.agent.max_services, 2);
    assert_eq!(AgentConfig::default().max_services, MAX_SERVICES_LIMIT);
    let again = Config::parse(&config.to_toml(), "again.toml", &ThemeCatalog::builtin())
        .expect("rendered config parses");
    assert_eq!(again, config, "max_services survives a render");
}
