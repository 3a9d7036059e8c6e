//! Which containers are a compose project's: unit tests of the rules and
//! property tests of the label parsing.

// Tests: an index out of range or an overflow is a test failure.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::HashMap;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Labels compose puts on a container of project `name` in `dir`.
fn compose(name: &str, dir: &str, files: &str, service: &str) -> HashMap<String, String> {
    labels(&[
        (LABEL_PROJECT, name),
        (LABEL_WORKING_DIR, dir),
        (LABEL_CONFIG_FILES, files),
        (LABEL_SERVICE, service),
    ])
}

fn ignored_names(ignored: &[Ignored]) -> Vec<&str> {
    ignored.iter().map(|i| i.container.as_str()).collect()
}

#[test]
fn the_directorys_project_and_nothing_else() {
    let web = compose("shop", "/srv/shop", "docker-compose.yml", "web");
    let db = compose("shop", "/srv/shop", "/srv/shop/docker-compose.yml", "db");
    let test = compose("shoptest", "/srv/shop", "docker-compose.test.yml", "web");
    let bare = labels(&[(LABEL_WORKING_DIR, "/srv/shop")]);
    let (project, ignored) = choose(
        "/srv/shop/",
        None,
        [
            ("shop_web_1", &web),
            ("shop_db_1", &db),
            ("shoptest_web_1", &test),
            ("intruder", &bare),
        ],
    );
    let project = project.expect("a project");
    assert_eq!(project.name, "shop");
    assert_eq!(project.working_dir, "/srv/shop");
    assert_eq!(
        project.config_files,
        [PathBuf::from("/srv/shop/docker-compose.yml")],
        "relative and absolute spellings of one file are one file"
    );
    assert_eq!(ignored_names(&ignored), ["intruder", "shoptest_web_1"]);
    assert_eq!(ignored[0].why, Foreign::NotCompose);
    assert_eq!(ignored[1].why, Foreign::Project("shoptest".into()));
    let message = ignored[1].message("/srv/shop");
    assert!(
        message.contains("\"shoptest_web_1\"") && message.contains("\"shoptest\""),
        "{message}"
    );
}

#[test]
fn a_project_run_with_another_name_is_its_directorys_when_alone() {
    let a = compose("custom", "/srv/App.1", "docker-compose.yml", "web");
    let b = compose("custom", "/srv/App.1", "docker-compose.yml", "db");
    let (project, ignored) = choose("/srv/App.1", None, [("a", &a), ("b", &b)]);
    assert_eq!(project.expect("one name").name, "custom");
    assert!(ignored.is_empty());
}

#[test]
fn the_default_name_wins_over_others() {
    assert_eq!(default_names("/srv/My App.1/"), ["myapp1", "myapp1"]);
    assert_eq!(default_names("/srv/_x"), ["_x", "x"]);
    let custom = compose("custom", "/srv/app", "docker-compose.yml", "web");
    let v2 = compose("app", "/srv/app", "compose.yaml", "web");
    let (project, ignored) = choose("/srv/app", None, [("c", &custom), ("d", &v2)]);
    assert_eq!(project.expect("default name").name, "app");
    assert_eq!(ignored_names(&ignored), ["c"]);
}

#[test]
fn several_other_names_are_no_project() {
    let a = compose("one", "/srv/app", "a.yml", "web");
    let b = compose("two", "/srv/app", "b.yml", "web");
    let (project, ignored) = choose("/srv/app", None, [("a", &a), ("b", &b)]);
    assert_eq!(project, None);
    assert_eq!(ignored.len(), 2);
    assert!(
        matches!(&ignored[0].why, Foreign::Ambiguous(names) if names.contains("\"one\"") && names.contains("\"two\"")),
        "{ignored:?}"
    );
}

#[test]
fn other_config_files_are_another_project() {
    let a = compose("app", "/srv/app", "docker-compose.yml", "web");
    let b = compose("app", "/srv/app", "./docker-compose.yml", "db");
    let c = compose("app", "/srv/app", "docker-compose.yml,extra.yml", "job");
    let (project, ignored) = choose("/srv/app", None, [("a", &a), ("b", &b), ("c", &c)]);
    let project = project.expect("project");
    assert_eq!(
        project.config_files,
        [PathBuf::from("/srv/app/docker-compose.yml")]
    );
    assert_eq!(ignored_names(&ignored), ["c"]);
    assert!(matches!(&ignored[0].why, Foreign::ConfigFiles(f) if f.contains("extra.yml")));
}

