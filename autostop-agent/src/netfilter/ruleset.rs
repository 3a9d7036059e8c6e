//! The JSON documents fed to `nft -j -f -`: the warm-up table, its set and
//! chains, and the set-element batches for warm, cool and refresh.
//!
//! Kept free of I/O so unit tests can check the documents' shape.

use serde_json::{json, Value};

use super::WarmupOptions;

/// Family of our table: `inet` covers IPv4 and IPv6 in one table.
pub(crate) const FAMILY: &str = "inet";
/// Name of the set of TCP ports in warm-up.
pub(crate) const SET: &str = "warming";
/// Hooks our nat chains attach to: `prerouting` for traffic from other hosts
/// and containers, `output` for clients on this host.
const HOOKS: [&str; 2] = ["prerouting", "output"];

/// Wraps commands in the top-level `{"nftables": [...]}` object.
fn document(commands: Vec<Value>) -> Value {
    json!({ "nftables": commands })
}

fn table_object(options: &WarmupOptions) -> Value {
    json!({ "table": { "family": FAMILY, "name": options.table } })
}

/// One rule: local destination, TCP port in `@warming`, then a DNAT of the
/// packet to its own destination address. That identity DNAT keeps address
/// and port, but it is a NAT binding for the connection, and the kernel
/// applies only the first DNAT binding per connection: Docker's DNAT chain
/// (priority -100) is skipped for it.
fn rule(options: &WarmupOptions, chain: &str, nfproto: &str, ip: &str) -> Value {
    json!({ "rule": {
        "family": FAMILY,
        "table": options.table,
        "chain": chain,
        "expr": [
            { "match": { "op": "==", "left": { "meta": { "key": "nfproto" } }, "right": nfproto } },
            { "match": { "op": "==",
                "left": { "fib": { "result": "type", "flags": ["daddr"] } },
                "right": "local" } },
            { "match": { "op": "==",
                "left": { "payload": { "protocol": "tcp", "field": "dport" } },
                "right": format!("@{SET}") } },
            { "dnat": { "family": ip, "addr": { "payload": { "protocol": ip, "field": "daddr" } } } },
        ],
    }})
}

/// The reconcile batch: removes any table of ours left behind (add-then-
/// delete makes the delete succeed whether or not it existed), then creates
/// table, set, chains and rules. nft applies it as one transaction.
pub(crate) fn install(options: &WarmupOptions) -> Value {
    let mut commands = vec![
        json!({ "add": table_object(options) }),
        json!({ "delete": table_object(options) }),
        json!({ "add": table_object(options) }),
        json!({ "add": { "set": {
            "family": FAMILY,
            "table": options.table,
            "name": SET,
            "type": "inet_service",
            "flags": ["timeout"],
        }}}),
    ];
    for hook in HOOKS {
        commands.push(json!({ "add": { "chain": {
            "family": FAMILY,
            "table": options.table,
            "name": hook,
            "type": "nat",
            "hook": hook,
            "prio": options.priority,
            "policy": "accept",
        }}}));
        commands.push(json!({ "add": rule(options, hook, "ipv4", "ip") }));
        commands.push(json!({ "add": rule(options, hook, "ipv6", "ip6") }));
    }
    document(commands)
}

/// Deletes our table (and with it set, chains and rules). Fails if the table
/// does not exist.
pub(crate) fn remove(options: &WarmupOptions) -> Value {
    document(vec![json!({ "delete": table_object(options) })])
}

fn elements(options: &WarmupOptions, ports: &[u16], with_timeout: bool) -> Value {
    let timeout = options.element_timeout.as_secs().max(1);
    let elem: Vec<Value> = ports
        .iter()
        .map(|port| {
            if with_timeout {
                json!({ "elem": { "val": port, "timeout": timeout } })
            } else {
                json!({ "elem": { "val": port } })
            }
        })
        .collect();
    json!({ "element": { "family": FAMILY, "table": options.table, "name": SET, "elem": elem } })
}

