//! Docker labels as a second source of services: containers labelled
//! `autostop.enable=true` (with `autostop.port`, and optionally
//! `autostop.idle-timeout`, `autostop.mode`, `autostop.theme`, `autostop.sleep`,
//! `autostop.name`, `autostop.requires`, `autostop.keep-warm`,
//! `autostop.prewarm`, `autostop.busy-cpu-percent`) become services, grouped by compose project (or one per
//! container outside compose). The file config wins on conflicts, with a
//! warning.
//!
//! Label values go through the same validation as the file: each group is
//! rendered as a `[[service]]` table and parsed, so a bad label gets the
//! same message a bad file field would, labelled with the container.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use super::{Config, Protocol, ServiceConfig, Target, ThemeCatalog};
use crate::published::HostPort;

/// The label that opts a container in.
pub const LABEL_ENABLE: &str = "autostop.enable";
const LABEL_PORT: &str = "autostop.port";
const LABEL_IDLE: &str = "autostop.idle-timeout";
const LABEL_MODE: &str = "autostop.mode";
const LABEL_THEME: &str = "autostop.theme";
const LABEL_SLEEP: &str = "autostop.sleep";
const LABEL_NAME: &str = "autostop.name";
const LABEL_REQUIRES: &str = "autostop.requires";
const LABEL_KEEP_WARM: &str = "autostop.keep-warm";
const LABEL_PREWARM: &str = "autostop.prewarm";
const LABEL_BUSY: &str = "autostop.busy-cpu-percent";
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_WORKING_DIR: &str = "com.docker.compose.project.working_dir";

/// A container as Docker describes it: name, labels, what it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelledContainer {
    /// Container name (without the leading `/`).
    pub name: String,
    /// All its labels.
    pub labels: BTreeMap<String, String>,
    /// Where Docker publishes its ports on the host, by protocol (from
    /// `HostConfig.PortBindings`, set whether or not it runs).
    pub published: BTreeSet<(Protocol, HostPort)>,
    /// Its addresses on its networks while it runs (what a docker-proxy
    /// relaying its ports forwards to).
    pub addresses: Vec<IpAddr>,
}

impl LabelledContainer {
    /// The compose project directory it belongs to, if any.
    pub fn working_dir(&self) -> Option<&str> {
        self.labels.get(COMPOSE_WORKING_DIR).map(String::as_str)
    }
}

/// The labelled containers making up `service` (as built by
/// [`services_from_labels`] from `containers`).
pub fn members<'a>(
    service: &ServiceConfig,
    containers: &'a [LabelledContainer],
) -> Vec<&'a LabelledContainer> {
    containers
        .iter()
        .filter(|c| match &service.target {
            Target::ComposeDir(dir) => c.working_dir() == dir.to_str(),
            Target::Containers(names) => names.contains(&c.name),
        })
        .collect()
}

/// Services described by labels, and one message per group that could not
/// be turned into a valid service.
pub fn services_from_labels(
    containers: &[LabelledContainer],
    themes: &ThemeCatalog,
    status_listen: SocketAddr,
) -> (Vec<ServiceConfig>, Vec<String>) {
    // Group: compose working dir, else the container alone.
    let mut groups: BTreeMap<String, Vec<&LabelledContainer>> = BTreeMap::new();
    for container in containers {
        if container.labels.get(LABEL_ENABLE).map(String::as_str) != Some("true") {
            continue;
        }
        let key = match container.labels.get(COMPOSE_WORKING_DIR) {
            Some(dir) => format!("compose:{dir}"),
            None => format!("container:{}", container.name),
        };
        groups.entry(key).or_default().push(container);
    }
    let (mut services, mut problems) = (Vec::new(), Vec::new());
    for members in groups.values() {
        match group_service(members, themes, status_listen) {
            Ok(service) => services.push(service),
            Err(problem) => problems.push(problem),
        }
    }
    (services, problems)
}

/// The first value of `label` among the group's containers.
fn first<'a>(members: &[&'a LabelledContainer], label: &str) -> Option<&'a str> {
    members
        .iter()
        .find_map(|c| c.labels.get(label).map(String::as_str))
}

