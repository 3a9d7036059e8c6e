//! Blocking mode: connections are held, forwarded with their bytes, bounded
//! by `max_held_connections`, and a client that hangs up frees its place.

use super::*;

#[tokio::test]
async fn held_connection_is_forwarded_once_ready_with_its_bytes_intact() {
    let mut h = Harness::start(16, Duration::from_secs(30)).await;
    let mut client = TcpStream::connect(h.addr).await.expect("connect");
    client
        .write_all(b"\x00\x01raw bytes, not HTTP")
        .await
        .expect("write");
    // The wake reaches the state machine while the client is held.
    let wake = tokio::time::timeout(Duration::from_secs(5), h.commands.recv()).await;
    assert!(matches!(wake, Ok(Some(Command::Wake { .. }))), "{wake:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.stats.forwarded.load(Ordering::Relaxed),
        0,
        "nothing forwarded before ready"
    );
    h.set_state(ServiceState::Ready);
    let mut echoed = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(&echoed, b"\x00\x01raw bytes, not HTTP");
    // Still open after the first exchange: no time cap on the splice.
    client.write_all(b"again").await.expect("write again");
    let mut again = [0u8; 5];
    client.read_exact(&mut again).await.expect("read again");
    assert_eq!(&again, b"again");
    drop(client);
    h.stop().await;
}

