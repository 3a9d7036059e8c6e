//! What a soak run is made of before its first fault: the clients (one
//! or two per service), the printed plan (seed, faults and their
//! windows), a check that `autostop check` passes the soak's config and
//! refuses each invalid variant, and the host's time zone (nginx stamps its
//! log in local time).

use std::{net::SocketAddr, time::Duration};

use anyhow::bail;

use crate::{
    soak::{Options, Soak, TAIL, WARMUP},
    soak_clients::Client,
    soak_config::{self, Invalid},
    soak_faults::FaultKind,
    soak_stack::{Stack, Talk},
};

/// `autostop check` on the valid config and on every invalid variant: the
/// valid one must pass and each invalid one fail (an anomaly otherwise).
pub fn check_variants(soak: &mut Soak) -> anyhow::Result<()> {
    let config = soak.runner.config();
    let status_port = config.status.port();
    let check = |soak: &Soak| soak.runner.cli(&["check"]).is_ok();
    if !check(soak) {
        let out = soak.runner.cli(&["check"]).err().map(|e| format!("{e:#}"));
        bail!("`autostop check` refuses the soak's own config: {out:?}");
    }
    for variant in Invalid::ALL {
        let bytes = soak_config::invalid(
            &soak.stack,
            &soak.agent_table,
            soak.settings,
            status_port,
            variant,
        );
        soak.runner.config().replace(&bytes)?;
        if check(soak) {
            soak.anomaly(format!(
                "`autostop check` accepts an invalid config: {}",
                variant.name()
            ));
        }
    }
    soak.write_valid(soak.settings)
}

/// One client per service, two on `blk`, `dyn` and `tcp` (so a cold start
/// often has more than one connection to hand over).
pub fn clients(stack: &Stack) -> Vec<Client> {
    let mut clients = Vec::new();
    for s in &stack.services {
        let addr = SocketAddr::from(([127, 0, 0, 1], s.proxy));
        let idle = Duration::from_secs(if s.name == "cmp" { 4 } else { 3 });
        let names: &[&'static str] = match (s.name, s.talk) {
            ("blk", _) => &["blk-a", "blk-b"],
            (_, Talk::Json) => &["dyn-json-a", "dyn-json-b"],
            (_, Talk::Echo) => &["tcp-echo-a", "tcp-echo-b"],
            ("hib", _) => &["hib-http"],
            ("cmp", _) => &["cmp-http"],
            _ => &["lbl-http"],
        };
        for name in names {
            clients.push(Client {
                name,
                service: s.name,
                talk: s.talk,
                addr,
                idle,
            });
        }
    }
    clients
}

/// Prints what the run will do: seed, length, binary, faults and windows.
pub fn print_plan(opts: &Options, seed: u64, binary: &std::path::Path, kinds: &[FaultKind]) {
    println!(
        "soak: seed {seed} (replay: cargo xtask soak --minutes {} --seed {seed})",
        opts.minutes
    );
    println!("soak: agent {}", binary.display());
    println!(
        "soak: {} minutes of clients; {WARMUP:?} warm-up, {TAIL:?} tail without faults",
        opts.minutes
    );
    println!("soak: faults and their windows (client failures inside are explained; after a recovery +{:?}):", crate::soak_record::SETTLE);
    for kind in FaultKind::ALL {
        let on = if kinds.contains(&kind) { "" } else { " (off)" };
        let cap = kind
            .cap()
            .map(|c| format!(", at most {c:?}"))
            .unwrap_or_default();
        println!("  {:<16}{}{cap}{on}", kind.name(), kind.window_rule());
    }
}

/// This host's time zone offset east of UTC, in seconds (`date +%z`; nginx
/// stamps its log in local time).
pub fn utc_offset_s() -> i64 {
    let out = std::process::Command::new("date").arg("+%z").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let (sign, digits) = match text.split_at_checked(1) {
        Some(("-", d)) => (-1, d),
        Some((_, d)) => (1, d),
        None => return 0,
    };
    let hours: i64 = digits.get(..2).and_then(|h| h.parse().ok()).unwrap_or(0);
    let minutes: i64 = digits.get(2..4).and_then(|m| m.parse().ok()).unwrap_or(0);
    sign * (hours * 3600 + minutes * 60)
}
