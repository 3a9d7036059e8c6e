//! Privileged end to end: connections opened during a cold start are not
//! time-capped. One with traffic outlives twice the idle timeout; with
//! `hold_while_connected`, a silent open connection keeps the service up,
//! and closing it lets the service stop.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use autostop_tests::{
    agent::{echo_script, local, running, setup, AgentConfig, AppletImage, RunningAgent},
    docker::{free_port, unique, TestContainer},
    eventually,
};

fn echo_service(image: &AppletImage, port: u16) -> TestContainer {
    let publish = format!("{port}:80");
    TestContainer::create(
        &unique("as-long"),
        &["-p", &publish],
        &image.tag,
        &["sh", "-c", echo_script()],
    )
}

fn config(
    name: &str,
    port: u16,
    container: &str,
    idle: &str,
    hold_while_connected: bool,
) -> AgentConfig {
    AgentConfig::new(&format!(
        "[[service]]\nname = \"{name}\"\nport = {port}\nmode = \"blocking\"\ncontainers = [\"{container}\"]\n\
         idle_timeout = \"{idle}\"\nstart_timeout = \"60s\"\nhold_while_connected = {hold_while_connected}\n"
    ))
}

/// Sends `line` and reads the same number of bytes back.
fn echo(stream: &mut TcpStream, line: &str) {
    stream
        .write_all(line.as_bytes())
        .expect("write on the long-lived connection");
    let mut back = vec![0u8; line.len()];
    stream
        .read_exact(&mut back)
        .expect("echo on the long-lived connection");
    assert_eq!(String::from_utf8_lossy(&back), line);
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(local(port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
}

#[test]
fn privileged_connection_from_the_cold_start_outlives_twice_the_idle_timeout() {
    let image = setup();
    let port = free_port();
    let c = echo_service(&image, port);
    let agent = RunningAgent::start(&config("long", port, &c.name, "3s", false));
    agent.wait_state("long", "stopped", Duration::from_secs(10));

    // This connection wakes the service and is spliced through the agent.
    let mut stream = connect(port);
    echo(&mut stream, "first\n");
    assert!(running(&c.name));
    let until = Instant::now() + Duration::from_secs(7);
    let mut n = 0;
    while Instant::now() < until {
        echo(&mut stream, &format!("message {n}\n"));
        n += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        running(&c.name),
        "the service stopped under a busy connection"
    );
    assert_eq!(agent.state("long"), "ready");
    echo(&mut stream, "still here\n");
    assert_eq!(agent.starts("long"), 1);
}

#[test]
fn privileged_hold_while_connected_keeps_a_silent_connection_up_until_it_closes() {
    let image = setup();
    let port = free_port();
    let c = echo_service(&image, port);
    let agent = RunningAgent::start(&config("held", port, &c.name, "2s", true));
    agent.wait_state("held", "stopped", Duration::from_secs(10));

    let mut stream = connect(port);
    echo(&mut stream, "hello\n");
    // Silent for three idle timeouts: the open connection keeps it up.
    std::thread::sleep(Duration::from_secs(6));
    assert!(running(&c.name), "stopped although a connection was open");
    assert_eq!(agent.state("held"), "ready");
    echo(&mut stream, "after the silence\n");

    drop(stream);
    assert!(
        eventually(Duration::from_secs(20), || !running(&c.name)),
        "still running 20 s after the last connection closed"
    );
    agent.wait_state("held", "stopped", Duration::from_secs(10));
}