#[tokio::test]
async fn an_ignored_source_is_refused_while_stopped_and_held_while_starting() {
    let mut h = Harness::start(16, Duration::from_secs(30)).await;
    h.ignored
        .send_modify(|nets| nets.push("127.0.0.0/8".parse().expect("cidr")));

    // Stopped: the monitor's connection is reset and wakes nothing.
    assert_closed_by_agent(h.addr, Duration::from_secs(5), "refused, not held").await;
    assert_eq!(h.stats.ignored_refused.load(Ordering::Relaxed), 1);
    assert!(
        h.commands.try_recv().is_err(),
        "no wake from an ignored source"
    );

    // Starting (someone else woke it): held and forwarded like any client.
    h.set_state(ServiceState::Starting);
    let mut during = TcpStream::connect(h.addr).await.expect("connect");
    during.write_all(b"ping").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.set_state(ServiceState::Ready);
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), during.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(&echoed, b"ping");
    assert_eq!(h.stats.ignored_refused.load(Ordering::Relaxed), 1);
    h.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_connections_are_all_answered() {
    let h = Harness::start(1024, Duration::from_secs(30)).await;
    let mut clients = Vec::new();
    for i in 0..200u32 {
        let addr = h.addr;
        clients.push(tokio::spawn(async move {
            echo_round_trip(addr, &format!("client {i:04}")).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.set_state(ServiceState::Ready);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("answered in time")
            .expect("client task");
    }
    assert_eq!(h.stats.accepted.load(Ordering::Relaxed), 200);
    h.stop().await;
}

/// The hand-over window paces connections to the app, it does not cap
/// them: three windows' worth, each kept open until all are answered, all
/// get through.
#[tokio::test]
async fn connections_beyond_the_handover_window_are_forwarded_while_others_stay_open() {
    let h = Harness::start(1024, Duration::from_secs(30)).await;
    let count = 3 * HANDOVER_WINDOW;
    let all_answered = Arc::new(tokio::sync::Barrier::new(count));
    let mut clients = Vec::new();
    for i in 0..count {
        let (addr, all_answered) = (h.addr, Arc::clone(&all_answered));
        clients.push(tokio::spawn(async move {
            let c = echo_round_trip(addr, &format!("long-lived {i:02}")).await;
            // Open until every other connection was answered too.
            all_answered.wait().await;
            drop(c);
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.set_state(ServiceState::Ready);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("answered in time")
            .expect("client task");
    }
    h.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_at_once_and_counted() {
    let h = Harness::start(2, Duration::from_secs(30)).await;
    let _a = TcpStream::connect(h.addr).await.expect("connect");
    let _b = TcpStream::connect(h.addr).await.expect("connect");
    // Let the two be accepted and hold their permits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_closed_by_agent(
        h.addr,
        Duration::from_secs(2),
        "third connection must be closed",
    )
    .await;
    assert_eq!(h.stats.refused_over_limit.load(Ordering::Relaxed), 1);
    h.stop().await;
}

#[tokio::test]
async fn forwarded_connections_give_back_their_hold_permit() {
    // A ready service whose port is still steered for a moment: open
    // forwarded connections must not count against the hold limit.
    let h = Harness::start(2, Duration::from_secs(30)).await;
    h.set_state(ServiceState::Ready);
    let mut open = Vec::new();
    for i in 0..5 {
        let mut client = TcpStream::connect(h.addr).await.expect("connect");
        let line = format!("connection {i}\n");
        client.write_all(line.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; line.len()];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut buf))
            .await
            .expect("echoed in time")
            .expect("echoed, not refused");
        assert_eq!(buf, line.as_bytes());
        open.push(client);
    }
    assert_eq!(h.stats.refused_over_limit.load(Ordering::Relaxed), 0);
    h.stop().await;
}

/// Connects to `addr` and hangs up: with nothing sent, or after an HTTP
/// request line, or by resetting the connection.
async fn connect_and_hang_up(addr: SocketAddr, how: usize) {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    match how % 3 {
        0 => drop(c),
        1 => {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            drop(c);
        }
        _ => {
            c.set_zero_linger().expect("linger");
            drop(c);
        }
    }
}

#[tokio::test]
async fn clients_that_hang_up_give_their_place_back_at_once() {
    const MAX_HELD: usize = 4;
    let mut h = Harness::start(MAX_HELD, Duration::from_secs(3600)).await;
    for i in 0..MAX_HELD + 10 {
        connect_and_hang_up(h.addr, i).await;
        // Each one is noticed before the next connects, so none of them is
        // refused over the limit: their places came back.
        let noticed = async {
            while h.stats.hung_up.load(Ordering::Relaxed) < i as u64 + 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), noticed)
            .await
            .unwrap_or_else(|_| panic!("hang-up {i} not noticed"));
    }
    assert_eq!(h.stats.refused_over_limit.load(Ordering::Relaxed), 0);
    assert_eq!(
        h.metric("autostop_connections_hung_up_total"),
        (MAX_HELD + 10).to_string()
    );
    // The places are free: a full set of real clients is held and served.
    let mut real = Vec::new();
    for i in 0..MAX_HELD {
        let mut c = TcpStream::connect(h.addr).await.expect("connect");
        c.write_all(format!("real {i}").as_bytes())
            .await
            .expect("write");
        real.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.stats.refused_over_limit.load(Ordering::Relaxed), 0);
    assert!(h.wakes() > 0, "the held clients woke the service");
    h.set_state(ServiceState::Ready);
    for (i, c) in real.iter_mut().enumerate() {
        let mut echoed = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .expect("read echo");
        assert_eq!(echoed, format!("real {i}").as_bytes());
    }
    h.stop().await;
}

#[tokio::test]
async fn bytes_sent_while_held_are_replayed_in_order_with_a_half_close() {
    let h = Harness::start(16, Duration::from_secs(3600)).await;
    let mut c = TcpStream::connect(h.addr).await.expect("connect");
    c.write_all(b"ruok").await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b" and more").await.expect("write");
    // An unknown protocol's client half-closes and waits for its answer:
    // that is not a hang-up.
    c.shutdown().await.expect("half-close");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.stats.hung_up.load(Ordering::Relaxed), 0);
    h.set_state(ServiceState::Ready);
    // The echo app answers the replayed bytes, then sees the half-close
    // and closes: the client reads everything and the end.
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(back, b"ruok and more");
    h.stop().await;
}
