//! Tests of the wake-policy fields: parsing, located errors naming the bad
//! token, requirement checks across services and the round trip.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use crate::config::{Config, ThemeCatalog};

use super::*;

fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
    Config::parse(text, "autostop.toml", &ThemeCatalog::builtin())
}

fn service(name: &str, port: u16, rest: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\nport = {port}\ncompose_dir = \"/srv/{name}\"\n{rest}")
}

const NO_LABELS: &str = "[agent]\ndocker_labels = false\n";

#[test]
fn every_field_parses_and_round_trips() {
    let text = format!(
        "{}{}",
        service(
            "app",
            8080,
            "keep_warm = [\"Mon-Fri 08:00-19:00\", \"Sat 10:00-12:00\"]\nprewarm = true\n\
             requires = [\"db\"]\nbusy_cpu_percent = 25\n",
        ),
        service("db", 5432, ""),
    );
    let config = parse(&text).expect("valid");
    let app = &config.services[0];
    assert_eq!(app.wake.keep_warm.len(), 2);
    assert_eq!(app.wake.keep_warm[1].to_string(), "Sat 10:00-12:00");
    assert!(app.wake.prewarm);
    assert_eq!(app.wake.requires, ["db"]);
    assert_eq!(app.wake.busy_cpu_percent, Some(25));
    assert_eq!(config.services[1].wake, WakePolicy::default());
    let again = parse(&config.to_toml()).expect("rendered config parses");
    assert_eq!(again, config);
}

#[test]
fn bad_values_name_the_field_and_the_token() {
    let text = service(
        "app",
        8080,
        "keep_warm = [\"Mon-Fri 08:00-19:00\", \"Mo 08:00-09:00\"]\n",
    );
    let err = parse(&text).expect_err("bad day").to_string();
    assert!(err.contains("service[0].keep_warm[1]"), "{err}");
    assert!(err.contains("\"Mo\""), "{err}");

    let text = service("app", 8080, "keep_warm = [\"daily 08:00-25:00\"]\n");
    let err = parse(&text).expect_err("bad time").to_string();
    assert!(
        err.contains("service[0].keep_warm[0]") && err.contains("25:00"),
        "{err}"
    );

    let text = service("app", 8080, "busy_cpu_percent = 0\n");
    let err = parse(&text).expect_err("zero").to_string();
    assert!(
        err.contains("service[0].busy_cpu_percent") && err.contains("1..="),
        "{err}"
    );

    let text = service("app", 8080, "requires = [\"app\"]\n");
    let err = parse(&text).expect_err("itself").to_string();
    assert!(
        err.contains("service[0].requires[0]") && err.contains("itself"),
        "{err}"
    );

    let text = service("app", 8080, "prewarm = \"yes\"\n");
    let err = parse(&text).expect_err("not a bool").to_string();
    assert!(err.contains("prewarm"), "{err}");
}

#[test]
fn cycles_are_errors_naming_the_chain() {
    let text = format!(
        "{NO_LABELS}{}{}{}",
        service("a", 1001, "requires = [\"b\"]\n"),
        service("b", 1002, "requires = [\"c\"]\n"),
        service("c", 1003, "requires = [\"a\"]\n"),
    );
    let err = parse(&text).expect_err("cycle").to_string();
    assert!(err.contains("service[0].requires"), "{err}");
    assert!(err.contains("requirement cycle: a -> b -> c -> a"), "{err}");
    assert_eq!(err.matches("cycle").count(), 1, "reported once: {err}");
}

#[test]
fn unknown_requirements_are_errors_without_labels_and_warnings_with_them() {
    let body = service("app", 8080, "requires = [\"db\", \"cache\"]\n");
    let err = parse(&format!("{NO_LABELS}{body}"))
        .expect_err("unknown")
        .to_string();
    assert!(err.contains("service[0].requires"), "{err}");
    assert!(
        err.contains("requires unknown service \"db\", \"cache\""),
        "{err}"
    );

    let config = parse(&body).expect("labels may provide them");
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("must come from Docker labels")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn start_order_is_deepest_first_and_needed_by_lists_direct_dependents() {
    let text = format!(
        "{}{}{}{}",
        service("app", 1001, "requires = [\"api\", \"db\"]\n"),
        service("api", 1002, "requires = [\"db\", \"cache\"]\n"),
        service("db", 1003, ""),
        service("cache", 1004, ""),
    );
    let config = parse(&text).expect("valid");
    assert_eq!(start_order("app", &config.services), ["db", "cache", "api"]);
    assert_eq!(start_order("db", &config.services), Vec::<String>::new());
    assert_eq!(needed_by("db", &config.services), ["app", "api"]);
    assert!(requirement_problems(&config.services).is_empty());
}

#[test]
fn problems_cover_services_from_any_source() {
    let text = format!(
        "{}{}",
        service("a", 1001, "requires = [\"b\"]\n"),
        service("b", 1002, ""),
    );
    let mut services = parse(&text).expect("valid").services;
    // As if `b` came from labels and required `a`.
    services[1].wake.requires = vec!["a".into()];
    let problems = requirement_problems(&services);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].1, "requirement cycle: a -> b -> a");
    // A cycle never loops start_order.
    assert_eq!(start_order("a", &services), ["b"]);
}

#[test]
fn labels_carry_the_wake_policy() {
    use crate::config::labels::{services_from_labels, LabelledContainer};
    let labels = [
        ("autostop.enable", "true"),
        ("autostop.port", "8080"),
        ("autostop.requires", "shared-db, cache"),
        (
            "autostop.keep-warm",
            "Mon-Fri 08:00-19:00; Sat,Sun 10:00-12:00",
        ),
        ("autostop.prewarm", "true"),
        ("autostop.busy-cpu-percent", "30"),
    ];
    let container = LabelledContainer {
        name: "wiki".into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        ..LabelledContainer::default()
    };
    let status = std::net::SocketAddr::from(([127, 0, 0, 1], 3456));
    let (services, problems) = services_from_labels(
        std::slice::from_ref(&container),
        &ThemeCatalog::builtin(),
        status,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let wake = &services[0].wake;
    assert_eq!(wake.requires, ["shared-db", "cache"]);
    assert_eq!(wake.keep_warm.len(), 2);
    assert_eq!(wake.keep_warm[1].to_string(), "Sat,Sun 10:00-12:00");
    assert!(wake.prewarm);
    assert_eq!(wake.busy_cpu_percent, Some(30));

    let mut bad = container;
    bad.labels.insert("autostop.prewarm".into(), "yes".into());
    bad.labels
        .insert("autostop.keep-warm".into(), "Mon 25:00-26:00".into());
    let (services, problems) = services_from_labels(&[bad], &ThemeCatalog::builtin(), status);
    assert!(services.is_empty());
    assert!(
        problems[0].contains("wiki") && problems[0].contains("autostop.prewarm"),
        "{problems:?}"
    );
}
