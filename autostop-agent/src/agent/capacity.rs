//! The service limit: at most `[agent] max_services` services are managed
//! (at most [`MAX_SERVICES`], the kernel's index space: the activity
//! counters and the steering map's values are indexed by service). The
//! config file alone cannot exceed it (`autostop check` and the loader
//! refuse such a file, naming the field); labelled services beyond it are
//! refused, each with a problem entry in `GET /api/problems`, rather than
//! left out silently. The file's services come first, then labelled ones
//! the agent already manages (so a new one never displaces an old one),
//! then new ones in the order Docker listed them.

use autostop_common::MAX_SERVICES;

use crate::config::Config;

/// Why a service is not managed, for the problem list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    /// `max_services` services are managed already.
    #[error("service {name:?} is not managed: agent.max_services ({max}) services are managed already (the kernel allows up to {MAX_SERVICES}); raise it or remove services")]
    Full {
        /// The service left out.
        name: String,
        /// The limit in force.
        max: u32,
    },
    /// Every kernel index is taken (or still being cleared).
    #[error("service {name:?} is not managed: no kernel service index is free ({MAX_SERVICES} in all); it is tried again at the next change")]
    NoIndex {
        /// The service left out.
        name: String,
    },
}

/// `wanted` (the file's services followed by the labelled ones, as
/// [`super::labels::effective`] makes it) cut to `agent.max_services`
/// services in the module's order, and one problem per service left out.
/// `file_services` is how many of `wanted`'s come from the file; `managed`
/// is the configuration in force.
pub(super) fn within(
    mut wanted: Config,
    file_services: usize,
    managed: &Config,
) -> (Config, Vec<CapacityError>) {
    let max_services = wanted.agent.max_services;
    let max = usize::try_from(max_services).unwrap_or(usize::MAX);
    if wanted.services.len() <= max {
        return (wanted, Vec::new());
    }
    let mut ranked: Vec<(u8, usize)> = wanted
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let rank = if i < file_services {
                0
            } else if managed.service(&s.name).is_some() {
                1
            } else {
                2
            };
            (rank, i)
        })
        .collect();
    ranked.sort_unstable();
    let mut keep = vec![false; wanted.services.len()];
    for (_, i) in ranked.into_iter().take(max) {
        keep[i] = true;
    }
    let mut refused = Vec::new();
    let mut kept = keep.into_iter();
    wanted.services.retain(|s| {
        let kept = kept.next().unwrap_or(false);
        if !kept {
            refused.push(CapacityError::Full {
                name: s.name.clone(),
                max: max_services,
            });
        }
        kept
    });
    (wanted, refused)
}

/// The problem of each service the table could not add (no index free).
pub(super) fn unindexed(names: &[String]) -> Vec<CapacityError> {
    names
        .iter()
        .map(|name| CapacityError::NoIndex { name: name.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThemeCatalog;

    fn config(max: u32, names: &[&str]) -> Config {
        let mut text = String::new();
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!(
                "[[service]]\nname = \"{name}\"\nport = {}\ncontainers = [\"{name}\"]\n",
                9000 + i
            ));
        }
        let mut config =
            Config::parse(&text, "test.toml", &ThemeCatalog::builtin()).expect("valid config");
        // Set after parsing: a file with more services than this is refused.
        config.agent.max_services = max;
        config
    }

    fn names(c: &Config) -> Vec<&str> {
        c.services.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn under_the_limit_everything_is_kept() {
        let wanted = config(3, &["a", "b", "c"]);
        let (kept, refused) = within(wanted.clone(), 1, &config(3, &[]));
        assert_eq!(kept, wanted);
        assert!(refused.is_empty());
    }

    #[test]
    fn the_file_then_the_managed_labelled_then_new_ones() {
        // "a" from the file; "b", "c", "d" labelled, "d" already managed.
        let wanted = config(2, &["a", "b", "c", "d"]);
        let managed = config(2, &["a", "d"]);
        let (kept, refused) = within(wanted, 1, &managed);
        assert_eq!(names(&kept), ["a", "d"]);
        assert_eq!(
            refused,
            [
                CapacityError::Full {
                    name: "b".into(),
                    max: 2
                },
                CapacityError::Full {
                    name: "c".into(),
                    max: 2
                }
            ]
        );
        let message = refused[0].to_string();
        assert!(message.contains("agent.max_services (2)"), "{message}");
        assert!(message.contains("\"b\""), "{message}");
    }

    #[test]
    fn new_labelled_services_keep_dockers_order() {
        let wanted = config(3, &["a", "z", "y", "x"]);
        let (kept, refused) = within(wanted, 1, &config(3, &[]));
        assert_eq!(names(&kept), ["a", "z", "y"]);
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn a_service_without_an_index_is_a_problem_too() {
        let problems = unindexed(&["web".to_owned()]);
        let message = problems[0].to_string();
        assert!(
            message.contains("\"web\"") && message.contains("index"),
            "{message}"
        );
    }
}
