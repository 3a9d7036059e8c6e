//! The soak's clients: one thread per client, each a steady loop against
//! one service through nginx for the whole run, pausing between requests
//! sometimes briefly (the service stays awake) and sometimes past its idle
//! timeout (the next request meets it asleep). Every request's outcome is
//! sent to the collector with its times and, when it failed, the kind.
//!
//! - HTTP: `GET /` must answer 200 with the service's body;
//! - JSON (an API client): every other time it first polls
//!   `/.autostop/status` (JSON) until the app itself answers it (the app
//!   serves its own `{"state":"app"}` there; the agent answers the wait
//!   status while the service sleeps or starts), then asks for
//!   `/data.json` with `Accept: application/json` (held by the agent
//!   while asleep) and must get the app's document;
//! - echo (raw TCP): a numbered line must come back byte for byte.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::Sender,
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use autostop_fixtures::http;

use crate::{
    soak_record::{Clock, FailKind, Failure, Outcome},
    soak_rng::Rng,
    soak_stack::{body_of, json_of, Talk},
};

/// Bound on one request (a cold start is bounded by the services' 20 s
/// start timeout, answered 504 by the agent).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the JSON client polls the status before it gives up.
const POLL_LIMIT: Duration = Duration::from_secs(30);
/// Pause between status polls.
const POLL_PAUSE: Duration = Duration::from_millis(250);
/// Share of pauses (percent) within a burst of requests (20-200 ms).
const BURST_PAUSES: u64 = 50;
/// Share of pauses (percent) longer than the service's idle timeout (the
/// next request meets it asleep); the rest are shorter than it.
const LONG_PAUSES: u64 = 30;

/// One client.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its name in the report.
    pub name: &'static str,
    /// The service it reaches.
    pub service: &'static str,
    /// How it talks.
    pub talk: Talk,
    /// nginx's address in front of the service.
    pub addr: SocketAddr,
    /// The service's idle timeout (its long pauses go past it).
    pub idle: Duration,
}

/// Runs `client` until `stop`, sending each outcome to `tx`.
pub fn spawn(
    client: Client,
    mut rng: Rng,
    clock: Clock,
    tx: Sender<Outcome>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let record = |op: &'static str, start: u64, failure: Option<Failure>| {
            let _ = tx.send(Outcome {
                client: client.name,
                service: client.service,
                op,
                start,
                end: clock.now(),
                failure,
            });
        };
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            match client.talk {
                Talk::Http => {
                    let start = clock.now();
                    let body = body_of(client.service);
                    record("GET /", start, get(client.addr, "/", &[], &body).err());
                }
                Talk::Json => {
                    let served = n.is_multiple_of(2) || poll_until_served(&client, &clock, &record);
                    if served {
                        let start = clock.now();
                        let json = json_of(client.service);
                        let accept = [("Accept", "application/json")];
                        record(
                            "GET /data.json",
                            start,
                            get(client.addr, "/data.json", &accept, &json).err(),
                        );
                    }
                }
                Talk::Echo => {
                    let start = clock.now();
                    let line = format!("soak {} {n}\n", client.name);
                    record("echo", start, echo(client.addr, line.as_bytes()).err());
                }
            }
            n += 1;
            let roll = rng.below(100);
            let pause = if roll < BURST_PAUSES {
                rng.between(Duration::from_millis(20), Duration::from_millis(200))
            } else if roll < BURST_PAUSES + LONG_PAUSES {
                rng.between(client.idle, client.idle.mul_f32(2.5))
            } else {
                rng.between(Duration::from_millis(200), client.idle)
            };
            sleep_unless(&stop, pause);
        }
    })
}

/// Sleeps `pause`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let until = Instant::now() + pause;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

/// The first bytes of a body, for a failure's detail.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let short: String = text.chars().take(120).collect();
    short.replace('\n', "\\n")
}

/// `GET path` that must answer 200 with exactly `body`.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Result<(), Failure> {
    let r = http::get(addr, path, headers, REQUEST_TIMEOUT).map_err(|e| Failure::io(&e))?;
    if r.status != 200 {
        return Err(Failure::new(
            FailKind::BadStatus,
            format!("{} {}", r.status, snippet(&r.body)),
        ));
    }
    if r.body != body.as_bytes() {
        return Err(Failure::new(FailKind::WrongBody, snippet(&r.body)));
    }
    Ok(())
}

/// Polls the wait status as an API client would, each poll an outcome,
/// until the app answers it; false when it never did (recorded).
fn poll_until_served(
    client: &Client,
    clock: &Clock,
    record: &impl Fn(&'static str, u64, Option<Failure>),
) -> bool {
    let give_up = Instant::now() + POLL_LIMIT;
    let accept = [("Accept", "application/json")];
    loop {
        let start = clock.now();
        let answer = http::get(client.addr, "/.autostop/status", &accept, REQUEST_TIMEOUT);
        let state = match answer {
            Err(e) => Err(Failure::io(&e)),
            Ok(r) if r.status != 200 => Err(Failure::new(
                FailKind::BadStatus,
                format!("{} {}", r.status, snippet(&r.body)),
            )),
            Ok(r) => serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["state"].as_str().map(str::to_owned))
                .ok_or_else(|| Failure::new(FailKind::WrongBody, snippet(&r.body))),
        };
        match state {
            Err(failure) => {
                record("status poll", start, Some(failure));
                return false;
            }
            Ok(state) if state == "app" => {
                record("status poll", start, None);
                return true;
            }
            Ok(state) if state == "failed" => {
                let failure = Failure::new(FailKind::BadStatus, "wait status says failed");
                record("status poll", start, Some(failure));
                return false;
            }
            Ok(_) if Instant::now() >= give_up => {
                let failure = Failure::new(
                    FailKind::Timeout,
                    format!("not served after {POLL_LIMIT:?} of status polls"),
                );
                record("status poll", start, Some(failure));
                return false;
            }
            Ok(_) => {
                record("status poll", start, None);
                thread::sleep(POLL_PAUSE);
            }
        }
    }
}

/// Sends `line` over a new connection and reads until it came back whole.
fn echo(addr: SocketAddr, line: &[u8]) -> Result<(), Failure> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let io = |e: std::io::Error| Failure::io(&e);
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(io)?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io)?;
    stream.write_all(line).map_err(io)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < line.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::new(
                FailKind::Timeout,
                format!("{} of {} bytes echoed", got.len(), line.len()),
            ));
        }
        stream.set_read_timeout(Some(left)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) if got.is_empty() => {
                return Err(Failure::new(FailKind::Reset, "closed without an echo"));
            }
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::io(&e)),
        }
    }
    if got != line {
        return Err(Failure::new(FailKind::WrongBody, snippet(&got)));
    }
    Ok(())
}
