//! Offline commands of the `autostop` binary that need no running agent:
//! `check` (validate a config and show the resolved services) and
//! `import-json` (convert the old docker-autostart config.json).

use std::{fmt::Write as _, path::Path};

use crate::{
    config::{format_human, Config, ConfigError, Sleep, Target},
    state::{StateError, StateStore},
};

/// Why an offline command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is invalid or unreadable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The input file of an import could not be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state directory could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The alert webhook could not be delivered to.
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertError),
    /// The API's token file would refuse the agent's start.
    #[error(transparent)]
    Token(#[from] crate::api::ApiError),
    /// User themes that cannot be served (the agent would fall back to a
    /// built-in theme); one problem per line.
    #[error("{0}")]
    Themes(String),
}

/// Validates the config at `path` and renders the resolved services as a
/// table, with run-time idle timeout overrides from the state directory when
/// it can be read.
pub fn check(path: &Path) -> Result<String, CommandError> {
    let config = Config::load_with_own_themes(path)?;
    let (_, problems) = crate::waitpage::ThemeSet::load(Some(&config.agent.themes_dir));
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{p} (the agent would serve a built-in theme instead)"))
            .collect();
        return Err(CommandError::Themes(lines.join("\n")));
    }
    if let Some(token_file) = &config.agent.token_file {
        crate::api::check_token_file(token_file)?;
    }
    let alerts = match &config.agent.alert_webhook {
        Some(url) => Some(crate::alerts::check(
            url,
            config.agent.alert_ca_file.as_deref(),
        )?),
        None => None,
    };
    let overrides = StateStore::open_read_only(&config.agent.state_dir).ok();
    let mut out = String::new();
    for warning in &config.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let hibernating: Vec<&str> = config
        .services
        .iter()
        .filter(|s| s.sleep == Sleep::Hibernate)
        .map(|s| s.name.as_str())
        .collect();
    if let Some(warning) = swap_warning(&hibernating, crate::cgroup::swap_free().ok()) {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(
        out,
        "{}: OK, {} services",
        path.display(),
        config.services.len()
    );
    if let Some(url) = alerts {
        let _ = writeln!(out, "alerts: {} (path not shown)", url.endpoint());
    }
    let _ = writeln!(
        out,
        "{:<16} {:<18} {:<9} {:<15} {:<12} {:<8} TARGET",
        "NAME", "PORTS", "MODE", "THEME", "IDLE", "START"
    );
    for service in &config.services {
        let ports: Vec<String> = service.ports.iter().map(ToString::to_string).collect();
        let idle = match overrides
            .as_ref()
            .and_then(|s| s.service(&service.name).idle_timeout_override())
        {
            Some(over) => format!("{} (set)", format_human(over)),
            None => format_human(service.idle_timeout),
        };
        let target = match &service.target {
            Target::ComposeDir(dir) => format!("compose {}", dir.display()),
            Target::Containers(names) => format!("containers {}", names.join(",")),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<18} {:<9} {:<15} {:<12} {:<8} {target}",
            service.name,
            ports.join(","),
            service.mode.as_str(),
            service.theme.as_deref().unwrap_or("-"),
            idle,
            format_human(service.start_timeout),
        );
    }
    Ok(out)
}

/// The warning for services with `sleep = "hibernate"` on a host without
/// free swap (`free_swap`: `None` when it cannot be read).
pub fn swap_warning(hibernating: &[&str], free_swap: Option<u64>) -> Option<String> {
    if hibernating.is_empty() {
        return None;
    }
    let names = hibernating.join(", ");
    match free_swap {
        Some(0) => Some(format!(
            "no free swap on this host: {names} (sleep = \"hibernate\") will be paused without giving their memory back"
        )),
        None => Some(format!(
            "free swap unknown (/proc/meminfo unreadable): {names} (sleep = \"hibernate\") may be paused without giving their memory back"
        )),
        // Whether it holds more than the free swap is checked at each
        // hibernation (the agent then pauses without reclaim and says so).
        Some(_) => None,
    }
}

/// What Docker says about the configured services' containers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ContainerCheck {
    /// Services whose compose project or containers do not exist, and
    /// configured ports no container of their service publishes (never
    /// steered): errors.
    pub missing: Vec<String>,
    /// Labelled services the agent would refuse, and why: warnings.
    pub label_refusals: Vec<String>,
    /// Set when Docker did not answer: existence could not be checked (the
    /// agent re-checks once Docker is back).
    pub docker_down: Option<String>,
}