#[test]
fn the_last_project_is_kept_when_another_appears() {
    let mine = compose("custom", "/srv/app", "docker-compose.yml", "web");
    let theirs = compose("other", "/srv/app", "docker-compose.yml", "web");
    let both = [("m", &mine), ("t", &theirs)];
    let (project, ignored) = choose("/srv/app", Some("custom"), both);
    assert_eq!(project.expect("kept").name, "custom");
    assert_eq!(ignored_names(&ignored), ["t"]);
    let (project, _) = choose("/srv/app", Some("gone"), both);
    assert_eq!(project, None, "neither is the directory's nor the last one");
}

#[test]
fn another_working_directory_is_named() {
    let other = compose("app", "/srv/other", "docker-compose.yml", "web");
    let (project, ignored) = choose("/srv/app", None, [("x", &other)]);
    assert_eq!(project, None);
    assert_eq!(ignored[0].why, Foreign::WorkingDir("/srv/other".into()));
}

#[test]
fn config_file_paths_are_absolute_and_normalised() {
    assert_eq!(
        config_file_paths(" a.yml ,/etc/b.yml,, ../c/./d.yml", Path::new("/srv/app")),
        [
            PathBuf::from("/srv/app/a.yml"),
            PathBuf::from("/etc/b.yml"),
            PathBuf::from("/srv/c/d.yml"),
        ]
    );
    assert_eq!(
        config_file_paths("../../../x.yml", Path::new("/srv")),
        [PathBuf::from("/x.yml")]
    );
    assert_eq!(trim_dir("///"), "/");
    assert_eq!(trim_dir("/srv/app//"), "/srv/app");
    assert_eq!(trim_dir(""), "");
}

/// Label keys: compose's and a few others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(LABEL_PROJECT.to_owned()),
        Just(LABEL_WORKING_DIR.to_owned()),
        Just(LABEL_CONFIG_FILES.to_owned()),
        Just(LABEL_SERVICE.to_owned()),
        "[a-z.]{0,12}",
    ]
}

/// Label values: any text, and path-like text with separators.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[/a-zA-Z0-9 ._,-]{0,30}",
        Just("/srv/app".to_owned()),
        Just("app".to_owned()),
    ]
}

fn container() -> impl Strategy<Value = (String, HashMap<String, String>)> {
    (
        any::<String>(),
        prop::collection::hash_map(key(), value(), 0..6),
    )
}

proptest! {
    /// Any labels: choosing never panics, every container is either in
    /// the project or named once among the ignored, and each member
    /// agrees with the project on all three labels.
    #[test]
    fn prop_choose_accounts_for_every_container(
        dir in value(),
        last in prop::option::of(value()),
        containers in prop::collection::vec(container(), 0..8),
    ) {
        let (project, ignored) = choose(
            &dir,
            last.as_deref(),
            containers.iter().map(|(n, l)| (n.as_str(), l)),
        );
        let members: Vec<&(String, HashMap<String, String>)> = containers
            .iter()
            .filter(|(_, l)| {
                let claimed = ProjectId::of(l);
                match (&project, claimed) {
                    (Some(p), Ok(c)) => p.differs(&c).is_none(),
                    _ => false,
                }
            })
            .collect();
        prop_assert_eq!(members.len() + ignored.len(), containers.len());
        if let Some(p) = &project {
            prop_assert_eq!(p.working_dir.as_str(), trim_dir(&dir));
            prop_assert!(!members.is_empty());
        }
        for i in &ignored {
            prop_assert!(!i.message(&dir).is_empty());
        }
    }

    /// Any `config_files` label and working directory: the paths never
    /// panic, are absolute when the directory is, and hold no `.`/`..`.
    #[test]
    fn prop_config_file_paths_are_normalised(label in any::<String>(), dir in value()) {
        let dir = format!("/{dir}");
        for path in config_file_paths(&label, Path::new(&dir)) {
            prop_assert!(path.is_absolute());
            prop_assert!(path
                .components()
                .all(|c| !matches!(c, Component::CurDir | Component::ParentDir)));
        }
    }

    /// Any directory: the default names never panic and hold only what
    /// compose keeps.
    #[test]
    fn prop_default_names_keep_composes_characters(dir in any::<String>()) {
        for name in default_names(&dir) {
            prop_assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'));
        }
    }
}
