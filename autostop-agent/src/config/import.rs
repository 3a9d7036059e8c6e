//! One-shot import of the old Node.js tool's `config.json` ("seed") into
//! `autostop.toml` text. Nothing is dropped silently: a field the new format
//! cannot carry is an error naming the service index and the field.

use std::cell::Cell;
use std::fmt;
use std::fmt::Write as _;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::duration::format_human;
use super::error::{ConfigError, LocatedError};
use super::render::quote;
use super::theme::ThemeCatalog;
use super::Config;

/// Label used for positions in the seed JSON.
const SEED_ORIGIN: &str = "config.json";
/// Label used for positions in the generated TOML (when it fails validation).
const CONVERTED_ORIGIN: &str = "converted config.json";

/// One service of the seed, exactly the fields the Node.js tool knew.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SeedService {
    name: String,
    port: u16,
    timeout: Option<u64>,
    mode: Option<String>,
    theme_name: Option<String>,
    compose_dir: String,
}

/// Deserialises the top-level object, recording in `current` the index of
/// the service being read so that errors can name it.
struct FileSeed<'a>(&'a Cell<Option<usize>>);

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = Vec<SeedService>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = Vec<SeedService>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with a \"services\" array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut services = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "services" if services.is_some() => {
                    return Err(de::Error::duplicate_field("services"))
                }
                "services" => services = Some(map.next_value_seed(ListSeed(self.0))?),
                other => return Err(de::Error::unknown_field(other, &["services"])),
            }
        }
        services.ok_or_else(|| de::Error::missing_field("services"))
    }
}

/// Deserialises the `services` array, updating the current index.
struct ListSeed<'a>(&'a Cell<Option<usize>>);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Vec<SeedService>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Vec<SeedService>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of service objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            self.0.set(Some(out.len()));
            match seq.next_element::<SeedService>()? {
                Some(service) => out.push(service),
                None => break,
            }
        }
        self.0.set(None);
        Ok(out)
    }
}

/// Converts a serde_json error into a located error naming the service.
fn json_error(err: &serde_json::Error, index: Option<usize>) -> ConfigError {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let mut message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    let mut field = index.map(|i| format!("services[{i}]")).unwrap_or_default();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, _)) = rest.split_once('`') {
            field = if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
            message.push_str(" (the importer refuses fields it cannot carry over)");
        }
    }
    ConfigError::Invalid(vec![LocatedError {
        origin: SEED_ORIGIN.to_string(),
        line: err.line().max(1),
        column: err.column().max(1),
        field,
        message,
    }])
}

/// Converts the Node.js tool's `config.json` into `autostop.toml` text.
///
/// Each seed service becomes a `[[service]]` with `name`, `port`,
/// `idle_timeout` (exact humantime form of `timeout` ms), `mode`, `theme`
/// (from `themeName`) and `compose_dir`; absent optional fields are left to
/// the TOML defaults. Unknown seed fields, malformed JSON and output that
/// would not validate (seed theme names are accepted as user themes) are
/// reported as [`ConfigError::Invalid`].
pub fn import_seed_json(text: &str) -> Result<String, ConfigError> {
    let current = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let services = FileSeed(&current)
        .deserialize(&mut de)
        .and_then(|s| de.end().map(|()| s))
        .map_err(|e| json_error(&e, current.get()))?;

    let mut out = String::from(
        "# Converted from docker-autostart's config.json by `autostop import-json`.\n",
    );
    for s in &services {
        let _ = write!(
            out,
            "\n[[service]]\nname = {}\nport = {}\n",
            quote(&s.name),
            s.port
        );
        if let Some(ms) = s.timeout {
            let human = format_human(Duration::from_millis(ms));
            let _ = writeln!(out, "idle_timeout = {}", quote(&human));
        }
        if let Some(mode) = &s.mode {
            let _ = writeln!(out, "mode = {}", quote(mode));
        }
        if let Some(theme) = &s.theme_name {
            let _ = writeln!(out, "theme = {}", quote(theme));
        }
        let _ = writeln!(out, "compose_dir = {}", quote(&s.compose_dir));
    }

    let themes =
        ThemeCatalog::with_user_themes(services.iter().filter_map(|s| s.theme_name.as_deref()));
    Config::parse(&out, CONVERTED_ORIGIN, &themes)?;
    Ok(out)
}
