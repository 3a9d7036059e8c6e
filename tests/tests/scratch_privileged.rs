//! Scratch: the same load against a hand-started container, no agent.
use autostop_tests::{agent::*, docker::*, netns::VethNamespace};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

fn fire(addr: SocketAddr, span: Duration) -> (usize, Vec<String>) {
    let start = Instant::now();
    let mut shots = Vec::new();
    while start.elapsed() < span {
        shots.push(std::thread::spawn(move || {
            let fired = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            match http_get(addr, "/") {
                Ok((200, b)) if b.trim() == "x" => None,
                other => Some(format!("fired at {fired}: {other:?}")),
            }
        }));
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = shots.len();
    (
        n,
        shots
            .into_iter()
            .filter_map(|s| s.join().unwrap())
            .collect(),
    )
}

#[test]
fn scratch_load_without_agent() {
    let image = AppletImage::build();
    let port = free_port();
    let publish = format!("{port}:80");
    let c = TestContainer::create(
        &unique("scr"),
        &["-p", &publish],
        &image.tag,
        &["sh", "-c", &httpd_script("x", 0)],
    );
    docker(&["start", &c.name]);
    std::thread::sleep(Duration::from_secs(1));
    let ns = VethNamespace::new("scr");
    let remote = SocketAddr::from((ns.host_addr, port));
    let mut total_fail = 0;
    for round in 0..8 {
        let h = ns.spawn(move || fire(remote, Duration::from_secs(7)));
        let (n, f) = fire(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(7),
        );
        let (nn, nf) = h.join().unwrap();
        eprintln!(
            "round {round}: lo {n} shots {} failed {:?}; ns {nn} shots {} failed {:?}",
            f.len(),
            f.first(),
            nf.len(),
            nf.first()
        );
        total_fail += f.len() + nf.len();
    }
    assert_eq!(total_fail, 0);
}
