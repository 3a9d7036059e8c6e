//! The `autostop` binary: parses the command line and calls the library.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use autostop::{bpf::Target, shutdown, watch};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let shutdown = shutdown::on_signals().context("installing signal handlers")?;
    match cli.command {
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
            let mut stdout = std::io::stdout();
            watch::run(&options, shutdown, &mut stdout)
                .await
                .context("watching the datapath (needs root, a BPF-enabled kernel and tcx)")?;
        }
    }
    Ok(())
}
