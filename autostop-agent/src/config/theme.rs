//! Wake-page themes: the built-in list ([`BUILTIN_THEMES`], the one place
//! it is defined: names and the embedded `themes/*.html`) and
//! [`ThemeCatalog`], the set of theme names a configuration may refer to
//! (built-ins plus `<name>.html` files in the user themes directory). The
//! catalog is passed to the parser so that validation needs no real
//! directory in tests; `waitpage` compiles and renders the sources.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::Path;

use super::error::ConfigError;

/// A wait-page theme compiled into the agent from `themes/NAME.html`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinTheme {
    /// The name services refer to it by.
    pub name: &'static str,
    /// The template source.
    pub html: &'static str,
}

/// A built-in theme: its name, and `themes/NAME.html` embedded at build
/// time, so each name is written once.
macro_rules! builtin {
    ($name:literal) => {
        BuiltinTheme {
            name: $name,
            html: include_str!(concat!("../../../themes/", $name, ".html")),
        }
    };
}

/// Themes compiled into the agent; always available.
pub const BUILTIN_THEMES: &[BuiltinTheme] = &[
    builtin!("matrix"),
    builtin!("ghost"),
    builtin!("shuffle"),
    builtin!("hackerTerminal"),
];

/// Theme used by dynamic services that do not name one.
pub const DEFAULT_THEME: &str = "matrix";

/// True if `name` is a bare theme name (`[A-Za-z0-9_-]+`): no dots or path
/// separators, so a theme can never point outside the themes directory.
pub fn is_valid_theme_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The theme names a configuration may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThemeCatalog {
    names: BTreeSet<String>,
}

impl ThemeCatalog {
    /// Only the built-in themes; for agents without user themes and tests.
    pub fn builtin() -> Self {
        ThemeCatalog {
            names: BUILTIN_THEMES.iter().map(|t| t.name.to_string()).collect(),
        }
    }

    /// Built-ins plus the given user theme names (invalid names are skipped);
    /// lets callers and tests build a catalog without touching the disk.
    pub fn with_user_themes<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut catalog = Self::builtin();
        for name in names {
            if is_valid_theme_name(name.as_ref()) {
                catalog.names.insert(name.as_ref().to_string());
            }
        }
        catalog
    }

    /// Built-ins plus every `<name>.html` file in `dir` (files whose stem is
    /// not a valid theme name are ignored). A missing directory is not an
    /// error: the agent then only has the built-ins.
    pub fn with_user_dir(dir: &Path) -> Result<Self, ConfigError> {
        let io_err = |source| ConfigError::ThemesDir {
            path: dir.to_path_buf(),
            source,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Self::builtin()),
            Err(e) => return Err(io_err(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_err)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("html") || !path.is_file() {
                continue;
            }
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_string());
            }
        }
        Ok(Self::with_user_themes(names))
    }

    /// Whether `name` is a known theme.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// All known theme names, sorted; for error messages and the status API.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]
mod tests {
    use super::*;

    #[test]
    fn user_dir_lists_html_files_and_tolerates_missing_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("neon.html"), "<html/>").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        std::fs::write(dir.path().join("bad.name.html"), "x").expect("write");
        let catalog = ThemeCatalog::with_user_dir(dir.path()).expect("catalog");
        assert!(catalog.contains("neon"));
        assert!(catalog.contains("matrix"));
        assert!(!catalog.contains("notes"));
        assert!(!catalog.contains("bad.name"));
        let missing = ThemeCatalog::with_user_dir(&dir.path().join("nope")).expect("missing ok");
        assert_eq!(missing, ThemeCatalog::builtin());
    }

    #[test]
    fn theme_names_are_bare() {
        assert!(is_valid_theme_name("hackerTerminal"));
        assert!(is_valid_theme_name("my_theme-2"));
        for bad in ["", "../x", "a/b", "a.b", "a b", "a\\b"] {
            assert!(!is_valid_theme_name(bad), "{bad:?}");
        }
    }
}
