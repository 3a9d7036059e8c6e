//! Docker's Engine API over its Unix socket, for sections that create
//! hundreds of containers: one HTTP/1.1 request per connection (the
//! fixtures' response parser reads the answer), a few calls in flight
//! ([`in_flight`]). A `docker` process per container made 500 creations take
//! minutes on this machine; the API takes seconds. xtask stays free of an
//! async runtime and of bollard (it must build before `cargo xtask setup`).

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

/// Where dockerd listens.
const SOCKET: &str = "/var/run/docker.sock";
/// The API version Docker 20.10 speaks.
const VERSION: &str = "v1.41";
/// Longest wait for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One call: the status code and body text; an error when not 2xx.
pub fn call(method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(SOCKET).context(SOCKET)?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} /{VERSION}{path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(payload.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let response = autostop_fixtures::http::parse_response(&raw)
        .with_context(|| format!("{method} {path}: unreadable answer"))?;
    let text = response.text();
    if !(200..300).contains(&response.status) {
        bail!("{method} {path}: {} {}", response.status, text.trim());
    }
    Ok(text)
}

/// The body of a container create: `image` running `/bin/sh -c script`,
/// publishing `127.0.0.1:port` → 80/tcp, with `labels`, stopped within 1 s.
pub fn create_body(image: &str, port: u16, script: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "Image": image,
        "Cmd": ["/bin/sh", "-c", script],
        "Labels": labels,
        "StopTimeout": 1,
        "ExposedPorts": { "80/tcp": {} },
        "HostConfig": {
            "PortBindings": {
                "80/tcp": [{ "HostIp": "127.0.0.1", "HostPort": port.to_string() }]
            }
        }
    })
}

/// Creates container `name` from `body`.
pub fn create(name: &str, body: &Value) -> anyhow::Result<()> {
    call(
        "POST",
        &format!("/containers/create?name={name}"),
        Some(body),
    )?;
    Ok(())
}

/// Removes container `name`, running or not; a missing one is fine.
pub fn remove(name: &str) -> anyhow::Result<()> {
    match call("DELETE", &format!("/containers/{name}?force=1&v=1"), None) {
        Err(e) if e.to_string().contains(" 404 ") => Ok(()),
        other => other.map(drop),
    }
}

/// Runs `work` on every item, `workers` at a time; the first error, if
/// any, after every item was tried.
pub fn in_flight<T: Sync>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    let errors: Vec<anyhow::Error> = thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut errors = Vec::new();
                    while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if let Err(e) = work(item) {
                            errors.push(e);
                        }
                    }
                    errors
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    match errors.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_body_publishes_one_loopback_port() {
        let body = create_body("img:1", 8080, "exec httpd", &[("autostop.bench", "1")]);
        assert_eq!(
            body["HostConfig"]["PortBindings"]["80/tcp"][0],
            json!({ "HostIp": "127.0.0.1", "HostPort": "8080" })
        );
        assert_eq!(body["Cmd"], json!(["/bin/sh", "-c", "exec httpd"]));
        assert_eq!(body["Labels"]["autostop.bench"], "1");
    }

    #[test]
    fn every_item_is_worked_once_and_the_first_error_is_returned() {
        let items: Vec<usize> = (0..100).collect();
        let done = AtomicUsize::new(0);
        let result = in_flight(&items, 4, |i| {
            done.fetch_add(1, Ordering::Relaxed);
            if *i == 42 {
                bail!("item 42");
            }
            Ok(())
        });
        assert_eq!(done.load(Ordering::Relaxed), 100);
        assert_eq!(result.expect_err("42 fails").to_string(), "item 42");
    }
}
