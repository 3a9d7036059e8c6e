//! Tests for configurations that must load: full example, defaults,
//! alternative spellings, warnings, file loading and the TOML round trip.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

const FULL: &str = r#"
[agent]
status_listen = "0.0.0.0:4000"
themes_dir = "/srv/themes"
state_dir = "/srv/state"
ignore_sources = ["10.0.0.5/32", "fd00::/8", "192.168.1.7"]
token_file = "/etc/autostop/token"
alert_webhook = "https://hooks.example/x"
alert_ca_file = "/etc/autostop/ca.pem"
api_hosts = ["Status.Example.LAN", "fd00::5", "192.168.1.2"]

[[service]]
name = "ragflow"
port = 9500
idle_timeout = "3m"
mode = "dynamic"
theme = "neon"
compose_dir = "/opt/ragflow"
start_timeout = "10m"
hold_while_connected = true
max_held_connections = 64
sleep = "hibernate"

[[service]]
name = "jitsi"
ports = [8443, "10000/udp", "8080/tcp"]
timeout = 90500
containers = ["jitsi-web", "jitsi-jvb"]
"#;

fn catalog() -> ThemeCatalog {
    ThemeCatalog::with_user_themes(["neon"])
}

fn parse(text: &str) -> Config {
    match Config::parse(text, "autostop.toml", &catalog()) {
        Ok(c) => c,
        Err(e) => panic!("expected valid config, got:\n{e}"),
    }
}

