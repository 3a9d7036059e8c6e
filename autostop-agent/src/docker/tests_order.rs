//! Unit tests of the docker module: compose `depends_on` parsing, the start
//! order, port/bridge resolution from inspect data and event mapping.

use std::collections::HashMap;

use super::order::{parse_compose_depends, start_order};
use super::{parse_depends_label, DependsCondition, DependsOn, DockerError};

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parses_list_and_map_forms() {
    let yaml = r#"
version: "3.9"
services:
  web:
    image: x
    depends_on: [db, cache]
  worker:
    image: x
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
      cache: {}
  db:
    image: x
"#;
    let deps = parse_compose_depends(yaml).unwrap();
    assert_eq!(deps["web"].len(), 2);
    assert_eq!(deps["web"][0].condition, DependsCondition::Started);
    let w = &deps["worker"];
    assert_eq!(w[0].service, "db");
    assert_eq!(w[0].condition, DependsCondition::Healthy);
    assert_eq!(w[1].condition, DependsCondition::CompletedSuccessfully);
    assert_eq!(w[2].condition, DependsCondition::Started);
    assert!(deps["db"].is_empty());
}

#[test]
fn rejects_unknown_condition() {
    let yaml = "services:\n  a:\n    depends_on:\n      b:\n        condition: nope\n";
    let e = parse_compose_depends(yaml).unwrap_err();
    assert!(e.contains("services.a.depends_on.b"), "{e}");
}

#[test]
fn parses_v2_label() {
    let deps =
        parse_depends_label("db:service_healthy:false,init:service_completed_successfully:true,x");
    assert_eq!(
        deps,
        vec![
            DependsOn {
                service: "db".into(),
                condition: DependsCondition::Healthy
            },
            DependsOn {
                service: "init".into(),
                condition: DependsCondition::CompletedSuccessfully
            },
            DependsOn {
                service: "x".into(),
                condition: DependsCondition::Started
            },
        ]
    );
}

#[test]
fn orders_dependencies_first_and_is_stable() {
    let deps = parse_compose_depends(
        "services:\n  web: {depends_on: [api]}\n  api: {depends_on: [db]}\n  db: {}\n  other: {}\n",
    )
    .unwrap();
    let order = start_order(&names(&["web", "other", "api", "db"]), &deps).unwrap();
    assert_eq!(order, names(&["other", "db", "api", "web"]));
}

#[test]
fn ignores_dependencies_outside_the_set() {
    let mut deps = HashMap::new();
    deps.insert(
        "a".to_string(),
        vec![DependsOn {
            service: "gone".into(),
            condition: DependsCondition::Started,
        }],
    );
    assert_eq!(start_order(&names(&["a"]), &deps).unwrap(), names(&["a"]));
}

#[test]
fn cycle_is_named() {
    let deps = parse_compose_depends(
        "services:\n  a: {depends_on: [b]}\n  b: {depends_on: [c]}\n  c: {depends_on: [a]}\n  d: {}\n",
    )
    .unwrap();
    match start_order(&names(&["a", "b", "c", "d"]), &deps) {
        Err(DockerError::Cycle(c)) => assert_eq!(c, "a -> b -> c -> a"),
        other => panic!("expected a cycle, got {other:?}"),
    }
}

