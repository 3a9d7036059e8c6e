//! autostop: stops idle Docker services and wakes them on the first packet of
//! traffic, so a small server keeps only what is in use in RAM.
//!
//! The agent is a library with a thin binary (`src/main.rs`). Modules:
//!
//! - [`agent`]: `autostop run`, wiring every module below into the agent:
//!   one registry of services changed in one place, each kernel part and
//!   the state file owned by one task, `run_with` over traits so the whole
//!   agent runs in a unit test.
//! - [`alerts`]: posts failure events to the alert webhook.
//! - [`api`]: the status API, Prometheus endpoint and dashboard (axum).
//! - [`bpf`]: loads the kernel programs built from `autostop-ebpf`, attaches
//!   them, reads their counters, and cuts them into parts (classifier,
//!   steering maps, ignored sources, wake events) for the tasks that own
//!   them.
//! - [`cgroup`]: a container's memory cgroup: resident and swapped
//!   memory, and reclaim to swap while it is paused (hibernate).
//! - [`cli`]: the command line (clap), also rendered into the man pages
//!   and shell completions by `cargo xtask dist`.
//! - [`client`]: the CLI's calls to a running agent (`autostop status`, …).
//! - [`coldstart`]: the listener steered connections land on; holds them
//!   until their service is ready, then splices them to the container.
//! - [`commands`]: `autostop check` and `autostop import-json`.
//! - [`config`]: the TOML configuration, its validation (errors name file,
//!   line, column and field) and the import of the old config.json.
//! - [`logging`]: log output that cannot hurt the agent (a lossy queue and
//!   one writer thread; journald's native protocol under systemd).
//! - [`events`]: the numbered events stream with its replay buffer.
//! - [`handover`]: a new agent takes over from the running one (sockets
//!   passed over the control socket) without refusing a connection.
//! - [`metrics`]: Prometheus metrics fed by lifecycle steps and samples.
//! - [`notify`]: systemd's readiness, watchdog and stopping notifications.
//! - [`published`]: where Docker publishes a port on the host (address,
//!   port), what steering and the warm-up redirect match.
//! - [`procnet`]: established-connection counts inside containers.
//! - [`progress`]: a start's steps (containers, required services) and
//!   their phases, as the wait page shows them.
//! - [`netfilter`]: the warm-up redirect, an nf_tables table (over netlink,
//!   owned by the agent's socket) that keeps new connections to a starting
//!   service's published (address,) port away from Docker's DNAT until the
//!   app listens, and the SYN_SENT conntrack clean-up over ctnetlink.
//! - [`docker`]: the Docker driver (bollard): starts, stops and probes the
//!   containers of each service, and follows Docker events.
//! - [`service`]: one state machine per service (stopped → starting → ready
//!   → stopping), driven by wake events, idle timers and Docker events, with
//!   Docker, steering and counters behind traits.
//! - [`supervisor`]: watches the long-lived tasks; a panic or an unexpected
//!   end shuts the agent down cleanly and makes it exit non-zero.
//! - [`test_hooks`]: fault injection for the liveness tests (cargo feature
//!   `test-hooks` only; empty otherwise).
//! - [`state`]: what the agent remembers across restarts (run-time idle
//!   timeouts, learned start durations, RAM savings) in `state_dir`.
//! - [`schedule`]: keep_warm windows and learned pre-warming.
//! - [`shutdown`]: one cancellation token, cancelled by SIGINT/SIGTERM, that
//!   every task watches.
//! - [`waitpage`]: dynamic mode's request-head reading and classification,
//!   themed wait pages and the replies sent while a service starts.
//! - [`watch`]: the live-counter view used by `autostop watch` and the demo.

pub mod agent;
pub mod alerts;
pub mod api;
pub mod bpf;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod coldstart;
pub mod commands;
pub mod config;
pub mod docker;
pub mod events;
pub mod handover;
pub mod logging;
pub mod metrics;
pub mod netfilter;
pub mod notify;
pub mod procnet;
pub mod progress;
pub mod published;
pub mod schedule;
pub mod service;
pub mod shutdown;
pub mod state;
pub mod supervisor;
pub mod test_hooks;
pub mod waitpage;
pub mod watch;
