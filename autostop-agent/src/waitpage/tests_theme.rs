//! Tests of the themes: every built-in renders, is small, self-contained and
//! motion-safe, and includes the one wait script (which polls and reloads);
//! values are escaped everywhere (also for a name built to break out of a
//! script); user themes add, override, and fail safely.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::path::Path;

use super::theme::ThemeError;
use super::{PageState, PageVars, ThemeSet, WAIT_SCRIPT, WAIT_SCRIPT_PATH};
use crate::config::{ThemeCatalog, BUILTIN_THEMES};

/// How every built-in includes the wait script (reloading after 5 s if it
/// cannot load it: the service became ready in between).
const SCRIPT_TAG: &str = "<script src=\"/.autostop/wait.js\" \
                          onerror=\"setTimeout(function(){location.reload()},5000)\"></script>";

/// The built-in theme names.
fn builtin_names() -> Vec<&'static str> {
    BUILTIN_THEMES.iter().map(|t| t.name).collect()
}

const EVIL: &str = "</script><script>alert(1)</script>";
const EVIL_ESCAPED: &str = "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;";

fn vars(name: &str) -> PageVars {
    PageVars {
        service_name: name.to_string(),
        estimated_s: 42,
        elapsed_s: 7,
        state: PageState::Starting,
        error: None,
        steps: Vec::new(),
    }
}

fn failed(name: &str, error: &str) -> PageVars {
    PageVars {
        state: PageState::Failed,
        error: Some(error.to_string()),
        ..vars(name)
    }
}

/// The contents of every `<script>` element in `html`.
fn scripts(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let body = &rest[start..];
        let Some(open_end) = body.find('>') else {
            break;
        };
        let Some(close) = body.find("</script>") else {
            break;
        };
        out.push(&body[open_end + 1..close]);
        rest = &body[close + "</script>".len()..];
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write theme");
}

#[test]
fn every_builtin_loads_and_the_catalog_lists_exactly_them() {
    let mut names = builtin_names();
    names.sort_unstable();
    let (set, problems) = ThemeSet::load(None);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(set.names().collect::<Vec<_>>(), names);
    assert_eq!(ThemeCatalog::builtin().names().collect::<Vec<_>>(), names);
    assert_eq!(set.catalog(), ThemeCatalog::builtin());
}

#[test]
fn the_wait_script_polls_reloads_and_is_self_contained() {
    assert_eq!(WAIT_SCRIPT_PATH, "/.autostop/wait.js");
    for needed in [
        "fetch('/.autostop/status',{cache:'no-store'})",
        "location.reload()",
        "d.estimated",
        "d.elapsed",
        "d.status",
        "b.dataset.status=st",
        "window.onStatus",
        "$('bar')",
        "$('err')",
    ] {
        assert!(WAIT_SCRIPT.contains(needed), "wait.js lacks {needed:?}");
    }
    let code = WAIT_SCRIPT
        .split_once("*/")
        .map_or(WAIT_SCRIPT, |(_, code)| code);
    for banned in ["http://", "https://", "//", "import", "eval(", "{{"] {
        assert!(!code.contains(banned), "wait.js contains {banned:?}");
    }
}

#[test]
fn every_builtin_renders_small_self_contained_and_motion_safe() {
    let set = ThemeSet::builtin();
    let names = builtin_names();
    for name in &names {
        let html = set.render(name, &vars("ragflow"));
        assert!(html.len() < 50 * 1024, "{name}: {} bytes", html.len());
        assert!(!html.contains("{{"), "{name}: placeholder left");
        assert!(html.contains("prefers-reduced-motion"), "{name}");
        // The wait script, once, at the end of the body; the page's only
        // request.
        assert_eq!(html.matches(SCRIPT_TAG).count(), 1, "{name}: wait script");
        assert!(
            html.trim_end()
                .ends_with(&format!("{SCRIPT_TAG}\n</body>\n</html>")),
            "{name}: wait script not last"
        );
        let rest = html.replace(SCRIPT_TAG, "");
        for banned in [
            "http://", "https://", "//", "@import", "<link", " src=", "url(", "<iframe",
        ] {
            assert!(!rest.contains(banned), "{name} contains {banned:?}");
        }
        // Polling and reloading live in the wait script only.
        for pasted in ["/.autostop/status", "location.reload()", "fetch("] {
            assert!(!rest.contains(pasted), "{name} pastes {pasted:?}");
        }
        for needed in [
            "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>",
            "id=\"bar\"",
            "id=\"err\"",
            "data-service=\"ragflow\"",
            "data-estimated=\"42\"",
            "data-elapsed=\"7\"",
            "data-status=\"starting\"",
            "<title>ragflow",
        ] {
            assert!(html.contains(needed), "{name} lacks {needed:?}");
        }
        // Rendering differs per theme: these are distinct pages.
        for other in names.iter().filter(|o| *o != name) {
            assert_ne!(
                html,
                set.render(other, &vars("ragflow")),
                "{name} vs {other}"
            );
        }
    }
}

#[test]
fn failed_state_shows_the_reason() {
    let set = ThemeSet::builtin();
    for name in builtin_names() {
        let html = set.render(name, &failed("ragflow", "image \"x\" not found"));
        assert!(html.contains("data-status=\"failed\""), "{name}");
        assert!(
            html.contains(">image &quot;x&quot; not found</p>"),
            "{name}: error not shown"
        );
    }
}

