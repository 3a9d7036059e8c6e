//! autostop: stops idle Docker services and wakes them on the first packet of
//! traffic, so a small server keeps only what is in use in RAM.
//!
//! The agent is a library with a thin binary (`src/main.rs`). Modules:
//!
//! - [`bpf`]: loads the kernel programs built from `autostop-ebpf`, attaches
//!   them and reads their counters.
//! - [`config`]: the TOML configuration, its validation (errors name file,
//!   line, column and field) and the import of the old config.json.
//! - [`docker`]: the Docker driver (bollard): starts, stops and probes the
//!   containers of each service, and follows Docker events.
//! - [`service`]: one state machine per service (stopped → starting → ready
//!   → stopping), driven by wake events, idle timers and Docker events, with
//!   Docker, steering and counters behind traits.
//! - [`shutdown`]: one cancellation token, cancelled by SIGINT/SIGTERM, that
//!   every task watches.
//! - [`watch`]: the live-counter view used by `autostop watch` and the demo.

pub mod bpf;
pub mod config;
pub mod docker;
pub mod service;
pub mod shutdown;
pub mod watch;
