//! The agent's config file during a soak: the valid text for the current
//! settings, and the invalid variants a reload must refuse while the
//! running config stays in force.

use crate::soak_stack::{FileSettings, Stack};

/// The `[agent]` lines of the soak's config besides the fixture's.
pub const AGENT_EXTRA: &str = "docker_labels = true\n";

/// A config the agent must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not TOML.
    Syntax,
    /// A key no table has.
    UnknownKey,
    /// Two services with one name.
    DuplicateName,
    /// A duration that does not parse.
    BadDuration,
    /// A duration under the one-second minimum.
    ZeroDuration,
    /// A duration too large to add to a clock (issue #25 item 2).
    HugeDuration,
    /// A service on the status API's port.
    StatusPort,
    /// Bytes that are not UTF-8.
    NotUtf8,
}

impl Invalid {
    /// Every variant.
    pub const ALL: [Invalid; 8] = [
        Invalid::Syntax,
        Invalid::UnknownKey,
        Invalid::DuplicateName,
        Invalid::BadDuration,
        Invalid::ZeroDuration,
        Invalid::HugeDuration,
        Invalid::StatusPort,
        Invalid::NotUtf8,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Invalid::Syntax => "toml syntax error",
            Invalid::UnknownKey => "unknown key",
            Invalid::DuplicateName => "duplicate service name",
            Invalid::BadDuration => "unparsable idle_timeout",
            Invalid::ZeroDuration => "idle_timeout 0s",
            Invalid::HugeDuration => "idle_timeout 18446744073709551615s",
            Invalid::StatusPort => "service on the status port",
            Invalid::NotUtf8 => "bytes that are not UTF-8",
        }
    }
}

/// The whole valid file for `settings`.
pub fn valid(stack: &Stack, agent_table: &str, settings: FileSettings) -> String {
    let blk = format!("{}s", settings.blk_idle_s);
    format!("{agent_table}{}", stack.services_toml(settings, &blk))
}

/// The file of `variant`, made from the valid one for `settings`.
pub fn invalid(
    stack: &Stack,
    agent_table: &str,
    settings: FileSettings,
    status_port: u16,
    variant: Invalid,
) -> Vec<u8> {
    let with_blk_idle =
        |idle: &str| format!("{agent_table}{}", stack.services_toml(settings, idle));
    let valid = valid(stack, agent_table, settings);
    let blk = stack
        .service("blk")
        .map(|s| (s.port, s.containers.join("\", \"")));
    let (blk_port, blk_container) = blk.unwrap_or_default();
    let text = match variant {
        Invalid::Syntax => format!("{valid}[[service]\nname = \"broken\n"),
        // Lands in the last [[service]] table.
        Invalid::UnknownKey => format!("{valid}idle_timout = \"3s\"\n"),
        Invalid::DuplicateName => format!(
            "{valid}[[service]]\nname = \"blk\"\nport = {blk_port}\n\
             containers = [\"{blk_container}\"]\n"
        ),
        Invalid::BadDuration => with_blk_idle("3 mins x"),
        Invalid::ZeroDuration => with_blk_idle("0s"),
        Invalid::HugeDuration => with_blk_idle("18446744073709551615s"),
        Invalid::StatusPort => format!(
            "{valid}[[service]]\nname = \"onstatus\"\nport = {status_port}\n\
             containers = [\"{blk_container}\"]\n"
        ),
        Invalid::NotUtf8 => {
            let mut bytes = valid.into_bytes();
            bytes.extend_from_slice(b"# \xff\xfe not UTF-8\n");
            return bytes;
        }
    };
    text.into_bytes()
}