/// A compose member `name` of compose service `service`.
fn member(name: &str, service: &str) -> super::resolve::Member {
    let inspect = bollard::models::ContainerInspectResponse {
        id: Some(format!("id-{name}")),
        name: Some(format!("/{name}")),
        config: Some(bollard::models::ContainerConfig {
            labels: Some(HashMap::from([(
                "com.docker.compose.service".to_owned(),
                service.to_owned(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    super::resolve::member(inspect, name)
}

#[test]
fn members_start_dependencies_first() {
    let mut members = vec![member("p_web_1", "web"), member("p_db_1", "db")];
    let mut deps = parse_compose_depends("services:\n  web: {depends_on: [db]}\n").unwrap();
    assert_eq!(super::resolve::order_members(&mut members, &mut deps), None);
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["p_db_1", "p_web_1"]);
    assert_eq!(deps["web"].len(), 1);
}

#[test]
fn a_cycle_starts_without_order_and_names_the_containers() {
    let mut members = vec![
        member("p_b_1", "b"),
        member("p_a_1", "a"),
        member("p_c_1", "c"),
    ];
    let mut deps = parse_compose_depends(
        "services:\n  a: {depends_on: {b: {condition: service_healthy}}}\n  b: {depends_on: [a]}\n  c: {}\n",
    )
    .unwrap();
    let note = super::resolve::order_members(&mut members, &mut deps).expect("a cycle note");
    assert!(note.contains("a -> b -> a"), "{note}");
    assert!(
        note.contains("p_a_1") && note.contains("p_b_1") && !note.contains("p_c_1"),
        "{note}"
    );
    assert!(deps.is_empty(), "no waits on a dependency in a cycle");
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["p_a_1", "p_b_1", "p_c_1"]);
}

mod endpoints {
    //! Port and bridge resolution from inspect data, and event mapping.

    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use bollard::models::{
        ContainerInspectResponse, HostConfig, NetworkInspect, NetworkSettings, PortBinding,
    };

    use crate::config::{Mode, PortSpec, Protocol, ServiceConfig, Target};
    use crate::docker::endpoints::container_port;
    use crate::docker::{bridge_name, services_of};

    fn binding(host: &str) -> Option<Vec<PortBinding>> {
        Some(vec![PortBinding {
            host_ip: Some("0.0.0.0".into()),
            host_port: Some(host.into()),
        }])
    }

    #[test]
    fn finds_container_port_live_or_configured() {
        let tcp = |port| PortSpec {
            port,
            protocol: Protocol::Tcp,
        };
        let stopped = ContainerInspectResponse {
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([
                    ("80/tcp".to_string(), binding("8080")),
                    ("53/udp".to_string(), binding("8053")),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(container_port(&stopped, tcp(8080)), Some(80));
        assert_eq!(container_port(&stopped, tcp(8053)), None);
        let udp = PortSpec {
            port: 8053,
            protocol: Protocol::Udp,
        };
        assert_eq!(container_port(&stopped, udp), Some(53));
        let running = ContainerInspectResponse {
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([("3000/tcp".to_string(), binding("9000"))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(container_port(&running, tcp(9000)), Some(3000));
    }

    #[test]
    fn names_bridges() {
        let net = |name: &str, id: &str, opt: Option<&str>| NetworkInspect {
            name: Some(name.into()),
            id: Some(id.into()),
            driver: Some("bridge".into()),
            options: opt.map(|b| {
                HashMap::from([("com.docker.network.bridge.name".to_string(), b.to_string())])
            }),
            ..Default::default()
        };
        let id = "0123456789abcdef0123";
        assert_eq!(
            bridge_name(&net("bridge", id, Some("docker0"))).as_deref(),
            Some("docker0")
        );
        assert_eq!(
            bridge_name(&net("app_default", id, None)).as_deref(),
            Some("br-0123456789ab")
        );
        assert_eq!(
            bridge_name(&net("x", id, Some("mybr"))).as_deref(),
            Some("mybr")
        );
        let host = NetworkInspect {
            driver: Some("host".into()),
            ..net("host", id, None)
        };
        assert_eq!(bridge_name(&host), None);
    }

    #[test]
    fn maps_event_attributes_to_services() {
        let svc = |name: &str, target| ServiceConfig {
            name: name.into(),
            ports: vec![PortSpec {
                port: 1,
                protocol: Protocol::Tcp,
            }],
            idle_timeout: Duration::from_secs(1),
            mode: Mode::Blocking,
            theme: None,
            target,
            start_timeout: Duration::from_secs(1),
            hold_while_connected: false,
            max_held_connections: 1,
            wake: Default::default(),
            sleep: Default::default(),
        };
        let services = [
            svc("named", Target::Containers(vec!["web1".into()])),
            svc("proj", Target::ComposeDir(PathBuf::from("/srv/app"))),
        ];
        let attrs = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            services_of(
                &services,
                &HashMap::new(),
                "abc",
                &attrs(&[("name", "web1")])
            ),
            vec!["named"]
        );
        let wd = "com.docker.compose.project.working_dir";
        let project = "com.docker.compose.project";
        let service = "com.docker.compose.service";
        let none = HashMap::new();
        let compose = attrs(&[
            ("name", "x"),
            (wd, "/srv/app"),
            (project, "app"),
            (service, "web"),
        ]);
        assert_eq!(services_of(&services, &none, "abc", &compose), vec!["proj"]);
        // Only the working-dir label: not a compose container, not the
        // project's.
        let bare = attrs(&[("name", "x"), (wd, "/srv/app")]);
        assert!(services_of(&services, &none, "abc", &bare).is_empty());
        let mut oneoff = compose.clone();
        oneoff.insert("com.docker.compose.oneoff".into(), "True".into());
        assert!(services_of(&services, &none, "abc", &oneoff).is_empty());
        assert!(services_of(&services, &none, "abc", &attrs(&[("name", "other")])).is_empty());
        // Once resolved, another project in the same directory is not it.
        let known = HashMap::from([(
            "proj".to_owned(),
            crate::docker::project::ProjectId::of(&compose).expect("compose labels"),
        )]);
        assert_eq!(
            services_of(&services, &known, "abc", &compose),
            vec!["proj"]
        );
        let mut other = compose.clone();
        other.insert(project.into(), "test".into());
        assert!(services_of(&services, &known, "abc", &other).is_empty());
        assert_eq!(
            services_of(&services, &none, "abc", &other),
            vec!["proj"],
            "before the first resolution any compose project there counts"
        );
    }
}

mod properties {
    //! Property tests of what the agent reads from compose files and the
    //! compose v2 dependency label (both written by whoever can create a
    //! container or name a file in a label).

    use proptest::prelude::*;

    use super::super::order::{parse_compose_depends, parse_depends_label};

    /// A compose-like document: services with `depends_on` in list or map
    /// form, conditions known and unknown, and odd shapes.
    fn compose_yaml() -> impl Strategy<Value = String> {
        let name = "[a-z][a-z0-9_-]{0,6}";
        let condition = prop_oneof![
            Just("service_started".to_owned()),
            Just("service_healthy".to_owned()),
            Just("service_completed_successfully".to_owned()),
            "[a-z_]{0,12}",
        ];
        let depends = prop_oneof![
            prop::collection::vec(name, 0..4).prop_map(|d| format!("[{}]", d.join(", "))),
            prop::collection::vec((name, condition), 0..4).prop_map(|d| {
                let items: Vec<String> = d
                    .iter()
                    .map(|(n, c)| format!("{n}: {{condition: {c}}}"))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }),
            Just("null".to_owned()),
            Just("42".to_owned()),
            Just("\"db\"".to_owned()),
        ];
        prop::collection::vec((name, depends), 0..5).prop_map(|services| {
            let mut text = "services:\n".to_owned();
            for (name, depends) in services {
                text.push_str(&format!(
                    "  {name}:\n    image: x\n    depends_on: {depends}\n"
                ));
            }
            text
        })
    }

    proptest! {
        /// Any bytes a compose file may hold: parsed or an error, never a
        /// panic; a YAML error names its line.
        #[test]
        fn prop_compose_files_from_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = parse_compose_depends(&text) {
                prop_assert!(!e.is_empty());
            }
        }

        /// Generated compose documents: each error names the field (path
        /// under `services`) or the line, and a parse names only services
        /// of the document.
        #[test]
        fn prop_generated_compose_files_parse_or_name_the_field(text in compose_yaml()) {
            match parse_compose_depends(&text) {
                Ok(deps) => {
                    for service in deps.keys() {
                        let key = format!("  {service}:");
                        prop_assert!(text.contains(&key));
                    }
                }
                Err(e) => prop_assert!(
                    e.starts_with("services.") || e.contains("line"),
                    "{e}"
                ),
            }
        }

        /// Any label value: entries with their names, never a panic.
        #[test]
        fn prop_depends_labels_never_panic(label in any::<String>()) {
            for dep in parse_depends_label(&label) {
                prop_assert!(label.contains(dep.service.as_str()));
            }
        }
    }
}
