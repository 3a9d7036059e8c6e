//! Unit tests of compose `depends_on` parsing and the start order.

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
