//! Tests for importing the Node.js tool's `config.json`.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::time::Duration;

use super::*;

const SEED: &str = include_str!("testdata/seed-config.json");

#[test]
fn seed_fixture_converts_and_validates() {
    let toml = import_seed_json(SEED).expect("import");
    let c = Config::parse(&toml, "converted.toml", &ThemeCatalog::builtin()).expect("valid");
    assert_eq!(c.services.len(), 8);
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    let expected = [
        "ragflow",
        "xtts",
        "paperless",
        "nextcloud",
        "memvid",
        "jitsi",
        "clemence",
        "solidarlink",
    ];
    assert_eq!(names, expected);
    for s in &c.services {
        assert_eq!(s.idle_timeout, Duration::from_secs(180));
    }
    let sl = c.service("solidarlink").unwrap();
    assert_eq!(sl.mode, Mode::Dynamic);
    assert_eq!(sl.theme.as_deref(), Some("hackerTerminal"));
    assert_eq!(sl.ports[0].port, 9001);
    assert_eq!(sl.target, Target::ComposeDir("/var/www/solidarlink".into()));
    let xtts = c.service("xtts").unwrap();
    assert_eq!((xtts.mode, xtts.theme.clone()), (Mode::Blocking, None));
    assert!(toml.contains("idle_timeout = \"3m\"\n"), "{toml}");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn seed_timeout_kept_exact() {
    let seed = r#"{"services":[{"name":"a","port":1,"timeout":90500,"composeDir":"/a"}]}"#;
    let toml = import_seed_json(seed).expect("import");
    assert!(toml.contains("idle_timeout = \"1m 30s 500ms\""), "{toml}");
    let c = Config::parse(&toml, "t", &ThemeCatalog::builtin()).expect("valid");
    assert_eq!(c.services[0].idle_timeout, Duration::from_millis(90_500));
}

#[test]
fn seed_user_theme_is_carried_over() {
    let seed = r#"{"services":[{"name":"a","port":1,"mode":"dynamic","themeName":"neon","composeDir":"/a"}]}"#;
    let toml = import_seed_json(seed).expect("import");
    assert!(toml.contains("theme = \"neon\""), "{toml}");
}

#[test]
fn seed_unknown_field_names_service_and_field() {
    let seed = "{\"services\":[\n{\"name\":\"a\",\"port\":1,\"composeDir\":\"/a\"},\n{\"name\":\"b\",\"port\":2,\"healthUrl\":\"/x\",\"composeDir\":\"/b\"}\n]}";
    let err = import_seed_json(seed).unwrap_err();
    let e = &err.located()[0];
    assert_eq!(e.field, "services[1].healthUrl");
    assert_eq!(e.line, 3);
    assert!(e.message.contains("unknown field `healthUrl`"), "{err}");
    assert!(err.to_string().starts_with("config.json:3:"), "{err}");

    let top = import_seed_json("{\"services\":[],\"version\":2}").unwrap_err();
    assert_eq!(top.located()[0].field, "version");
}

#[test]
fn seed_bad_json_reports_line_and_column() {
    let seed = "{\"services\":[\n{\"name\":\"a\",\"port\":1,,\"composeDir\":\"/a\"}\n]}";
    let err = import_seed_json(seed).unwrap_err();
    let e = &err.located()[0];
    assert_eq!((e.line, e.column), (2, 22), "{err}");
    assert_eq!(e.field, "services[0]");
    assert!(
        err.to_string()
            .starts_with("config.json:2:22: services[0]: "),
        "{err}"
    );
}

#[test]
fn seed_that_would_not_validate_is_refused() {
    let seed = r#"{"services":[{"name":"a","port":1,"composeDir":"/a"},{"name":"a","port":2,"composeDir":"relative"}]}"#;
    let err = import_seed_json(seed).unwrap_err();
    let fields: Vec<&str> = err.located().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["service[1].name", "service[1].compose_dir"],
        "{err}"
    );
}