#[test]
fn script_breaking_name_appears_only_escaped() {
    let set = ThemeSet::builtin();
    for name in builtin_names() {
        let benign = set.render(name, &failed("ragflow", "boom"));
        let html = set.render(name, &failed(EVIL, EVIL));
        assert!(
            !html.contains("alert(1)</script>"),
            "{name}: raw name leaked"
        );
        assert!(!html.contains("<script>alert"), "{name}: raw name leaked");
        assert!(html.contains(EVIL_ESCAPED), "{name}: escaped name missing");
        assert!(
            html.contains(&format!("data-service=\"{EVIL_ESCAPED}\"")),
            "{name}: data attribute"
        );
        assert_eq!(
            html.matches("<script").count(),
            benign.matches("<script").count(),
            "{name}: extra script element"
        );
        assert_eq!(
            scripts(&html),
            scripts(&benign),
            "{name}: script data changed"
        );
    }
}

#[test]
fn value_inside_a_script_string_cannot_break_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "inline.html",
        b"<script>var n = \"{{ serviceName }}\", m = '{{error}}';</script>",
    );
    let (set, problems) = ThemeSet::load(Some(dir.path()));
    assert!(problems.is_empty(), "{problems:?}");
    let nasty = "\"; alert(1); \\\n`${x}` </script>'";
    let html = set.render("inline", &failed(nasty, nasty));
    let body = scripts(&html);
    assert_eq!(body.len(), 1, "{html}");
    let literal_n = &body[0]["var n = \"".len()..body[0].find("\", m = '").expect("n ends")];
    let literal_m = &body[0][body[0].find("m = '").expect("m") + 5..body[0].len() - 2];
    for lit in [literal_n, literal_m] {
        for bad in ['"', '\'', '\\', '\n', '`', '<'] {
            assert!(!lit.contains(bad), "{bad:?} in {lit:?}");
        }
    }
}

#[test]
fn user_theme_overrides_builtin_and_adds_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ghost.html", b"<p>my ghost {{serviceName}}</p>");
    write(
        dir.path(),
        "neon.html",
        b"<p>neon {{ serviceName }} {{ estimatedTime }}s</p>",
    );
    write(dir.path(), "notes.txt", b"{{ nope }}");
    let (set, problems) = ThemeSet::load(Some(dir.path()));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(set.render("ghost", &vars("a&b")), "<p>my ghost a&amp;b</p>");
    assert_eq!(set.render("neon", &vars("x")), "<p>neon x 42s</p>");
    assert!(set.render("matrix", &vars("x")).contains("id=\"rain\""));
    assert!(!set.contains("notes"));
    let catalog = set.catalog();
    assert!(catalog.contains("neon") && catalog.contains("matrix") && !catalog.contains("notes"));
}

#[test]
fn missing_user_dir_is_not_a_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (set, problems) = ThemeSet::load(Some(&dir.path().join("absent")));
    assert!(problems.is_empty());
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        ["ghost", "hackerTerminal", "matrix", "shuffle"]
    );
}

#[test]
fn unknown_variable_in_user_theme_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "typo.html",
        b"<p>\n{{ serviceName }}\n{{ servicename }}</p>",
    );
    let (set, problems) = ThemeSet::load(Some(dir.path()));
    assert_eq!(problems.len(), 1, "{problems:?}");
    let msg = problems[0].to_string();
    assert!(msg.contains("typo.html"), "{msg}");
    assert!(
        msg.contains("line 3: unknown variable {{ servicename }}"),
        "{msg}"
    );
    assert!(!set.contains("typo"));
    assert_eq!(
        set.render("typo", &vars("x")),
        set.render("matrix", &vars("x"))
    );
}

#[test]
fn broken_override_keeps_the_builtin() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ghost.html", b"{{ oops }}");
    let (set, problems) = ThemeSet::load(Some(dir.path()));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].theme, "ghost");
    let builtin = ThemeSet::builtin();
    assert_eq!(
        set.render("ghost", &vars("x")),
        builtin.render("ghost", &vars("x"))
    );
}

#[test]
fn oversized_and_non_utf8_user_themes_are_reported_and_fall_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "big.html", &vec![b'a'; 256 * 1024 + 1]);
    write(dir.path(), "latin.html", b"<p>caf\xe9</p>");
    write(dir.path(), "edge.html", &vec![b'a'; 256 * 1024]);
    let (set, problems) = ThemeSet::load(Some(dir.path()));
    assert_eq!(problems.len(), 2, "{problems:?}");
    let by_name = |n: &str| {
        problems
            .iter()
            .find(|p| p.theme == n)
            .unwrap_or_else(|| panic!("no problem for {n}"))
    };
    assert!(matches!(
        by_name("big").error,
        ThemeError::TooLarge { size: 262_145 }
    ));
    assert!(matches!(by_name("latin").error, ThemeError::NotUtf8(_)));
    assert!(by_name("latin").to_string().contains("latin.html"));
    assert!(set.contains("edge"), "exactly 256 KiB is allowed");
    let default = set.render("matrix", &vars("x"));
    assert_eq!(set.render("big", &vars("x")), default);
    assert_eq!(set.render("latin", &vars("x")), default);
}

#[test]
fn traversal_names_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "bad.name.html", b"<p>x</p>");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    write(&dir.path().join("sub"), "inner.html", b"<p>inner</p>");
    let (set, problems) = ThemeSet::load(Some(dir.path()));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(matches!(problems[0].error, ThemeError::InvalidName { .. }));
    let default = set.render("matrix", &vars("x"));
    for name in [
        "bad.name",
        "../matrix",
        "sub/inner",
        "/etc/passwd",
        "..",
        "",
    ] {
        assert!(!set.contains(name), "{name}");
        assert_eq!(set.render(name, &vars("x")), default, "{name}");
    }
}
