//! `autostop watch`: attaches the traffic classifier to some interfaces,
//! registers a few destinations and prints their counters until asked to
//! stop. The demo uses it, and the integration tests read its JSON lines to
//! check the kernel's counts against traffic they sent.

use std::{io::Write, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    bpf::{calibration::Calibration, BpfError, Datapath, Target},
    published::HostPort,
};

/// What to watch and how to print it.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Interfaces whose egress side is observed.
    pub interfaces: Vec<String>,
    /// Destinations to count; each gets its own counter (index = position).
    pub targets: Vec<Target>,
    /// Time between two reports.
    pub interval: Duration,
    /// One JSON object per line instead of a human table.
    pub json: bool,
    /// Attach the empty `calibrate_noop` classifier instead of the real one
    /// (benchmarks subtract its per-run cost); nothing is counted.
    pub calibrate: bool,
    /// Bindings to put in the sk_lookup program's maps (service index =
    /// position), with the agent's listeners registered, so a benchmark
    /// can time the program with `BPF_PROG_TEST_RUN`. The program is not
    /// attached: no connection of this host is steered.
    pub steer: Vec<HostPort>,
}

/// Why watching failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Loading or attaching the kernel programs failed.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// Writing the report failed (closed pipe).
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    /// A listener for steered connections could not be opened.
    #[error("opening a loopback listener for steering: {0}")]
    Listener(std::io::Error),
}

/// Loads and attaches the datapath, prints reports every `interval` and
/// returns when `shutdown` is cancelled, after detaching everything.
pub async fn run(
    options: &WatchOptions,
    shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<(), WatchError> {
    if options.calibrate {
        return calibrate(options, shutdown, out).await;
    }
    let mut datapath = Datapath::load()?;
    for interface in &options.interfaces {
        datapath.attach_egress(interface)?;
    }
    for (index, target) in (0u32..).zip(&options.targets) {
        datapath.add_target(target, index)?;
    }
    // Kept until the end: the sockmap entries go when the sockets close.
    let mut listeners = Vec::new();
    if !options.steer.is_empty() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = std::net::TcpListener::bind(addr).map_err(WatchError::Listener)?;
            datapath.register_listener(&listener)?;
            listeners.push(listener);
        }
        for (index, binding) in (0u32..).zip(&options.steer) {
            datapath.steer(*binding, index)?;
        }
    }
    let program_id = datapath.program_id()?;
    if options.json {
        let steering = match options.steer.is_empty() {
            true => String::new(),
            false => format!(
                r#","steering_program_id":{}"#,
                datapath.steering_program_id()?
            ),
        };
        writeln!(
            out,
            r#"{{"event":"attached","program_id":{program_id}{steering},"interfaces":{}}}"#,
            json_strings(&options.interfaces)
        )?;
    } else {
        writeln!(
            out,
            "autostop: classifier (program id {program_id}) attached to {}; Ctrl-C to stop",
            options.interfaces.join(", ")
        )?;
    }
    out.flush()?;

    let mut ticker = tokio::time::interval(options.interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => report(&datapath, options, out)?,
        }
    }
    // One last report so nothing counted since the previous tick is lost.
    report(&datapath, options, out)?;
    drop(datapath);
    drop(listeners);
    if options.json {
        writeln!(out, r#"{{"event":"detached","program_id":{program_id}}}"#)?;
    } else {
        writeln!(out, "autostop: detached")?;
    }
    out.flush()?;
    Ok(())
}

/// Keeps the empty classifier attached to the interfaces until `shutdown`.
async fn calibrate(
    options: &WatchOptions,
    shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<(), WatchError> {
    let mut attached = Vec::with_capacity(options.interfaces.len());
    for interface in &options.interfaces {
        attached.push(Calibration::attach(interface)?);
    }
    let ids = attached
        .iter_mut()
        .map(|c| c.program_id().map(|id| id.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    // Each interface has its own instance; the first is the one reported.
    let program_id = ids.first().map_or("null", String::as_str);
    if options.json {
        writeln!(
            out,
            r#"{{"event":"attached","program_id":{program_id},"calibration":true,"interfaces":{}}}"#,
            json_strings(&options.interfaces)
        )?;
    } else {
        writeln!(
            out,
            "autostop: empty calibration classifier (program ids {}) attached; Ctrl-C to stop",
            ids.join(", ")
        )?;
    }
    out.flush()?;
    shutdown.cancelled().await;
    drop(attached);
    Ok(())
}

fn report(
    datapath: &Datapath,
    options: &WatchOptions,
    out: &mut (dyn Write + Send),
) -> Result<(), WatchError> {
    let stats = datapath.stats()?;
    if options.json {
        let mut targets = Vec::with_capacity(options.targets.len());
        for (index, target) in (0u32..).zip(&options.targets) {
            let a = datapath.activity(index)?;
            targets.push(format!(
                r#"{{"target":"{target}","packets":{},"bytes":{},"last_seen_ns":{}}}"#,
                a.packets, a.bytes, a.last_seen_ns
            ));
        }
        writeln!(
            out,
            r#"{{"event":"counters","packets_seen":{},"packets_matched":{},"targets":[{}]}}"#,
            stats.packets_seen,
            stats.packets_matched,
            targets.join(",")
        )?;
    } else {
        writeln!(
            out,
            "packets seen {:>10}  matched {:>10}",
            stats.packets_seen, stats.packets_matched
        )?;
        for (index, target) in (0u32..).zip(&options.targets) {
            let a = datapath.activity(index)?;
            writeln!(
                out,
                "  {target:<28} {:>10} pkts {:>12} bytes",
                a.packets, a.bytes
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Interface names are plain identifiers; this only quotes them.
fn json_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(","))
}
