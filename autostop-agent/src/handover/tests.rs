#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests: a panic is a failure

use std::{
    os::fd::{AsRawFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

use super::*;

const T: Duration = Duration::from_secs(2);

#[test]
fn messages_descriptors_and_payloads_cross_intact() {
    let (a, b) = Channel::pair().expect("pair");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let payload: Vec<u8> = (0..channel::MAX_PAYLOAD).map(|i| (i % 251) as u8).collect();
    let message = Message::Held {
        service: "wiki".to_owned(),
        port: 8080,
        eof: false,
        waited_ms: 1234,
    };
    a.send(&message, &[listener.as_raw_fd()], &payload, T)
        .expect("send");
    let got = b.recv(T).expect("recv");
    assert_eq!(got.message, message);
    assert_eq!(got.payload, payload);
    assert_eq!(got.fds.len(), 1);
    let passed = std::net::TcpListener::from(got.fds.into_iter().next().expect("fd"));
    assert_eq!(
        passed.local_addr().expect("addr"),
        listener.local_addr().expect("addr"),
        "the same socket, not a copy"
    );
}

#[test]
fn a_closed_peer_and_a_silent_one_are_told_apart() {
    let (a, b) = Channel::pair().expect("pair");
    assert!(matches!(
        b.recv(Duration::from_millis(50)),
        Err(HandoverError::Timeout(_))
    ));
    drop(a);
    assert!(matches!(b.recv(T), Err(HandoverError::Closed)));
}

#[test]
fn oversized_payloads_are_refused_before_sending() {
    let (a, _b) = Channel::pair().expect("pair");
    let too_big = vec![0u8; channel::MAX_PAYLOAD + 1];
    assert!(matches!(
        a.send(&Message::Stop, &[], &too_big, T),
        Err(HandoverError::Protocol(_))
    ));
}

/// Sends `bytes` as one raw datagram on `a`.
fn raw(a: &Channel, bytes: &[u8]) {
    nix::sys::socket::send(
        a.as_fd().as_raw_fd(),
        bytes,
        nix::sys::socket::MsgFlags::empty(),
    )
    .expect("send");
}

#[test]
fn malformed_frames_are_errors() {
    let (a, b) = Channel::pair().expect("pair");
    for bytes in [
        &b"\x01"[..],
        &b"\xff\xff\xff\xff{}"[..],
        &b"\x02\x00\x00\x00{}"[..],
        &b"\x0e\x00\x00\x00{\"type\":\"no\"}"[..],
    ] {
        raw(&a, bytes);
        assert!(
            matches!(b.recv(T), Err(HandoverError::Protocol(_))),
            "{bytes:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn prop_any_frame_decodes_or_errs_without_panic(bytes in proptest::collection::vec(any::<u8>(), 1..512)) {
        let (a, b) = Channel::pair().expect("pair");
        raw(&a, &bytes);
        let _ = b.recv(T);
    }
}

#[test]
fn warm_up_tables_alternate_between_two_names() {
    assert_eq!(next_table("autostop", "autostop"), "autostop_b");
    assert_eq!(next_table("autostop", "autostop_b"), "autostop");
    assert_eq!(next_table("t1", "t1"), "t1_b");
}

fn server(dir: &std::path::Path) -> (Arc<HandoverPoint>, CancellationToken, CancellationToken) {
    let server = ControlServer::bind(&socket_path(dir)).expect("bind");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let point = Arc::new(HandoverPoint::default());
    let stop = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let ctx = ServerContext {
        listeners: Listeners {
            steered: vec![OwnedFd::from(listener)],
            api: None,
        },
        nft_table: "autostop".to_owned(),
        config_path: dir.join("config.toml"),
        point: Arc::clone(&point),
        stop: stop.clone(),
    };
    tokio::spawn(server.run(ctx, shutdown.clone()));
    (point, stop, shutdown)
}

#[tokio::test]
async fn an_offer_passes_the_listeners_and_an_abandoned_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let (point, stop, shutdown) = server(dir.path());
    let mode = std::fs::metadata(socket_path(dir.path()))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("socket file");
    assert_eq!(mode, 0o600, "root (or the agent's user) only");
    for _ in 0..2 {
        let path = dir.path().to_owned();
        let taking = tokio::task::spawn_blocking(move || Taking::connect(&path))
            .await
            .expect("thread")
            .expect("offer");
        assert_eq!(taking.old_pid, std::process::id());
        assert_eq!(taking.old_table, "autostop");
        assert_eq!(taking.steered.len(), 1);
        assert!(taking.api.is_none());
        // Abandoned: the running agent goes on, and a later try is offered
        // the sockets again.
        drop(taking);
        for _ in 0..100 {
            if !point.busy() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(!stop.is_cancelled());
    assert!(!point.armed());
    shutdown.cancel();
}

#[tokio::test]
async fn another_version_is_refused_and_the_agent_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let (_point, stop, shutdown) = server(dir.path());
    let path = socket_path(dir.path());
    let answer = tokio::task::spawn_blocking(move || {
        let channel = Channel::connect(&path).expect("connect");
        channel
            .send(
                &Message::Hello {
                    version: VERSION + 1,
                    pid: 1,
                },
                &[],
                &[],
                T,
            )
            .expect("send");
        channel.recv(T).expect("answer")
    })
    .await
    .expect("thread");
    assert!(
        matches!(&answer.message, Message::Refused { reason } if reason.contains("format")),
        "{answer:?}"
    );
    assert!(answer.fds.is_empty(), "no socket leaves a refused offer");
    assert!(!stop.is_cancelled());
    shutdown.cancel();
}

#[test]
fn no_agent_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let err = Taking::connect(dir.path()).expect_err("nobody listens");
    assert!(matches!(err, HandoverError::NoAgent(_)), "{err}");
    assert!(err.to_string().contains("control.sock"), "{err}");
}
