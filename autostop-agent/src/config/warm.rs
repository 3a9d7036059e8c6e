//! A service's wake policy beyond traffic (issue #18): `keep_warm` windows,
//! learned `prewarm`, `requires` between services and the
//! `busy_cpu_percent` guard. Validation of the file's fields (each error
//! names the field and the bad token) and the checks across services:
//! unknown requirements and cycles, named by their chain.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::raw::RawService;
use super::validate::Checker;
use super::ServiceConfig;
use crate::schedule::Window;

/// Largest accepted `busy_cpu_percent` (percent of one core: a service may
/// use several cores).
pub const MAX_BUSY_CPU_PERCENT: u32 = 100_000;

/// How an unknown requirement's message starts.
const UNKNOWN: &str = "requires unknown service";

/// How a service is kept or made warm besides its own traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WakePolicy {
    /// Weekly windows during which it is started and never idle-stopped.
    pub keep_warm: Vec<Window>,
    /// Learned pre-warming (off by default).
    pub prewarm: bool,
    /// Services started (in order, each until ready) before this one, and
    /// kept awake while it is starting or ready.
    pub requires: Vec<String>,
    /// Not idle-stopped while its containers used more CPU than this (in
    /// percent of one core) over the last minute.
    pub busy_cpu_percent: Option<u32>,
}

/// Resolves the wake-policy fields of service `p` (`service[N]`).
pub(super) fn resolve(ck: &mut Checker<'_>, p: &str, raw: &RawService) -> Option<WakePolicy> {
    let mut ok = true;
    let mut keep_warm = Vec::new();
    if let Some(list) = &raw.keep_warm {
        for (i, text) in list.get_ref().iter().enumerate() {
            match text.get_ref().parse::<Window>() {
                Ok(w) => keep_warm.push(w),
                Err(e) => {
                    ck.err(text, format!("{p}.keep_warm[{i}]"), e.to_string());
                    ok = false;
                }
            }
        }
    }
    let mut requires: Vec<String> = Vec::new();
    if let Some(list) = &raw.requires {
        for (i, name) in list.get_ref().iter().enumerate() {
            let field = format!("{p}.requires[{i}]");
            let text = name.get_ref();
            if !super::validate::is_service_name(text) {
                let msg = format!(
                    "invalid service name {text:?} (expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,62}})"
                );
                ck.err(name, field, msg);
                ok = false;
            } else if text == raw.name.get_ref() {
                ck.err(name, field, format!("{text:?} cannot require itself"));
                ok = false;
            } else if requires.contains(text) {
                ck.err(name, field, format!("{text:?} is listed twice"));
                ok = false;
            } else {
                requires.push(text.clone());
            }
        }
    }
    let busy = ck.opt(
        &raw.busy_cpu_percent,
        &format!("{p}.busy_cpu_percent"),
        None,
        |n| {
            u32::try_from(*n)
                .ok()
                .filter(|n| (1..=MAX_BUSY_CPU_PERCENT).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    format!("{n} is out of range 1..={MAX_BUSY_CPU_PERCENT} (percent of one core)")
                })
        },
    );
    let policy = WakePolicy {
        keep_warm,
        prewarm: raw.prewarm.unwrap_or(false),
        requires,
        busy_cpu_percent: busy?,
    };
    ok.then_some(policy)
}

/// Reports unknown requirements and cycles among the file's services, on
/// the `requires` field of the service that names them. With Docker labels
/// enabled an unknown name may be a labelled service: a warning then (the
/// agent reports it as a problem while no such service exists).
pub(super) fn check_file(
    ck: &mut Checker<'_>,
    raw: &[Spanned<RawService>],
    services: &[ServiceConfig],
    labels: bool,
) {
    for (service, problem) in requirement_problems(services) {
        let Some((i, svc)) = raw
            .iter()
            .enumerate()
            .find(|(_, s)| s.get_ref().name.get_ref() == &service)
        else {
            continue;
        };
        let Some(list) = &svc.get_ref().requires else {
            continue;
        };
        let field = format!("service[{i}].requires");
        if labels && problem.starts_with(UNKNOWN) {
            ck.warn(
                list,
                field,
                format!("{problem} (not in this file: it must come from Docker labels)"),
            );
        } else {
            ck.err(list, field, problem);
        }
    }
}

/// Every service whose requirements are unknown or form a cycle, with the
/// message (one per service; a cycle is reported once, on its first
/// member in name order).
pub fn requirement_problems(services: &[ServiceConfig]) -> Vec<(String, String)> {
    let graph: BTreeMap<&str, &[String]> = services
        .iter()
        .map(|s| (s.name.as_str(), s.wake.requires.as_slice()))
        .collect();
    let mut out = Vec::new();
    let mut in_cycle: BTreeSet<&str> = BTreeSet::new();
    for (&name, requires) in &graph {
        let unknown: Vec<&str> = requires
            .iter()
            .map(String::as_str)
            .filter(|r| !graph.contains_key(r))
            .collect();
        if !unknown.is_empty() {
            let list = unknown
                .iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push((name.to_owned(), format!("{UNKNOWN} {list}")));
            continue;
        }
        if in_cycle.contains(name) {
            continue;
        }
        if let Some(chain) = cycle_from(name, &graph) {
            in_cycle.extend(chain.iter().copied());
            out.push((
                name.to_owned(),
                format!("requirement cycle: {}", chain.join(" -> ")),
            ));
        }
    }
    out
}

/// The cycle through `start`, as `start -> ... -> start`, if any.
fn cycle_from<'a>(start: &'a str, graph: &BTreeMap<&'a str, &'a [String]>) -> Option<Vec<&'a str>> {
    // Depth-first, keeping the current path; graphs here are tiny.
    fn walk<'a>(
        at: &'a str,
        start: &'a str,
        graph: &BTreeMap<&'a str, &'a [String]>,
        path: &mut Vec<&'a str>,
        seen: &mut BTreeSet<&'a str>,
    ) -> bool {
        for next in graph.get(at).copied().unwrap_or_default() {
            let next = next.as_str();
            if next == start {
                path.push(next);
                return true;
            }
            if seen.insert(next) {
                path.push(next);
                if walk(next, start, graph, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    walk(start, start, graph, &mut path, &mut seen).then_some(path)
}

/// `service`'s requirements, transitively, in start order (deepest first,
/// each once); unknown names and cycles are skipped (they are reported by
/// [`requirement_problems`]).
pub fn start_order(service: &str, services: &[ServiceConfig]) -> Vec<String> {
    fn visit(
        name: &str,
        services: &[ServiceConfig],
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        let Some(config) = services.iter().find(|s| s.name == name) else {
            return;
        };
        for req in &config.wake.requires {
            if seen.insert(req.clone()) {
                visit(req, services, seen, out);
                out.push(req.clone());
            }
        }
    }
    let mut seen = BTreeSet::from([service.to_owned()]);
    let mut out = Vec::new();
    visit(service, services, &mut seen, &mut out);
    out
}

/// The services that require `service` directly.
pub fn needed_by(service: &str, services: &[ServiceConfig]) -> Vec<String> {
    services
        .iter()
        .filter(|s| s.wake.requires.iter().any(|r| r == service))
        .map(|s| s.name.clone())
        .collect()
}

#[cfg(test)]
#[path = "tests_warm.rs"]
mod tests;
