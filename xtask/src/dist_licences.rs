//! The crates linked into the agent, with their licences, for the
//! package's copyright file: the agent package's normal dependencies (no
//! build or dev dependencies, no procedural macros), transitively, for the
//! host target, from `cargo metadata`. (The clap_mangen and clap_complete
//! of the `autostop-docs` helper are listed too: cargo metadata does not
//! tell dependencies apart per binary.) A licence that does not fit the project's MIT OR
//! Apache-2.0 fails the build instead of shipping silently.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _};

use crate::run;

/// Licences (SPDX identifiers) that may be linked into an MIT OR
/// Apache-2.0 binary; an expression passes when every `AND` part offers
/// one of them.
const PERMISSIVE: &[&str] = &[
    "MIT",
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "ISC",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "0BSD",
    "Zlib",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "CC0-1.0",
    "BSL-1.0",
    "CDLA-Permissive-2.0",
];

/// One line per crate, `name version: licence`, each indented by one
/// space (a DEP-5 continuation line).
pub fn bundled_crates(root: &std::path::Path) -> anyhow::Result<String> {
    let out = run::cargo()
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let crates = linked_crates(&metadata)?;
    let mut lines = Vec::new();
    for ((name, version), licence) in &crates {
        if !fits(licence) {
            bail!(
                "crate {name} {version} is licensed {licence:?}, which may not fit the agent's \
                 MIT OR Apache-2.0: check it before shipping"
            );
        }
        lines.push(format!(" {name} {version}: {licence}"));
    }
    Ok(lines.join("\n"))
}

/// (name, version) → licence of every crate the agent package links
/// (workspace members left out).
fn linked_crates(
    metadata: &serde_json::Value,
) -> anyhow::Result<BTreeMap<(String, String), String>> {
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata: workspace_members")?
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let packages: BTreeMap<&str, &serde_json::Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: resolve.nodes")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let agent = packages
        .iter()
        .find(|(_, p)| p["name"] == "autostop-agent")
        .map(|(id, _)| *id)
        .context("cargo metadata: no autostop-agent package")?;

    let mut seen = BTreeSet::new();
    let mut queue = vec![agent];
    while let Some(id) = queue.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = nodes.get(id) else { continue };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if let (true, Some(pkg)) = (normal, dep["pkg"].as_str()) {
                queue.push(pkg);
            }
        }
    }
    let mut crates = BTreeMap::new();
    for id in seen.into_iter().filter(|id| !members.contains(id)) {
        let package = packages
            .get(id)
            .with_context(|| format!("cargo metadata: no package {id}"))?;
        // A procedural macro (its library target is of kind `proc-macro`)
        // runs in the compiler, not in the binary.
        let library = package["targets"].as_array().is_some_and(|targets| {
            targets.iter().any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "lib" || k == "rlib"))
            })
        });
        if !library {
            continue;
        }
        let name = package["name"].as_str().unwrap_or_default().to_owned();
        let version = package["version"].as_str().unwrap_or_default().to_owned();
        let licence = package["license"]
            .as_str()
            .with_context(|| format!("crate {name} {version} declares no licence"))?
            .to_owned();
        crates.insert((name, version), licence);
    }
    Ok(crates)
}

/// Whether an SPDX expression can be met with permissive licences only:
/// each `AND` part (outer parentheses dropped) needs one `OR` alternative
/// from [`PERMISSIVE`]. `/` is the old spelling of `OR`.
fn fits(expression: &str) -> bool {
    expression.split(" AND ").all(|part| {
        part.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(" OR ")
            .flat_map(|alternative| alternative.split('/'))
            .any(|alternative| PERMISSIVE.contains(&alternative.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::fits;

    #[test]
    fn permissive_expressions_fit_and_copyleft_does_not() {
        assert!(fits("MIT OR Apache-2.0"));
        assert!(fits("Apache-2.0 AND ISC"));
        assert!(fits("(MIT OR Apache-2.0) AND Unicode-3.0"));
        assert!(fits("MIT/Apache-2.0"));
        assert!(fits("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT"));
        assert!(!fits("GPL-2.0"));
        assert!(!fits("MIT AND GPL-3.0-only"));
        assert!(fits("MIT OR GPL-2.0"));
        assert!(!fits("MPL-2.0"));
    }
}