/// Checks that every service's compose project or containers exist and
/// publish its ports, and which labelled services the agent would refuse.
pub async fn check_containers(path: &Path) -> Result<ContainerCheck, CommandError> {
    use crate::service::{ContainerRuntime, ServiceError};
    let config = Config::load_with_own_themes(path)?;
    let client = crate::docker::DockerClient::lazy(&config.agent.docker_socket.to_string_lossy());
    let runtime = crate::docker::DockerRuntime::new(client.clone(), &config.services);
    let mut report = ContainerCheck::default();
    for service in &config.services {
        match runtime.observe(&service.name).await {
            Ok(_) => {}
            Err(ServiceError::Unreachable(why)) => {
                report.docker_down = Some(why);
                return Ok(report);
            }
            Err(e) => {
                report
                    .missing
                    .push(format!("service {}: {e}", service.name));
                continue;
            }
        }
        if let Ok(endpoints) = runtime.endpoints(&service.name).await {
            report.missing.extend(endpoints.unpublished.iter().map(|port| {
                format!(
                    "service {}: port {port}: no container of the service publishes it (it would not be steered)",
                    service.name
                )
            }));
        }
    }
    match crate::agent::discover_labelled(&client, &config, &mut Default::default()).await {
        Ok(scan) => {
            report.label_refusals = scan.refusals;
            report.missing.extend(over_capacity(&config, scan.services));
        }
        Err(e) => report
            .label_refusals
            .push(format!("services from Docker labels not checked: {e}")),
    }
    Ok(report)
}

/// The error when the file's services plus the labelled ones the agent
/// would accept exceed `agent.max_services`.
fn over_capacity(config: &Config, labelled: Vec<crate::config::ServiceConfig>) -> Option<String> {
    let (merged, _) = crate::config::labels::merge(config, labelled);
    let max = config.agent.max_services;
    let total = merged.services.len();
    (total > usize::try_from(max).unwrap_or(usize::MAX)).then(|| {
        let configured = config.services.len();
        format!(
            "agent.max_services: {configured} configured and {} labelled services make {total}, more than {max}; the agent would refuse {} of them (the limit may be raised up to {})",
            total - configured,
            total - usize::try_from(max).unwrap_or(total),
            crate::config::MAX_SERVICES_LIMIT
        )
    })
}

