//! The `autostop` binary: parses the command line and calls the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use autostop::{bpf::Target, commands, config::DEFAULT_CONFIG_PATH, shutdown, watch};

#[derive(Parser)]
#[command(
    name = "autostop",
    version,
    about = "Stops idle Docker services and wakes them on traffic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration and print the resolved services (exit 0 or 2).
    Check {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Convert docker-autostart's config.json to autostop TOML (on stdout).
    ImportJson {
        /// The config.json to convert.
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
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Exit status for an invalid configuration or input (as `check` documents).
const EXIT_INVALID: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => print_or_invalid(commands::check(&config)),
        Command::ImportJson { file } => print_or_invalid(commands::import_json(&file)),
        Command::Watch {
            interfaces,
            targets,
            interval,
            json,
        } => {
            let options = watch::WatchOptions {
                interfaces,
                targets,
                interval,
                json,
            };
            match run_async(watch_until_signal(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("autostop: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn print_or_invalid(result: Result<String, commands::CommandError>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(f)
}

async fn watch_until_signal(options: watch::WatchOptions) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signals().context("installing signal handlers")?;
    let mut stdout = std::io::stdout();
    watch::run(&options, shutdown, &mut stdout)
        .await
        .context("watching the datapath (needs root, a BPF-enabled kernel and tcx)")
}
