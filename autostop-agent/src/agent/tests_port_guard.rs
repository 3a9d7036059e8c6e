//! Unit tests of the port guard's judgement: which listeners are another
//! program's.

use super::*;

fn listening(addr: &str, inode: u64) -> Listening {
    Listening {
        local: addr.parse().expect("socket address"),
        inode,
    }
}

fn owner(command: &str, args: &str) -> Option<Owner> {
    Some(Owner {
        pid: 7,
        command: command.to_owned(),
        args: args.split(' ').map(str::to_owned).collect(),
    })
}

#[test]
fn any_other_listener_on_an_overlapping_address_is_foreign() {
    let any = HostPort::any(8080);
    let lo: HostPort = "127.0.0.1:8080".parse().expect("binding");
    let python = [(listening("127.0.0.1:8080", 1), owner("python3", "python3"))];
    let problem = foreign(any, &python, &[], false).expect("foreign");
    assert!(problem.contains("python3 (pid 7)"), "{problem}");
    assert!(problem.contains("*:8080"), "{problem}");
    assert!(foreign(lo, &python, &[], false).is_some());
    let elsewhere = [(listening("10.0.0.5:8080", 1), owner("nc", "nc"))];
    assert_eq!(foreign(lo, &elsewhere, &[], false), None);
    let other_port = [(listening("0.0.0.0:8081", 1), owner("nc", "nc"))];
    assert_eq!(foreign(any, &other_port, &[], false), None);
    let hidden = [(listening("[::]:8080", 1), None)];
    let problem = foreign(lo, &hidden, &[], false).expect("every address");
    assert!(problem.contains("cannot see"), "{problem}");
    // While its containers run or just failed, an unseen owner is their
    // proxy on its way out (seen in agent_ops:: after an `exit 1`).
    assert_eq!(foreign(lo, &hidden, &[], true), None);
}

#[test]
fn the_services_own_docker_proxy_is_not_foreign() {
    let any = HostPort::any(8080);
    let proxy = [(
        listening("0.0.0.0:8080", 1),
        owner(
            "docker-proxy",
            "/usr/bin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80",
        ),
    )];
    let own: IpAddr = "172.17.0.2".parse().expect("ip");
    assert_eq!(foreign(any, &proxy, &[own], false), None);
    assert_eq!(foreign(any, &proxy, &[], true), None, "its containers run");
    // Stopped, and relaying elsewhere: another container's port.
    assert!(foreign(any, &proxy, &[], false).is_some());
}