#[test]
fn full_config_resolves() {
    let c = parse(FULL);
    let a = &c.agent;
    assert_eq!(
        a.status_listen,
        "0.0.0.0:4000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(a.themes_dir, PathBuf::from("/srv/themes"));
    assert_eq!(a.state_dir, PathBuf::from("/srv/state"));
    let nets: Vec<String> = a.ignore_sources.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.5/32", "fd00::/8", "192.168.1.7/32"]);
    assert_eq!(a.token_file, Some(PathBuf::from("/etc/autostop/token")));
    assert_eq!(a.alert_webhook.as_deref(), Some("https://hooks.example/x"));
    assert_eq!(a.alert_ca_file, Some(PathBuf::from("/etc/autostop/ca.pem")));
    let hosts: Vec<String> = a.api_hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["status.example.lan", "fd00::5", "192.168.1.2"]);

    let rag = c.service("ragflow").unwrap();
    assert_eq!(
        rag.ports,
        [PortSpec {
            port: 9500,
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(rag.idle_timeout, Duration::from_secs(180));
    assert_eq!(rag.mode, Mode::Dynamic);
    assert_eq!(rag.theme.as_deref(), Some("neon"));
    assert_eq!(
        rag.target,
        Target::ComposeDir(PathBuf::from("/opt/ragflow"))
    );
    assert_eq!(rag.start_timeout, Duration::from_secs(600));
    assert!(rag.hold_while_connected);
    assert_eq!(rag.max_held_connections, 64);
    assert_eq!(rag.sleep, Sleep::Hibernate);

    let jitsi = c.service("jitsi").unwrap();
    let tcp = |port| PortSpec {
        port,
        protocol: Protocol::Tcp,
    };
    let udp = PortSpec {
        port: 10000,
        protocol: Protocol::Udp,
    };
    assert_eq!(jitsi.ports, [tcp(8443), udp, tcp(8080)]);
    assert_eq!(jitsi.idle_timeout, Duration::from_millis(90_500));
    assert_eq!(jitsi.mode, Mode::Blocking);
    assert_eq!(jitsi.sleep, Sleep::Stop, "stop is the default");
    assert_eq!(jitsi.theme, None);
    let names = vec!["jitsi-web".to_string(), "jitsi-jvb".to_string()];
    assert_eq!(jitsi.target, Target::Containers(names));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn defaults_apply() {
    let c = parse("[[service]]\nname = \"a\"\nport = 80\ncompose_dir = \"/opt/a\"\n");
    assert_eq!(c.agent, AgentConfig::default());
    assert_eq!(c.agent.status_listen.to_string(), DEFAULT_STATUS_LISTEN);
    assert_eq!(c.agent.themes_dir, PathBuf::from(DEFAULT_THEMES_DIR));
    assert_eq!(c.agent.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    let s = &c.services[0];
    assert_eq!(s.idle_timeout, Duration::from_secs(180));
    assert_eq!(s.mode, Mode::Blocking);
    assert_eq!(s.theme, None);
    assert_eq!(s.start_timeout, Duration::from_secs(300));
    assert!(!s.hold_while_connected);
    assert_eq!(s.max_held_connections, 1024);

    let dynamic =
        parse("[[service]]\nname = \"a\"\nport = 80\nmode = \"dynamic\"\ncompose_dir = \"/a\"\n");
    assert_eq!(dynamic.services[0].theme.as_deref(), Some(DEFAULT_THEME));

    let empty = parse("");
    assert!(empty.services.is_empty());
}

#[test]
fn timeout_in_milliseconds() {
    let c = parse("[[service]]\nname = \"a\"\nport = 80\ntimeout = 180000\ncompose_dir = \"/a\"\n");
    assert_eq!(c.services[0].idle_timeout, Duration::from_secs(180));
}

#[test]
fn theme_on_blocking_service_is_a_warning() {
    let text = "[[service]]\nname = \"a\"\nport = 80\ntheme = \"ghost\"\ncompose_dir = \"/a\"\n";
    let c = parse(text);
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("autostop.toml:4:9: service[0].theme: "),
        "{}",
        c.warnings[0]
    );
}

#[test]
fn to_toml_round_trips() {
    let c = parse(FULL);
    let text = c.to_toml();
    assert_eq!(parse(&text), c, "rendered:\n{text}");
    assert!(text.contains("port = 9500\n"), "{text}");
    assert!(text.contains("idle_timeout = \"3m\"\n"), "{text}");
    assert!(text.contains("idle_timeout = \"1m 30s 500ms\"\n"), "{text}");
    assert!(
        text.contains("ports = [8443, \"10000/udp\", 8080]\n"),
        "{text}"
    );

    let mut odd =
        parse("[[service]]\nname = \"b\"\nport = 1\ntheme = \"ghost\"\ncompose_dir = \"/x\"\n");
    odd.services[0].target = Target::ComposeDir(PathBuf::from("/opt/we\"ird\\dir\u{7}"));
    odd.agent.ignore_sources.clear();
    let again = parse(&odd.to_toml());
    assert_eq!(again, odd);
    assert_eq!(again.warnings.len(), 1, "blocking theme warning survives");
}

#[test]
fn load_reads_file_and_names_path_on_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("autostop.toml");
    std::fs::write(&path, FULL).expect("write");
    let c = Config::load(&path, &catalog()).expect("load");
    assert_eq!(c.services.len(), 2);

    std::fs::write(&path, "[agent]\nbogus = 1\n").expect("write");
    let err = Config::load(&path, &catalog()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:2:1: agent.bogus: ", path.display())),
        "{err}"
    );

    let missing = dir.path().join("missing.toml");
    let err = Config::load(&missing, &catalog()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn an_alert_ca_file_without_an_https_webhook_is_a_warning() {
    for (webhook, why) in [
        ("", "agent.alert_webhook is not set"),
        ("alert_webhook = \"http://h/x\"\n", "plain http://"),
    ] {
        let c = parse(&format!(
            "[agent]\n{webhook}alert_ca_file = \"/etc/ca.pem\"\n"
        ));
        assert_eq!(c.warnings.len(), 1, "{webhook}");
        assert!(
            c.warnings[0].contains("agent.alert_ca_file: unused") && c.warnings[0].contains(why),
            "{}",
            c.warnings[0]
        );
    }
}

#[test]
fn max_event_streams_defaults_to_16_is_bounded_and_survives_a_render() {
    let catalog = ThemeCatalog::builtin();
    let config = Config::parse("", "autostop.toml", &catalog).expect("empty config");
    assert_eq!(config.agent.max_event_streams, DEFAULT_MAX_EVENT_STREAMS);
    assert_eq!(DEFAULT_MAX_EVENT_STREAMS, 16);
    let config =
        Config::parse("[agent]\nmax_event_streams = 3\n", "a.toml", &catalog).expect("in range");
    assert_eq!(config.agent.max_event_streams, 3);
    let again = Config::parse(&config.to_toml(), "again.toml", &catalog).expect("rendered");
    assert_eq!(again, config, "max_event_streams survives a render");
    for bad in ["0", "-1", "257", "99999999999"] {
        let text = format!("[agent]\nmax_event_streams = {bad}\n");
        let err = Config::parse(&text, "autostop.toml", &catalog)
            .expect_err(bad)
            .to_string();
        assert!(
            err.starts_with("autostop.toml:2:21: agent.max_event_streams: ")
                && err.contains(&format!("out of range 1..={MAX_EVENT_STREAMS_LIMIT}")),
            "{bad}: {err}"
        );
    }
}
