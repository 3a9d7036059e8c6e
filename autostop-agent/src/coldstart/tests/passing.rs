//! Connections an old agent passed on at a hand-over: served as if
//! accepted here, with the bytes it had read from them first.

use super::*;
use crate::config::Mode;

/// A connected pair: the client's end and the agent's (to be passed).
async fn pair() -> (TcpStream, std::net::TcpStream) {
    let side = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(side.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (agent_end, _) = side.accept().expect("accept");
    (client, agent_end)
}

fn passed(stream: std::net::TcpStream, port: u16, received: &[u8]) -> Passed {
    Passed {
        service: "web".to_owned(),
        port,
        stream,
        received: received.to_vec(),
        eof: false,
        waited: Duration::from_millis(700),
    }
}

#[tokio::test]
async fn a_passed_connection_is_replayed_to_the_app_once_ready() {
    for mode in [Mode::Blocking, Mode::Dynamic] {
        let (mut client, agent_end) = pair().await;
        let mut h = Harness::start_passed(mode, 4, Duration::from_secs(30), |port| {
            vec![passed(agent_end, port, b"hello ")]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            h.wakes() >= 1,
            "{mode:?}: the passed connection wakes its service"
        );
        h.set_state(ServiceState::Ready);
        client.write_all(b"world").await.expect("write");
        let mut back = vec![0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(
            &back, b"hello world",
            "{mode:?}: the old agent's bytes first"
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn a_passed_connection_beyond_the_cap_is_refused() {
    let (mut client, agent_end) = pair().await;
    let (mut second, second_end) = pair().await;
    let h = Harness::start_passed(Mode::Blocking, 1, Duration::from_secs(30), |port| {
        vec![passed(agent_end, port, b""), passed(second_end, port, b"")]
    })
    .await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("answered at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let still = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
    assert!(still.is_err(), "the first keeps its place: {still:?}");
    h.stop().await;
}
