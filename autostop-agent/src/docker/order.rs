//! Start order of a compose project: `depends_on` from the compose files
//! (docker-compose v1 writes no dependency label) or from the compose v2
//! label `com.docker.compose.depends_on`, and a stable topological sort.

// Reads untrusted bytes (labels, /proc, netlink answers): no byte-offset
// slicing of strings, no unchecked indexing, no unchecked arithmetic.
#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde_yaml::Value;

use super::DockerError;

/// What a dependent waits for before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DependsCondition {
    /// The dependency's containers were started (the default).
    Started,
    /// The dependency's healthcheck reports healthy.
    Healthy,
    /// The dependency ran to completion with exit code 0 (one-shot jobs).
    CompletedSuccessfully,
}

impl DependsCondition {
    /// Parses compose's spelling (`service_started`, ...); unknown → None.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service_started" => Some(Self::Started),
            "service_healthy" => Some(Self::Healthy),
            "service_completed_successfully" => Some(Self::CompletedSuccessfully),
            _ => None,
        }
    }
}

/// One edge of the dependency graph: "this service depends on `service`".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DependsOn {
    /// Compose service name of the dependency.
    pub service: String,
    /// What to wait for.
    pub condition: DependsCondition,
}

/// Parses compose v2's label `svc:condition:restart,...` (restart flag and
/// unknown conditions are tolerated: unknown means `service_started`).
pub fn parse_depends_label(label: &str) -> Vec<DependsOn> {
    label
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let mut parts = item.split(':');
            let service = parts.next().unwrap_or_default().to_string();
            let condition = parts
                .next()
                .and_then(DependsCondition::parse)
                .unwrap_or(DependsCondition::Started);
            DependsOn { service, condition }
        })
        .collect()
}

/// Dependencies per compose service parsed from one compose document
/// (`services.<name>.depends_on`, list or map form).
pub fn parse_compose_depends(text: &str) -> Result<HashMap<String, Vec<DependsOn>>, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    let Some(services) = doc.get("services").and_then(Value::as_mapping) else {
        return Ok(out);
    };
    for (name, body) in services {
        let Some(name) = name.as_str() else { continue };
        let deps = match body.get("depends_on") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(|s| DependsOn {
                    service: s.to_string(),
                    condition: DependsCondition::Started,
                })
                .collect(),
            Some(Value::Mapping(map)) => {
                let mut deps = Vec::new();
                for (dep, spec) in map {
                    let Some(dep) = dep.as_str() else { continue };
                    let cond = spec.get("condition").and_then(Value::as_str);
                    let condition = match cond {
                        None => DependsCondition::Started,
                        Some(c) => DependsCondition::parse(c).ok_or_else(|| {
                            format!("services.{name}.depends_on.{dep}: unknown condition {c:?}")
                        })?,
                    };
                    deps.push(DependsOn {
                        service: dep.to_string(),
                        condition,
                    });
                }
                deps
            }
            Some(_) => {
                return Err(format!(
                    "services.{name}.depends_on: expected a list or map"
                ))
            }
        };
        out.insert(name.to_string(), deps);
    }
    Ok(out)
}

/// Reads and merges the `depends_on` of every compose file (later files add
/// to earlier ones, as compose's override files do). Blocking: each file is
/// read with [`super::compose_file::read`].
pub fn load_compose_depends(
    paths: &[PathBuf],
) -> Result<HashMap<String, Vec<DependsOn>>, DockerError> {
    let mut merged: HashMap<String, Vec<DependsOn>> = HashMap::new();
    for path in paths {
        let err = |message: String| DockerError::Compose {
            path: path.display().to_string(),
            message,
        };
        let text = super::compose_file::read(path).map_err(|e| err(e.to_string()))?;
        for (svc, deps) in parse_compose_depends(&text).map_err(err)? {
            let entry = merged.entry(svc).or_default();
            for dep in deps {
                entry.retain(|d| d.service != dep.service);
                entry.push(dep);
            }
        }
    }
    Ok(merged)
}

/// Topological order of `nodes` (dependencies first), stable with respect
/// to the given order. Dependencies outside `nodes` are ignored. A cycle is
/// an error naming it (`a -> b -> a`).
pub fn start_order(
    nodes: &[String],
    deps: &HashMap<String, Vec<DependsOn>>,
) -> Result<Vec<String>, DockerError> {
    let present: HashSet<&str> = nodes.iter().map(String::as_str).collect();
    let edges = |n: &str| -> Vec<&str> {
        deps.get(n)
            .into_iter()
            .flatten()
            .map(|d| d.service.as_str())
            .filter(|d| present.contains(d) && *d != n)
            .collect()
    };
    let mut done: Vec<String> = Vec::with_capacity(nodes.len());
    let mut placed: HashSet<&str> = HashSet::new();
    while done.len() < nodes.len() {
        let next = nodes
            .iter()
            .find(|n| !placed.contains(n.as_str()) && edges(n).iter().all(|d| placed.contains(d)));
        match next {
            Some(n) => {
                placed.insert(n.as_str());
                done.push(n.clone());
            }
            None => {
                let left: BTreeMap<&str, Vec<&str>> = nodes
                    .iter()
                    .filter(|n| !placed.contains(n.as_str()))
                    .map(|n| (n.as_str(), edges(n)))
                    .collect();
                return Err(DockerError::Cycle(describe_cycle(&left)));
            }
        }
    }
    Ok(done)
}

/// Walks the unplaced graph (every node has an unplaced dependency) until a
/// node repeats, and renders that cycle.
fn describe_cycle(left: &BTreeMap<&str, Vec<&str>>) -> String {
    let Some(start) = left.keys().next() else {
        return String::new();
    };
    let mut path: Vec<&str> = vec![start];
    let mut cur = *start;
    loop {
        let next = left
            .get(cur)
            .and_then(|ds| ds.iter().find(|d| left.contains_key(*d)).copied());
        let Some(next) = next else {
            return path.join(" -> ");
        };
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<&str> = path.get(pos..).unwrap_or_default().to_vec();
            cycle.push(next);
            return cycle.join(" -> ");
        }
        path.push(next);
        cur = next;
    }
}
