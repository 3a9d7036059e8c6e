//! Unit tests of the checks on labelled services.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::{
    config::{labels::services_from_labels, Protocol, ThemeCatalog},
    published::HostPort,
};

fn labelled(name: &str, port: &str, published: &[(&str, u16)]) -> LabelledContainer {
    LabelledContainer {
        name: name.to_owned(),
        labels: BTreeMap::from([
            ("autostop.enable".to_owned(), "true".to_owned()),
            ("autostop.port".to_owned(), port.to_owned()),
        ]),
        published: published
            .iter()
            .map(|(ip, port)| {
                let bound = HostPort::from_docker(Some(ip), *port).expect("address");
                (Protocol::Tcp, bound)
            })
            .collect::<BTreeSet<_>>(),
        addresses: vec!["172.17.0.9".parse().expect("ip")],
    }
}

fn file(text: &str) -> Config {
    Config::parse(text, "file", &ThemeCatalog::builtin()).expect("valid file")
}

fn vetted(containers: &[LabelledContainer], file: &Config) -> (Vec<String>, Vec<String>) {
    let (services, mut refusals) = services_from_labels(
        containers,
        &ThemeCatalog::builtin(),
        file.agent.status_listen,
    );
    let (accepted, refused) = vet(services, containers, HostFacts { file });
    refusals.extend(refused);
    (accepted.into_iter().map(|s| s.name).collect(), refusals)
}

#[test]
fn a_published_port_is_accepted() {
    let c = [labelled("web", "8080", &[("", 8080)])];
    let (accepted, refusals) = vetted(&c, &file(""));
    assert_eq!(accepted, ["web"]);
    assert!(refusals.is_empty(), "{refusals:?}");
}

#[test]
fn a_port_the_containers_do_not_publish_is_refused() {
    let c = [
        labelled("sneaky", "8080", &[]),
        labelled("other-port", "8081", &[("0.0.0.0", 9999)]),
    ];
    let (accepted, refusals) = vetted(&c, &file(""));
    assert!(accepted.is_empty(), "{accepted:?}");
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(
        refusals.iter().all(|r| r.contains("not published")),
        "{refusals:?}"
    );
}

#[test]
fn the_status_port_is_refused() {
    let status = file("").agent.status_listen.port();
    let c = [labelled("api-thief", &status.to_string(), &[("", status)])];
    let (accepted, refusals) = vetted(&c, &file(""));
    assert!(accepted.is_empty());
    assert!(
        refusals[0].contains("already used by agent.status_listen"),
        "{refusals:?}"
    );
    // Elsewhere, that port is an ordinary one.
    let elsewhere = file("[agent]\nstatus_listen = \"127.0.0.1:9999\"\n");
    assert_eq!(vetted(&c, &elsewhere).0, ["api-thief"]);
}

#[test]
fn containers_the_file_manages_are_refused() {
    let file = file("[[service]]\nname = \"shop\"\nport = 9000\ncontainers = [\"web\"]\n");
    let c = [labelled("web", "8080", &[("", 8080)])];
    let (accepted, refusals) = vetted(&c, &file);
    assert!(accepted.is_empty());
    assert!(refusals[0].contains("\"shop\""), "{refusals:?}");
}
