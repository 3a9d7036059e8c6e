//! The start's steps on the wait page: every built-in has a `#steps` list
//! with the server-rendered progress and an `#eta` with elapsed against
//! expected time (for pages without JavaScript), wait.js fills them from
//! the status poll with text only, and themes/README.md documents every variable and carries an example theme
//! that compiles and renders.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use super::template::{Template, Var};
use super::{PageState, PageVars, ThemeSet, VARIABLES, WAIT_SCRIPT};
use crate::config::BUILTIN_THEMES;
use crate::progress::{Phase, PublicStep};

const README: &str = include_str!("../../../themes/README.md");

fn starting(steps: Vec<PublicStep>) -> PageVars {
    PageVars {
        service_name: "shop".into(),
        estimated_s: 40,
        elapsed_s: 12,
        state: PageState::Starting,
        error: None,
        steps,
    }
}

fn two_steps() -> Vec<PublicStep> {
    vec![
        PublicStep {
            label: "container 1 of 2".into(),
            phase: Phase::Healthy,
            for_s: 4,
        },
        PublicStep {
            label: "container 2 of 2".into(),
            phase: Phase::HealthPending,
            for_s: 2,
        },
    ]
}

const SUMMARY: &str = "container 1 of 2: healthy \u{b7} container 2 of 2: health check pending";

#[test]
fn every_builtin_has_a_steps_list_with_the_server_rendered_progress() {
    let set = ThemeSet::builtin();
    for theme in BUILTIN_THEMES {
        let html = set.render(theme.name, &starting(two_steps()));
        assert!(
            html.contains(&format!(
                "<ul id=\"steps\" aria-label=\"start progress\"><li>{SUMMARY}</li></ul>"
            )),
            "{}: no #steps with the progress",
            theme.name
        );
        // Styled for the steps wait.js makes, and an empty list shows nothing.
        for css in [
            "#steps li:empty{display:none}",
            "#steps .label",
            "#steps .phase",
            "#steps .for",
            "[data-phase=failed]",
            "[data-phase=healthy]",
        ] {
            assert!(html.contains(css), "{} lacks {css:?}", theme.name);
        }
        // Elapsed against expected, as rendered (wait.js keeps it live).
        assert!(
            html.contains("<span id=\"eta\">12 s of about 40 s</span>"),
            "{}: #eta",
            theme.name
        );
        let empty = set.render(theme.name, &starting(Vec::new()));
        assert!(empty.contains("<ul id=\"steps\" aria-label=\"start progress\"><li></li></ul>"));
    }
}

#[test]
fn the_wait_script_fills_steps_with_text_only() {
    for needed in [
        "document.getElementById('steps')",
        "s.steps",
        "createElement('li')",
        "setAttribute('data-phase'",
        ".textContent=txt",
        "'label'",
        "'phase'",
        "'for'",
        "' of about '",
    ] {
        assert!(WAIT_SCRIPT.contains(needed), "wait.js lacks {needed:?}");
    }
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!WAIT_SCRIPT.contains(banned), "wait.js uses {banned}");
    }
}

#[test]
fn every_variable_is_known_and_documented() {
    for name in VARIABLES {
        assert!(Var::from_name(name).is_some(), "{name}");
        assert!(
            README.contains(&format!("| `{{{{ {name} }}}}` |")),
            "themes/README.md has no table row for {{{{ {name} }}}}"
        );
        assert!(
            super::TemplateError::UnknownVariable {
                line: 1,
                name: String::new()
            }
            .to_string()
            .contains(name),
            "the unknown-variable error does not list {name}"
        );
    }
    for field in [
        "\"steps\"",
        "\"label\"",
        "\"phase\"",
        "\"text\"",
        "\"for_s\"",
    ] {
        assert!(README.contains(field), "README's status JSON lacks {field}");
    }
}

/// The example theme of themes/README.md: the ```html block after the
/// `<!-- example theme -->` marker.
fn readme_example() -> &'static str {
    let (_, after) = README
        .split_once("<!-- example theme -->")
        .expect("README marks its example theme");
    let start = after.find("```html\n").expect("example opens") + "```html\n".len();
    let len = after[start..].find("```").expect("example closes");
    &after[start..start + len]
}

#[test]
fn the_readme_example_theme_compiles_and_renders_the_progress() {
    let src = readme_example();
    Template::compile(src).expect("the README's example theme compiles");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.html"), src).expect("write");
    let (set, problems) = ThemeSet::load(Some(dir.path()));
    assert!(problems.is_empty(), "{problems:?}");
    let html = set.render("example", &starting(two_steps()));
    for needed in [
        SUMMARY,
        "id=\"steps\"",
        "1 of 2 steps done",
        "data-estimated=\"40\"",
        "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>",
        "<script src=\"/.autostop/wait.js\"",
    ] {
        assert!(html.contains(needed), "example lacks {needed:?}:\n{html}");
    }
    for banned in ["http://", "https://", "{{"] {
        assert!(!html.contains(banned), "example contains {banned:?}");
    }
}