fn group_service(
    members: &[&LabelledContainer],
    themes: &ThemeCatalog,
    status_listen: SocketAddr,
) -> Result<ServiceConfig, String> {
    let origin = format!(
        "labels of container{} {}",
        if members.len() > 1 { "s" } else { "" },
        members
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let working_dir = first(members, COMPOSE_WORKING_DIR);
    let name = first(members, LABEL_NAME)
        .or_else(|| working_dir.and(first(members, COMPOSE_PROJECT)))
        .or_else(|| members.first().map(|m| m.name.as_str()))
        .unwrap_or_default();
    let ports =
        first(members, LABEL_PORT).ok_or_else(|| format!("{origin}: {LABEL_PORT} is missing"))?;

    let mut table = toml::Table::new();
    table.insert("name".into(), name.into());
    let mut port_list = Vec::new();
    for part in ports.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        port_list.push(match part.parse::<i64>() {
            Ok(number) => toml::Value::Integer(number),
            Err(_) => toml::Value::String(part.to_owned()),
        });
    }
    table.insert("ports".into(), toml::Value::Array(port_list));
    if let Some(idle) = first(members, LABEL_IDLE) {
        table.insert("idle_timeout".into(), idle.into());
    }
    if let Some(mode) = first(members, LABEL_MODE) {
        table.insert("mode".into(), mode.into());
    }
    if let Some(theme) = first(members, LABEL_THEME) {
        table.insert("theme".into(), theme.into());
    }
    wake_labels(members, &origin, &mut table)?;
    if let Some(sleep) = first(members, LABEL_SLEEP) {
        table.insert("sleep".into(), sleep.into());
    }
    match working_dir {
        Some(dir) => table.insert("compose_dir".into(), dir.into()),
        None => table.insert(
            "containers".into(),
            toml::Value::Array(members.iter().map(|c| c.name.clone().into()).collect()),
        ),
    };
    let mut doc = toml::Table::new();
    // The agent's real status address, so a label claiming its port is
    // refused like a file service would be.
    let mut agent = toml::Table::new();
    agent.insert("status_listen".into(), status_listen.to_string().into());
    doc.insert("agent".into(), toml::Value::Table(agent));
    doc.insert(
        "service".into(),
        toml::Value::Array(vec![toml::Value::Table(table)]),
    );
    let text = toml::to_string(&doc).map_err(|e| format!("{origin}: {e}"))?;
    let parsed = Config::parse(&text, &origin, themes).map_err(|e| {
        // Positions refer to the generated table; the field names are what
        // matter here, e.g. "service[0].idle_timeout: invalid duration".
        e.to_string()
            .lines()
            .map(|l| l.replacen(&format!("{origin}:"), &format!("{origin}: "), 1))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    parsed
        .services
        .into_iter()
        .next()
        .ok_or_else(|| format!("{origin}: no service"))
}

/// `autostop.requires` (comma-separated names), `autostop.keep-warm`
/// (windows separated by `;`, as a window has commas), `autostop.prewarm`
/// (`true`/`false`) and `autostop.busy-cpu-percent`, into the table.
fn wake_labels(
    members: &[&LabelledContainer],
    origin: &str,
    table: &mut toml::Table,
) -> Result<(), String> {
    let split = |text: &str, sep: char| -> toml::Value {
        toml::Value::Array(
            text.split(sep)
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.into())
                .collect(),
        )
    };
    if let Some(requires) = first(members, LABEL_REQUIRES) {
        table.insert("requires".into(), split(requires, ','));
    }
    if let Some(windows) = first(members, LABEL_KEEP_WARM) {
        table.insert("keep_warm".into(), split(windows, ';'));
    }
    if let Some(prewarm) = first(members, LABEL_PREWARM) {
        let value = match prewarm.trim() {
            "true" => true,
            "false" => false,
            other => {
                return Err(format!(
                    "{origin}: {LABEL_PREWARM}: {other:?} is not true or false"
                ))
            }
        };
        table.insert("prewarm".into(), value.into());
    }
    if let Some(busy) = first(members, LABEL_BUSY) {
        let value = busy.trim().parse::<i64>().map_err(|_| {
            format!("{origin}: {LABEL_BUSY}: {busy:?} is not a whole number of percent")
        })?;
        table.insert("busy_cpu_percent".into(), value.into());
    }
    Ok(())
}

/// The file's config plus the labelled services that do not clash with it
/// (same name or same port): the file wins, and each clash is a warning.
pub fn merge(file: &Config, labelled: Vec<ServiceConfig>) -> (Config, Vec<String>) {
    let mut merged = file.clone();
    let mut warnings = Vec::new();
    for service in labelled {
        let clash = merged
            .services
            .iter()
            .find(|s| s.name == service.name || s.ports.iter().any(|p| service.ports.contains(p)));
        if let Some(existing) = clash {
            warnings.push(format!(
                "service {:?} from Docker labels is ignored: it clashes with {:?} from the config file (name or port), and the file wins",
                service.name, existing.name
            ));
            continue;
        }
        merged.services.push(service);
    }
    (merged, warnings)
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
    use crate::config::{Mode, Target};

    fn status() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 3456))
    }

    fn container(name: &str, labels: &[(&str, &str)]) -> LabelledContainer {
        LabelledContainer {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn compose_containers_group_into_one_service() {
        let web = container(
            "shop_web_1",
            &[
                ("autostop.enable", "true"),
                ("autostop.port", "8090"),
                ("autostop.idle-timeout", "10m"),
                ("autostop.mode", "dynamic"),
                ("autostop.theme", "ghost"),
                ("com.docker.compose.project", "shop"),
                ("com.docker.compose.project.working_dir", "/opt/shop"),
            ],
        );
        let db = container(
            "shop_db_1",
            &[
                ("autostop.enable", "true"),
                ("com.docker.compose.project", "shop"),
                ("com.docker.compose.project.working_dir", "/opt/shop"),
            ],
        );
        let lone = container(
            "redis-cache",
            &[
                ("autostop.enable", "true"),
                ("autostop.port", "6380, 6381/udp"),
            ],
        );
        let off = container(
            "other",
            &[("autostop.enable", "false"), ("autostop.port", "1")],
        );
        let (services, problems) =
            services_from_labels(&[web, db, lone, off], &ThemeCatalog::builtin(), status());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(services.len(), 2);
        let shop = services.iter().find(|s| s.name == "shop").expect("shop");
        assert_eq!(shop.target, Target::ComposeDir("/opt/shop".into()));
        assert_eq!(shop.mode, Mode::Dynamic);
        assert_eq!(shop.idle_timeout.as_secs(), 600);
        let redis = services
            .iter()
            .find(|s| s.name == "redis-cache")
            .expect("redis");
        assert_eq!(redis.ports.len(), 2);
        assert_eq!(redis.target, Target::Containers(vec!["redis-cache".into()]));
    }

    #[test]
    fn bad_labels_are_reported_with_the_container_and_field() {
        let bad = container(
            "api",
            &[
                ("autostop.enable", "true"),
                ("autostop.port", "8080"),
                ("autostop.idle-timeout", "soon"),
            ],
        );
        let missing = container("noport", &[("autostop.enable", "true")]);
        let (services, problems) =
            services_from_labels(&[bad, missing], &ThemeCatalog::builtin(), status());
        assert!(services.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("container api") && p.contains("idle_timeout")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("noport") && p.contains("autostop.port")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_file_wins_on_name_or_port_clashes() {
        let file = Config::parse(
            "[[service]]\nname = \"shop\"\nport = 8090\ncompose_dir = \"/opt/shop\"\n",
            "file",
            &ThemeCatalog::builtin(),
        )
        .expect("valid");
        let same_port = container(
            "x",
            &[("autostop.enable", "true"), ("autostop.port", "8090")],
        );
        let fine = container(
            "y",
            &[("autostop.enable", "true"), ("autostop.port", "8091")],
        );
        let (labelled, _) =
            services_from_labels(&[same_port, fine], &ThemeCatalog::builtin(), status());
        let (merged, warnings) = merge(&file, labelled);
        assert_eq!(
            merged
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["shop", "y"]
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("\"x\"") && warnings[0].contains("file wins"),
            "{warnings:?}"
        );
    }
}