/// (Re-)adds `ports` with a fresh timeout. Re-adding an element that exists
/// does not reset its expiry, so the batch is add, delete, add: the first
/// add makes the delete valid whether the element had expired or not, and
/// the last add starts a new timeout. One transaction, so a packet never
/// sees the port missing.
pub(crate) fn add_fresh(options: &WarmupOptions, ports: &[u16]) -> Value {
    document(vec![
        json!({ "add": elements(options, ports, true) }),
        json!({ "delete": elements(options, ports, false) }),
        json!({ "add": elements(options, ports, true) }),
    ])
}

/// Adds `ports`, which are not in the set, with a timeout: one command
/// where [`add_fresh`] needs three, and nft takes about 5 ms for it against
/// 20 for the three (measured on the reference VM), CPU taken from the
/// `docker start` it runs beside.
pub(crate) fn add_new(options: &WarmupOptions, ports: &[u16]) -> Value {
    document(vec![json!({ "add": elements(options, ports, true) })])
}

/// Removes `ports` from the set, whether or not they are still in it.
pub(crate) fn remove_elements(options: &WarmupOptions, ports: &[u16]) -> Value {
    document(vec![
        json!({ "add": elements(options, ports, true) }),
        json!({ "delete": elements(options, ports, false) }),
    ])
}

/// Reads the `elem` array of an `nft -j list set` answer as (port, seconds
/// left before expiry).
pub(crate) fn parse_elements(listing: &Value) -> Vec<(u16, Option<u64>)> {
    let Some(items) = listing["nftables"].as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| item["set"]["elem"].as_array())
        .flatten()
        .filter_map(|elem| {
            // Elements with a timeout are objects; plain ones are numbers.
            let (val, expires) = match elem.get("elem") {
                Some(inner) => (&inner["val"], inner["expires"].as_u64()),
                None => (elem, None),
            };
            let port = u16::try_from(val.as_u64()?).ok()?;
            Some((port, expires))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_replaces_the_table_then_builds_everything_in_one_batch() {
        let doc = install(&WarmupOptions::default());
        let commands = doc["nftables"].as_array().expect("array");
        assert!(commands[0]["add"]["table"].is_object());
        assert!(commands[1]["delete"]["table"].is_object());
        assert!(commands[2]["add"]["table"].is_object());
        assert_eq!(commands[3]["add"]["set"]["flags"][0], "timeout");
        let chains: Vec<_> = commands
            .iter()
            .filter_map(|c| c["add"]["chain"].as_object())
            .collect();
        assert_eq!(chains.len(), 2);
        assert!(chains
            .iter()
            .all(|c| c["prio"] == -110 && c["type"] == "nat"));
        let rules = commands.iter().filter(|c| c["add"]["rule"].is_object());
        assert_eq!(rules.count(), 4);
    }

    #[test]
    fn refresh_is_add_delete_add_with_timeouts_only_on_adds() {
        let options = WarmupOptions::default();
        let doc = add_fresh(&options, &[8080, 9090]);
        let commands = doc["nftables"].as_array().expect("array");
        assert_eq!(commands.len(), 3);
        let first = &commands[0]["add"]["element"]["elem"];
        assert_eq!(first[1]["elem"]["val"], 9090);
        assert_eq!(first[0]["elem"]["timeout"], 5);
        assert!(commands[1]["delete"]["element"]["elem"][0]["elem"]["timeout"].is_null());
    }

    #[test]
    fn a_new_port_is_one_add_with_its_timeout() {
        let options = WarmupOptions::default();
        let doc = add_new(&options, &[8080]);
        let commands = doc["nftables"].as_array().expect("array");
        assert_eq!(commands.len(), 1);
        assert_eq!(
            commands[0]["add"]["element"]["elem"][0]["elem"]["val"],
            8080
        );
        assert_eq!(
            commands[0]["add"]["element"]["elem"][0]["elem"]["timeout"],
            5
        );
    }

    #[test]
    fn parses_listed_elements_with_and_without_expiry() {
        let listing = json!({ "nftables": [
            { "metainfo": {} },
            { "set": { "elem": [ { "elem": { "val": 8080, "timeout": 5, "expires": 4 } }, 443 ] } },
        ]});
        assert_eq!(parse_elements(&listing), vec![(8080, Some(4)), (443, None)]);
    }
}
