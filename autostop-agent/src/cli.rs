//! The `autostop` command line (clap): every subcommand and option, in the
//! library so that the binary parses with it and `cargo xtask dist` renders
//! the man pages and shell completions from the same definition (through
//! the `autostop-docs` helper binary), so they cannot drift from it.

use std::{path::PathBuf, time::Duration};

use clap::{CommandFactory as _, Parser, Subcommand, ValueHint};

use crate::{bpf::Target, config::DEFAULT_CONFIG_PATH};

/// `autostop …`: the agent and its control commands.
#[derive(Debug, Parser)]
#[command(
    name = "autostop",
    version,
    about = "Stops idle Docker services and wakes them on traffic",
    long_about = "Stops idle Docker services and wakes them on traffic.\n\n\
                  `autostop run` is the agent (what the systemd unit or the container \
                  starts): it watches each configured service's traffic in the kernel \
                  (eBPF), stops a service after its idle timeout and starts it again on \
                  the first connection, holding that connection until the app answers. \
                  The other commands talk to a running agent through its status API, \
                  or work offline (`check`, `import-json`)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground (what the systemd unit starts).
    Run {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_hint = ValueHint::FilePath)]
        config: PathBuf,
        /// Take over from the agent already running (its sockets, held
        /// connections and state) without refusing a connection; exits
        /// non-zero, leaving that agent as it was, if the hand-over cannot
        /// start. `autostop upgrade` starts the agent this way.
        #[arg(long)]
        takeover: bool,
    },
    /// Replace the running agent with a new process of the installed
    /// binary (after a package upgrade) without refusing a connection;
    /// waits for the outcome. The running agent goes on if the new one
    /// fails before taking over.
    Upgrade {
        /// Configuration file (for the agent's state directory).
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_hint = ValueHint::FilePath)]
        config: PathBuf,
        /// The binary to start instead of the running agent's own path.
        #[arg(long, value_hint = ValueHint::FilePath)]
        binary: Option<PathBuf>,
    },
    /// Show every service: state, uptime, RAM, idle timeout, time to stop.
    Status {
        /// Configuration file (for the agent's address and token).
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_hint = ValueHint::FilePath)]
        config: PathBuf,
        /// Print the API's JSON instead of a table.
        #[arg(long, conflicts_with = "wide")]
        json: bool,
        /// Every column, names and errors in full (the default fits 100
        /// columns).
        #[arg(long)]
        wide: bool,
    },
    /// Follow the agent's events (starts, stops, readiness, failures,
    /// manual actions, reloads) as they happen.
    Events {
        /// Configuration file (for the agent's address and token).
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_hint = ValueHint::FilePath)]
        config: PathBuf,
        /// Print each event's JSON, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Start a service now.
    Start(NameArgs),
    /// Stop a service now.
    Stop(NameArgs),
    /// Never auto-stop a service until released.
    Hold(NameArgs),
    /// Undo `hold`.
    Release(NameArgs),
    /// Change a service's idle timeout (persisted), e.g. `set-timeout ragflow 10m`.
    SetTimeout {
        /// Service name.
        name: String,
        /// New idle timeout (humantime: 10m, 1h30m, 90s).
        timeout: String,
        /// Configuration file (for the agent's address and token).
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_hint = ValueHint::FilePath)]
        config: PathBuf,
    },
    /// Validate a configuration and print the resolved services (exit 0 or 2).
    Check {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_hint = ValueHint::FilePath)]
        config: PathBuf,
    },
    /// Convert docker-autostart's config.json to autostop TOML (on stdout).
    ImportJson {
        /// The config.json to convert.
        #[arg(value_hint = ValueHint::FilePath)]
        file: PathBuf,
    },
    /// Attach the traffic classifier and print live counters until Ctrl-C.
    Watch {
        /// Interface to observe (egress side); repeatable.
        #[arg(long = "iface", default_value = "lo")]
        interfaces: Vec<String>,
        /// Destination to count, ADDR:PORT[/tcp|/udp]; repeatable.
        #[arg(long = "target")]
        targets: Vec<Target>,
        /// Time between reports (e.g. 1s, 250ms).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
        /// Attach an empty classifier instead (benchmark baseline).
        #[arg(long)]
        calibrate: bool,
        /// Also fill the (unattached) sk_lookup program's maps with this
        /// binding, ADDR:PORT or *:PORT, for benchmarks; repeatable.
        #[arg(long = "steer")]
        steer: Vec<crate::published::HostPort>,
    },
}

/// A service name and the config that locates the agent.
#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// Service name.
    pub name: String,
    /// Configuration file (for the agent's address and token).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_hint = ValueHint::FilePath)]
    pub config: PathBuf,
}

/// The command-line definition as clap sees it (for man pages and
/// completions).
pub fn command() -> clap::Command {
    Cli::command()
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn run_defaults_to_the_packaged_config() {
        let cli = Cli::try_parse_from(["autostop", "run"]).expect("parses");
        match cli.command {
            Command::Run { config, takeover } => {
                assert_eq!(config, PathBuf::from(DEFAULT_CONFIG_PATH));
                assert!(!takeover);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_bad_interval_names_the_value() {
        let err =
            Cli::try_parse_from(["autostop", "watch", "--interval", "soon"]).expect_err("refused");
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }
}
