//! Property tests of what the config reads from files and labels: the whole
//! TOML file (any text parses or gives an error naming a line), Docker
//! labels (any values make a service or a problem naming the container,
//! never a panic, never a raw control character), durations (accepted
//! only within 1s..=30days) and keep_warm windows. Default config:
//! `PROPTEST_CASES` sets the number of cases; failures are kept in
//! `proptest-regressions/`.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::{net::SocketAddr, time::Duration};

use proptest::prelude::*;

use super::{
    duration::{parse_human, MAX_TIMEOUT, MIN_TIMEOUT},
    labels::{services_from_labels, LabelledContainer},
    Config, ThemeCatalog,
};
use crate::schedule::Window;

/// Issue #25 item 5: `autostop.requires` names were taken as they came,
/// control characters included, and reached `autostop status` raw.
#[test]
fn requires_labels_follow_the_service_name_rules() {
    let container = LabelledContainer {
        name: "app".into(),
        labels: [
            ("autostop.enable", "true"),
            ("autostop.port", "8080"),
            ("autostop.requires", "db,\u{1b}[2Jevil"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Default::default()
    };
    let (services, problems) =
        services_from_labels(&[container], &ThemeCatalog::builtin(), status());
    assert!(services.is_empty(), "{services:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("requires[1]"), "{problems:?}");
    assert!(!problems[0].contains('\u{1b}'), "raw escape: {problems:?}");
}

fn status() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3456))
}

const LABEL_NAMES: &[&str] = &[
    "autostop.port",
    "autostop.idle-timeout",
    "autostop.mode",
    "autostop.theme",
    "autostop.sleep",
    "autostop.name",
    "autostop.requires",
    "autostop.keep-warm",
    "autostop.prewarm",
    "autostop.busy-cpu-percent",
    "autostop.start-timeout",
    "autostop.max-held-connections",
    "com.docker.compose.project.working_dir",
];

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{1,22}",
        "[0-9]{1,20}(s|m|h|days|ms| x)",
        "(mon|tue|sat|daily|Mon-Fri|x)(,sun)? [0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}",
        "[a-z\u{1b}\u{7f}\u{9b}.,_-]{0,12}",
    ]
}

fn containers() -> impl Strategy<Value = Vec<LabelledContainer>> {
    prop::collection::vec(
        (
            "[a-z]{1,6}",
            prop::collection::vec((prop::sample::select(LABEL_NAMES), label_value()), 0..6),
        )
            .prop_map(|(name, labels)| LabelledContainer {
                name,
                labels: std::iter::once(("autostop.enable".to_owned(), "true".to_owned()))
                    .chain(labels.into_iter().map(|(k, v)| (k.to_owned(), v)))
                    .collect(),
                ..Default::default()
            }),
        1..4,
    )
}

proptest! {
    #[test]
    fn prop_labels_make_services_or_problems_never_a_panic_or_raw_control(
        containers in containers()
    ) {
        let (services, problems) =
            services_from_labels(&containers, &ThemeCatalog::builtin(), status());
        for problem in &problems {
            prop_assert!(!problem.chars().any(|c| c.is_control() && c != '\n'), "{problem:?}");
        }
        for service in &services {
            prop_assert!((MIN_TIMEOUT..=MAX_TIMEOUT).contains(&service.idle_timeout));
            prop_assert!((MIN_TIMEOUT..=MAX_TIMEOUT).contains(&service.start_timeout));
            for name in &service.wake.requires {
                prop_assert!(!name.chars().any(char::is_control), "{name:?}");
            }
        }
    }

    #[test]
    fn prop_durations_are_accepted_only_within_bounds(text in prop_oneof![
        any::<String>(),
        "[0-9]{1,22} ?(ns|us|ms|s|m|h|d|days|w|weeks|M|y)",
    ]) {
        if let Ok(d) = parse_human(&text) {
            prop_assert!((MIN_TIMEOUT..=MAX_TIMEOUT).contains(&d), "{text:?} gave {d:?}");
            prop_assert!(std::time::Instant::now().checked_add(d).is_some());
        }
    }

    #[test]
    fn prop_durations_in_bounds_round_trip(ms in 1000u64..=MAX_TIMEOUT.as_millis() as u64) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_human(&super::format_human(d)), Ok(d));
    }

    #[test]
    fn prop_keep_warm_windows_parse_or_name_the_text(text in prop_oneof![
        any::<String>(),
        "(mon|Tue|sun|daily|Mon-Fri|Fri-Mon|x)(,sat)? [0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}",
    ]) {
        match text.parse::<Window>() {
            Ok(window) => prop_assert_eq!(window.to_string(), text.trim()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn prop_config_files_parse_or_name_a_line(text in prop_oneof![
        any::<String>(),
        "(\\[agent\\]\n|\\[\\[service\\]\\]\n|name = \"[a-z\u{1b}]{1,4}\"\n|port = [0-9]{1,6}\n|idle_timeout = \"[0-9]{1,21}s\"\n|start_timeout = \"[0-9]{1,21}s\"\n|containers = \\[\"a\"\\]\n|keep_warm = \\[\"daily [0-9:]{5}-[0-9:]{5}\"\\]\n|requires = \\[\"[a-z\u{7f}]{1,3}\"\\]\n|max_held_connections = -?[0-9]{1,20}\n){0,12}",
    ]) {
        match Config::parse(&text, "autostop.toml", &ThemeCatalog::builtin()) {
            Ok(config) => {
                for service in &config.services {
                    prop_assert!((MIN_TIMEOUT..=MAX_TIMEOUT).contains(&service.idle_timeout));
                    prop_assert!((MIN_TIMEOUT..=MAX_TIMEOUT).contains(&service.start_timeout));
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("autostop.toml"), "{e}"),
        }
    }
}
