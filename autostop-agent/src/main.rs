//! The `autostop` binary: parses the command line and calls the library.
//!
//! Nothing here prints with `print!`/`eprint!` (they panic when the output
//! is a closed pipe): output goes through `logging::print_out`/`print_err`,
//! which ignore write failures, and logs through `logging`'s lossy queue.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;

use autostop::{
    agent,
    cli::{Cli, Command, NameArgs},
    client::{self, Client},
    commands,
    config::{Config, DEFAULT_STATUS_LISTEN},
    logging::{self, print_err, print_out},
    shutdown, supervisor, watch,
};

/// Exit status for an invalid configuration or input (as `check` documents).
const EXIT_INVALID: u8 = 2;

/// How long the agent's clean-up may take once shutdown began before the
/// process ends anyway (see `supervisor::deadline`).
const CLEANUP_DEADLINE: Duration = Duration::from_secs(10);
/// How long the exit waits for queued log lines to be written.
const LOG_FLUSH_AT_EXIT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    if let Err(e) = logging::init() {
        print_err(&format!("autostop: logging disabled: {e}\n"));
    }
    let cli = Cli::parse();
    let status = dispatch(cli.command);
    logging::flush(LOG_FLUSH_AT_EXIT);
    status
}

fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Run { config, takeover } => report(run_async(async move {
            let shutdown = shutdown::on_signals().context("installing signal handlers")?;
            supervisor::panic::install_hook(shutdown.clone());
            supervisor::deadline::arm(shutdown.clone(), CLEANUP_DEADLINE)
                .context("starting the shutdown deadline thread")?;
            agent::run(
                agent::AgentOptions {
                    config_path: config,
                    takeover,
                },
                shutdown,
            )
            .await?;
            Ok(())
        })),
        Command::Upgrade { config, binary } => report(upgrade(&config, binary)),
        Command::Status { config, json, wide } => report(run_async(async move {
            let client = client_for(&config);
            let services = client.services().await?;
            if json {
                print_out(&format!("{}\n", serde_json::to_string_pretty(&services)?));
            } else {
                print_out(&client::status_table(&services, wide));
                let tz = jiff::tz::TimeZone::system();
                for note in client::schedule_notes(&services, &tz) {
                    print_out(&format!("note: {note}\n"));
                }
                for problem in client.problems().await? {
                    print_out(&format!("problem: {problem}\n"));
                }
            }
            Ok(())
        })),
        Command::Events { config, json } => report(run_async(async move {
            let client = client_for(&config);
            client
                .follow_events(json, |line| print_out(&format!("{line}\n")))
                .await?;
            Ok(())
        })),
        Command::Start(args) => act(args, "start"),
        Command::Stop(args) => act(args, "stop"),
        Command::Hold(args) => act(args, "hold"),
        Command::Release(args) => act(args, "release"),
        Command::SetTimeout {
            name,
            timeout,
            config,
        } => report(run_async(async move {
            humantime::parse_duration(&timeout).with_context(|| {
                format!("invalid timeout {timeout:?} (examples: 10m, 1h30m, 90s)")
            })?;
            client_for(&config)
                .set_idle_timeout(&name, &timeout)
                .await?;
            print_out(&format!(
                "{name}: idle timeout set to {timeout} (persisted)\n"
            ));
            Ok(())
        })),
        Command::Check { config } => {
            let status = print_or_invalid(commands::check(&config));
            if status != ExitCode::SUCCESS {
                return status;
            }
            match run_async(async move { Ok(commands::check_containers(&config).await?) }) {
                Ok(report) => {
                    if let Some(why) = &report.docker_down {
                        print_out(&format!("warning: Docker did not answer ({why}); containers not checked (the agent re-checks when Docker is back)\n"));
                    }
                    for refusal in &report.label_refusals {
                        print_out(&format!("warning: {refusal}\n"));
                    }
                    for missing in &report.missing {
                        print_err(&format!("error: {missing}\n"));
                    }
                    if report.missing.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(EXIT_INVALID)
                    }
                }
                Err(e) => {
                    print_err(&format!("autostop: {e:#}\n"));
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
        Command::ImportJson { file } => print_or_invalid(commands::import_json(&file)),
        Command::Watch {
            interfaces,
            targets,
            interval,
            json,
            calibrate,
            steer,
        } => {
            let options = watch::WatchOptions {
                interfaces,
                targets,
                interval,
                json,
                calibrate,
                steer,
            };
            report(run_async(watch_until_signal(options)))
        }
    }
}

/// The agent's API address and token, from the config when it can be read
/// (the CLI may run unprivileged, so an unreadable config means defaults).
/// `autostop upgrade`: asks the running agent to start a new one that
/// takes over, and reports how it went.
fn upgrade(config: &std::path::Path, binary: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let parsed = Config::load_with_own_themes(config)
        .with_context(|| format!("reading {}", config.display()))?;
    let result = autostop::handover::request_upgrade(&parsed.agent.state_dir, binary, |pid| {
        print_out(&format!("new agent started (pid {pid}); handing over…\n"));
    })
    .context("asking the running agent to upgrade")?;
    match result {
        autostop::handover::UpgradeResult::Upgraded(pid) => {
            print_out(&format!("upgraded: the new agent (pid {pid}) runs\n"));
            Ok(())
        }
        autostop::handover::UpgradeResult::Failed(reason) => {
            anyhow::bail!("upgrade failed: {reason}")
        }
    }
}

fn client_for(config: &std::path::Path) -> Client {
    let parsed = Config::load_with_own_themes(config).ok();
    let addr = parsed
        .as_ref()
        .map(|c| c.agent.status_listen)
        .or_else(|| DEFAULT_STATUS_LISTEN.parse().ok())
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 3456)));
    let token = parsed
        .as_ref()
        .and_then(|c| c.agent.token_file.as_ref())
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    Client { addr, token }
}

fn act(args: NameArgs, action: &'static str) -> ExitCode {
    report(run_async(async move {
        client_for(&args.config).act(&args.name, action).await?;
        print_out(&format!("{}: {action} requested\n", args.name));
        Ok(())
    }))
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_err(&format!("autostop: {e:#}\n"));
            ExitCode::FAILURE
        }
    }
}

fn print_or_invalid(result: Result<String, commands::CommandError>) -> ExitCode {
    match result {
        Ok(text) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_err(&format!("{e}\n"));
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// How long blocking threads left at exit may delay it.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

fn run_async<T, F: std::future::Future<Output = anyhow::Result<T>>>(f: F) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(f);
    // Dropping the runtime would wait for every blocking thread forever.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

async fn watch_until_signal(options: watch::WatchOptions) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signals().context("installing signal handlers")?;
    let mut stdout = std::io::stdout();
    watch::run(&options, shutdown, &mut stdout)
        .await
        .context("watching the datapath (needs root, a BPF-enabled kernel and tcx)")
}