/// Converts the docker-autostart `config.json` at `path` to autostop TOML.
pub fn import_json(path: &Path) -> Result<String, CommandError> {
    let text = std::fs::read_to_string(path).map_err(|source| CommandError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(crate::config::import_seed_json(&text)?)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn repo_file(relative: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(relative)
    }

    #[test]
    fn the_shipped_config_validates_and_manages_nothing() {
        let report =
            check(&repo_file("packaging/autostop.toml")).expect("packaging/autostop.toml is valid");
        assert!(report.contains("OK, 0 services"), "{report}");
    }

    #[test]
    fn the_shipped_config_examples_validate_once_uncommented() {
        let text = std::fs::read_to_string(repo_file("packaging/autostop.toml")).expect("read");
        let (agent, examples) = text.split_once("# EXAMPLES:").expect("an EXAMPLES section");
        let uncommented: Vec<&str> = examples
            .lines()
            .skip_while(|l| *l != "#")
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect();
        let toml = format!("{agent}\n{}\n", uncommented.join("\n"));
        let config = Config::parse(&toml, "examples", &crate::config::ThemeCatalog::builtin())
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(config.services.len(), 8);
        let jitsi = config
            .services
            .iter()
            .find(|s| s.name == "jitsi")
            .expect("jitsi");
        assert!(jitsi.hold_while_connected && jitsi.ports.len() == 2);
    }

    #[test]
    fn the_seed_config_json_imports_to_a_valid_config() {
        let toml = import_json(&repo_file(
            "autostop-agent/src/config/testdata/seed-config.json",
        ))
        .expect("import");
        let config = Config::parse(&toml, "imported", &crate::config::ThemeCatalog::builtin())
            .expect("valid");
        assert_eq!(config.services.len(), 8);
    }

    #[test]
    fn hibernating_services_warn_without_swap() {
        assert_eq!(swap_warning(&[], Some(0)), None);
        let none = swap_warning(&["rag"], Some(0)).expect("warned");
        assert!(
            none.contains("no free swap") && none.contains("rag"),
            "{none}"
        );
        assert!(swap_warning(&["rag"], None).is_some());
        assert_eq!(swap_warning(&["rag"], Some(1 << 30)), None);
    }

    #[test]
    fn configured_plus_labelled_services_beyond_max_services_are_an_error() {
        let text = "[agent]\nmax_services = 2\n[[service]]\nname = \"a\"\nport = 9001\ncontainers = [\"a\"]\n";
        let config =
            Config::parse(text, "t.toml", &crate::config::ThemeCatalog::builtin()).expect("valid");
        let labelled = |names: &[&str]| -> Vec<crate::config::ServiceConfig> {
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut s = config.services[0].clone();
                    s.name = (*name).to_owned();
                    s.ports[0].port = 9100 + u16::try_from(i).expect("few");
                    s
                })
                .collect()
        };
        assert_eq!(over_capacity(&config, labelled(&["b"])), None);
        let error = over_capacity(&config, labelled(&["b", "c", "d"])).expect("over");
        assert!(
            error.starts_with(
                "agent.max_services: 1 configured and 3 labelled services make 4, more than 2"
            ),
            "{error}"
        );
        assert!(error.contains("refuse 2 of them"), "{error}");
    }

    #[test]
    fn check_reports_a_broken_user_theme() {
        let dir = tempfile::tempdir().expect("tempdir");
        let themes = dir.path().join("themes");
        std::fs::create_dir(&themes).expect("mkdir");
        std::fs::write(
            themes.join("mine.html"),
            "<p>{{ serviceName }} {{ nope }}</p>",
        )
        .expect("write");
        let path = dir.path().join("autostop.toml");
        let text = format!(
            "[agent]\nthemes_dir = \"{}\"\n\n[[service]]\nname = \"a\"\nport = 8001\nmode = \"dynamic\"\ntheme = \"mine\"\ncompose_dir = \"/x\"\n",
            themes.display()
        );
        std::fs::write(&path, text).expect("write config");
        let err = check(&path).expect_err("broken theme").to_string();
        assert!(err.contains("mine") && err.contains("nope"), "{err}");
    }

    #[test]
    fn check_reports_every_error_with_its_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[[service]]\nname = \"a\"\nport = 0\ncompose_dir = \"/x\"\nmode = \"fast\"\n",
        )
        .expect("write");
        let err = check(&path).expect_err("invalid").to_string();
        assert!(err.contains("bad.toml:3:8: service[0].port"), "{err}");
        assert!(err.contains("bad.toml:5:8: service[0].mode"), "{err}");
    }

    #[test]
    fn check_refuses_a_webhook_it_cannot_deliver_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("autostop.toml");
        let state = dir.path().join("state");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").expect("write");
        let agent = |keys: &str| {
            format!(
                "[agent]\nstate_dir = \"{}\"\nthemes_dir = \"{}\"\n{keys}\n",
                state.display(),
                dir.path().display()
            )
        };
        let https = "alert_webhook = \"https://hooks.example/SECRET\"";
        std::fs::write(
            &path,
            agent(&format!("{https}\nalert_ca_file = \"{}\"", ca.display())),
        )
        .expect("write config");
        let err = check(&path).expect_err("unusable CA file").to_string();
        assert!(err.starts_with("agent.alert_ca_file"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
        std::fs::write(
            &path,
            agent("alert_webhook = \"http://127.0.0.1:9/SECRET\""),
        )
        .expect("write config");
        let out = check(&path).expect("plain http needs no CA");
        assert!(
            out.contains("alerts: http://127.0.0.1:9 (path not shown)"),
            "{out}"
        );
        assert!(!out.contains("SECRET"), "{out}");
    }

    #[test]
    fn check_refuses_a_token_file_the_agent_would_refuse() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, token) = (dir.path().join("autostop.toml"), dir.path().join("token"));
        std::fs::write(&token, "s3cret\n").expect("write");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let text = format!(
            "[agent]\nstate_dir = \"{}\"\ntoken_file = \"{}\"\n",
            dir.path().join("state").display(),
            token.display()
        );
        std::fs::write(&path, text).expect("write config");
        let err = check(&path).expect_err("readable by others").to_string();
        let named = format!("agent.token_file {}: group or others", token.display());
        assert!(err.starts_with(&named), "{err}");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        check(&path).expect("private");
    }
}
