//! Where traffic into a service really goes: for each published port, the
//! container address and container port behind it, and the Linux bridges of
//! the networks involved (what the datapath attaches to).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use bollard::models::{ContainerInspectResponse, NetworkInspect};

use super::resolve::Member;
use crate::{
    config::{PortSpec, Protocol},
    published::HostPort,
};

/// Docker's option naming a bridge network's Linux interface.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// One published port of a service, resolved to its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEndpoint {
    /// The configured host port this endpoint serves.
    pub published: PortSpec,
    /// Container name (for logs).
    pub container: String,
    /// Container address on its first network with an address; `None` while
    /// the container is stopped (Docker releases the address).
    pub ip: Option<IpAddr>,
    /// The container's global IPv6 address on that same network, when the
    /// network has IPv6 enabled: traffic to it (routed to the container, or
    /// relayed by docker-proxy from `[::]`) reaches the container over IPv6.
    pub ipv6: Option<IpAddr>,
    /// Port inside the container.
    pub container_port: u16,
    /// Transport of the port.
    pub protocol: Protocol,
    /// Bridge interface of the network `ip` belongs to, if known.
    pub bridge: Option<String>,
}

/// Everything the datapath needs for one service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceEndpoints {
    /// One entry per configured port that a container publishes.
    pub endpoints: Vec<ContainerEndpoint>,
    /// Bridge interfaces of all bridge networks the containers are on.
    pub bridges: Vec<String>,
    /// Where Docker publishes the service's TCP ports on the host, from
    /// the containers' `HostConfig.PortBindings` (set on stopped
    /// containers too): what steering may match, and nothing more.
    pub bindings: Vec<HostPort>,
    /// Configured ports no container publishes: never steered.
    pub unpublished: Vec<PortSpec>,
    /// What else keeps the service from being what it is configured to
    /// be (containers left out of its compose project, a `depends_on`
    /// cycle), for its problem entries.
    pub notes: Vec<String>,
}

/// Linux interface of a bridge network: the `com.docker.network.bridge.name`
/// option (set to `docker0` on the default bridge), else `br-` and the first
/// 12 hex digits of the network id. `None` for non-bridge drivers.
pub fn bridge_name(net: &NetworkInspect) -> Option<String> {
    if net.driver.as_deref() != Some("bridge") {
        return None;
    }
    if let Some(name) = net.options.as_ref().and_then(|o| o.get(BRIDGE_NAME_OPTION)) {
        return Some(name.clone());
    }
    if net.name.as_deref() == Some("bridge") {
        return Some("docker0".to_string());
    }
    let id = net.id.as_deref()?;
    Some(format!("br-{}", id.get(..12).unwrap_or(id)))
}

/// Container port (and protocol) behind host port `spec`: from the live
/// `NetworkSettings.Ports` when running, else from `HostConfig.PortBindings`.
pub fn container_port(inspect: &ContainerInspectResponse, spec: PortSpec) -> Option<u16> {
    let live = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref());
    let configured = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.as_ref());
    let host = spec.port.to_string();
    for map in [live, configured].into_iter().flatten() {
        for (key, bindings) in map {
            let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            if proto != spec.protocol.to_string() {
                continue;
            }
            let hit = bindings
                .iter()
                .flatten()
                .any(|b| b.host_port.as_deref() == Some(host.as_str()));
            if hit {
                if let Ok(p) = port.parse() {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Every host binding Docker publishes for this container, by protocol:
/// the configured `HostConfig.PortBindings` (present whether or not the
/// container runs) and, while it runs, the live `NetworkSettings.Ports`.
pub fn all_bindings(inspect: &ContainerInspectResponse) -> BTreeSet<(Protocol, HostPort)> {
    let live = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref());
    let configured = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.as_ref());
    let mut out = BTreeSet::new();
    for map in [configured, live].into_iter().flatten() {
        for (key, bindings) in map {
            let protocol = match key.split_once('/').map_or("tcp", |(_, proto)| proto) {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            for binding in bindings.iter().flatten() {
                let Some(port) = binding
                    .host_port
                    .as_deref()
                    .and_then(|p| p.trim().parse::<u16>().ok())
                else {
                    continue;
                };
                if let Some(bound) = HostPort::from_docker(binding.host_ip.as_deref(), port) {
                    out.insert((protocol, bound));
                }
            }
        }
    }
    out
}

/// Where Docker publishes host port `spec` of this container (see
/// [`all_bindings`]); empty when it does not publish it.
pub fn host_bindings(inspect: &ContainerInspectResponse, spec: PortSpec) -> BTreeSet<HostPort> {
    all_bindings(inspect)
        .into_iter()
        .filter(|(protocol, bound)| *protocol == spec.protocol && bound.port == spec.port)
        .map(|(_, bound)| bound)
        .collect()
}

/// The container's addresses on all its networks (IPv4 and global IPv6),
/// while it runs.
pub fn addresses(inspect: &ContainerInspectResponse) -> Vec<IpAddr> {
    let Some(nets) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
    else {
        return Vec::new();
    };
    nets.values()
        .flat_map(|ep| [ep.ip_address.as_deref(), ep.global_ipv6_address.as_deref()])
        .flatten()
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// First (by network name) network with an address: (network id, ip, mac).
pub fn primary_address(inspect: &ContainerInspectResponse) -> Option<(String, IpAddr, String)> {
    let nets = inspect.network_settings.as_ref()?.networks.as_ref()?;
    let mut names: Vec<&String> = nets.keys().collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let ep = &nets[n];
        let ip: IpAddr = ep.ip_address.as_deref()?.parse().ok()?;
        let id = ep.network_id.clone().unwrap_or_else(|| n.clone());
        Some((id, ip, ep.mac_address.clone().unwrap_or_default()))
    })
}

/// Global IPv6 address of the container on network `network` (id or name),
/// if that network has IPv6 enabled and the container is running.
pub fn global_ipv6(inspect: &ContainerInspectResponse, network: &str) -> Option<IpAddr> {
    let nets = inspect.network_settings.as_ref()?.networks.as_ref()?;
    nets.iter()
        .find(|(name, ep)| *name == network || ep.network_id.as_deref() == Some(network))
        .and_then(|(_, ep)| ep.global_ipv6_address.as_deref()?.parse().ok())
}

/// Network ids (or names when the id is missing) the container is on.
pub fn network_ids(inspect: &ContainerInspectResponse) -> Vec<String> {
    let Some(nets) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
    else {
        return Vec::new();
    };
    nets.iter()
        .map(|(name, ep)| {
            ep.network_id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| name.clone())
        })
        .collect()
}

/// Builds the endpoints of a service from its members and the bridge names
/// of its networks (`bridges`: network id or name → interface).
pub fn build(
    ports: &[PortSpec],
    members: &[Member],
    bridges: &HashMap<String, String>,
) -> ServiceEndpoints {
    let mut out = ServiceEndpoints::default();
    for spec in ports {
        let bound: BTreeSet<HostPort> = members
            .iter()
            .flat_map(|m| host_bindings(&m.inspect, *spec))
            .collect();
        if spec.protocol == Protocol::Tcp {
            out.bindings.extend(&bound);
        }
        let found = members
            .iter()
            .find_map(|m| container_port(&m.inspect, *spec).map(|p| (m, p)));
        let Some((m, cport)) = found.filter(|_| !bound.is_empty()) else {
            out.unpublished.push(*spec);
            continue;
        };
        let addr = primary_address(&m.inspect);
        out.endpoints.push(ContainerEndpoint {
            published: *spec,
            container: m.name.clone(),
            ip: addr.as_ref().map(|a| a.1),
            ipv6: addr.as_ref().and_then(|a| global_ipv6(&m.inspect, &a.0)),
            container_port: cport,
            protocol: spec.protocol,
            bridge: addr.and_then(|a| bridges.get(&a.0).cloned()),
        });
    }
    let set: BTreeSet<String> = members
        .iter()
        .flat_map(|m| network_ids(&m.inspect))
        .filter_map(|id| bridges.get(&id).cloned())
        .collect();
    out.bridges = set.into_iter().collect();
    out
}

#[cfg(test)]
mod tests {
    use bollard::models::{EndpointSettings, NetworkSettings, PortBinding};

    use super::*;

    fn member(ipv6: Option<&str>) -> Member {
        let endpoint = EndpointSettings {
            network_id: Some("net1".into()),
            ip_address: Some("172.18.0.2".into()),
            global_ipv6_address: ipv6.map(str::to_owned),
            ..Default::default()
        };
        let binding = PortBinding {
            host_ip: Some("0.0.0.0".into()),
            host_port: Some("45353".into()),
        };
        let inspect = ContainerInspectResponse {
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([("v6net".to_owned(), endpoint)])),
                ports: Some(HashMap::from([("80/udp".to_owned(), Some(vec![binding]))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        Member {
            id: "c1".into(),
            name: "c1".into(),
            compose_service: None,
            inspect,
        }
    }

    fn udp(port: u16) -> PortSpec {
        PortSpec {
            port,
            protocol: Protocol::Udp,
        }
    }

    #[test]
    fn an_ipv6_network_gives_the_endpoint_both_addresses() {
        let bridges = HashMap::from([("net1".to_owned(), "br-net1".to_owned())]);
        let eps = build(&[udp(45353)], &[member(Some("fd00:a5::2"))], &bridges);
        assert!(eps.unpublished.is_empty());
        let ep = &eps.endpoints[0];
        assert_eq!(ep.ip, Some("172.18.0.2".parse().unwrap()));
        assert_eq!(ep.ipv6, Some("fd00:a5::2".parse().unwrap()));
        assert_eq!(ep.container_port, 80);
        assert_eq!(ep.bridge.as_deref(), Some("br-net1"));
        assert_eq!(eps.bridges, ["br-net1"]);
    }

    #[test]
    fn an_ipv4_only_network_has_no_ipv6_endpoint() {
        for empty in [None, Some("")] {
            let eps = build(&[udp(45353)], &[member(empty)], &HashMap::new());
            assert_eq!(eps.endpoints[0].ipv6, None);
        }
    }

    fn published(bindings: &[(&str, &str)]) -> ContainerInspectResponse {
        let list = bindings
            .iter()
            .map(|(ip, port)| PortBinding {
                host_ip: Some((*ip).to_owned()),
                host_port: Some((*port).to_owned()),
            })
            .collect();
        ContainerInspectResponse {
            host_config: Some(bollard::models::HostConfig {
                port_bindings: Some(HashMap::from([("8080/tcp".to_owned(), Some(list))])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn tcp(port: u16) -> PortSpec {
        PortSpec {
            port,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn bindings_keep_the_published_address() {
        let lo = published(&[("127.0.0.1", "9500")]);
        let got: Vec<String> = host_bindings(&lo, tcp(9500))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["127.0.0.1:9500"]);
        let both = published(&[("", "9500"), ("::1", "9500"), ("0.0.0.0", "9501")]);
        let got: Vec<String> = host_bindings(&both, tcp(9500))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["*:9500", "[::1]:9500"]);
        assert!(host_bindings(&both, tcp(9502)).is_empty());
        let udp_spec = PortSpec {
            port: 9500,
            protocol: Protocol::Udp,
        };
        assert!(host_bindings(&lo, udp_spec).is_empty());
    }

    #[test]
    fn a_port_no_container_publishes_is_unpublished_and_has_no_binding() {
        let m = Member {
            id: "c".into(),
            name: "c".into(),
            compose_service: None,
            inspect: published(&[("127.0.0.1", "9500")]),
        };
        let eps = build(&[tcp(9500), tcp(9600)], &[m], &HashMap::new());
        assert_eq!(eps.unpublished, [tcp(9600)]);
        assert_eq!(eps.bindings.len(), 1);
        assert_eq!(eps.endpoints.len(), 1);
    }
}
