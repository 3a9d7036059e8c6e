//! Reading and driving the dashboard page (`GET /`) in a [`Browser`]: its
//! table cells, its SVG marks with their `data-*` figures, its actions
//! with their inline confirmation, and what `/api/history` says they show.

use std::time::Duration;

use serde_json::Value;

use super::webdriver::Browser;
use crate::{agent::RunningAgent, eventually};

/// One band of a service's timeline row, as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// `data-state`: the state name.
    pub state: String,
    /// `data-from` (Unix ms).
    pub from: i64,
    /// `data-to` (Unix ms).
    pub to: i64,
}

/// Text of `service`'s table cell matching `selector` (within its row).
pub fn cell(browser: &Browser, service: &str, selector: &str) -> String {
    let script = format!(
        "const c = document.querySelector('tr[data-service=\"{service}\"] {selector}'); \
         return c ? c.textContent : null;"
    );
    browser
        .execute(&script)
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `data-NAME` of the first element matching `selector`, if any.
pub fn data(browser: &Browser, selector: &str, name: &str) -> Option<String> {
    let script = format!(
        "const e = document.querySelector('{}'); return e ? e.dataset['{name}'] ?? null : null;",
        selector.replace('\'', "\\'")
    );
    browser.execute(&script).as_str().map(str::to_owned)
}

/// Neighbouring axis labels (`text.tick` of the timeline and the savings
/// chart) whose boxes overlap on screen, as "chart: left / right".
pub fn overlapping_ticks(browser: &Browser) -> Vec<String> {
    let value = browser.execute(
        "const out = []; \
         for (const sel of ['#timeline text.tick', '#saved text.tick']) { \
           const r = [...document.querySelectorAll(sel)] \
             .map(e => [e.textContent, e.getBoundingClientRect()]) \
             .sort((a, b) => a[1].left - b[1].left); \
           for (let i = 0; i + 1 < r.length; i++) \
             if (r[i][1].right > r[i + 1][1].left + 0.5) out.push(sel + ': ' + r[i][0] + ' / ' + r[i + 1][0]); \
         } \
         return out;",
    );
    strings(&value)
}

/// The text of every element matching `selector`, in page order.
pub fn texts(browser: &Browser, selector: &str) -> Vec<String> {
    let script = format!(
        "return [...document.querySelectorAll('{}')].map(e => e.textContent);",
        selector.replace('\'', "\\'")
    );
    strings(&browser.execute(&script))
}

/// The services with a timeline row, in page order (one entry per row).
pub fn timeline_rows(browser: &Browser) -> Vec<String> {
    let value = browser.execute(
        "return [...document.querySelectorAll('#timeline g.timeline-row')].map(g => g.dataset.service);",
    );
    strings(&value)
}

/// The bands of `service`'s timeline row, in order.
pub fn bands(browser: &Browser, service: &str) -> Vec<Band> {
    let script = format!(
        "return [...document.querySelectorAll('#timeline g.timeline-row[data-service=\"{service}\"] rect.band')]\
         .map(r => [r.dataset.state, Number(r.dataset.from), Number(r.dataset.to)]);"
    );
    let value = browser.execute(&script);
    value
        .as_array()
        .map(|all| {
            all.iter()
                .map(|b| Band {
                    state: b[0].as_str().unwrap_or_default().to_owned(),
                    from: b[1].as_i64().unwrap_or(-1),
                    to: b[2].as_i64().unwrap_or(-1),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `data-cause` of `service`'s start (`start`) or stop (`stop`) markers.
pub fn markers(browser: &Browser, service: &str, kind: &str) -> Vec<String> {
    let script = format!(
        "return [...document.querySelectorAll('#timeline g.timeline-row[data-service=\"{service}\"] line.marker.{kind}')]\
         .map(l => l.dataset.cause);"
    );
    strings(&browser.execute(&script))
}

/// `data-NAME` of every element matching `selector`, as numbers.
pub fn numbers(browser: &Browser, selector: &str, name: &str) -> Vec<f64> {
    let script = format!(
        "return [...document.querySelectorAll('{selector}')].map(e => Number(e.dataset['{name}']));"
    );
    browser
        .execute(&script)
        .as_array()
        .map(|all| all.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|all| {
            all.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Clicks `action` in `service`'s row, then its inline "confirm"; the
/// confirm button must show up (no action runs on the first click).
pub fn act(browser: &Browser, service: &str, action: &str) {
    let row = format!("tr[data-service=\"{service}\"]");
    browser.click(&format!("{row} button[data-action=\"{action}\"]"));
    let confirm = format!("{row} button[data-confirm=\"{action}\"]");
    let shown = eventually(Duration::from_secs(5), || {
        browser
            .execute(&format!(
                "return document.querySelector('{}') !== null;",
                confirm.replace('\'', "\\'")
            ))
            .as_bool()
            == Some(true)
    });
    assert!(shown, "no confirmation step for {action} {service}");
    browser.click(&confirm);
}

/// The text of the page's result message (below the table).
pub fn message(browser: &Browser) -> String {
    browser
        .execute("return document.getElementById('message').textContent;")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `GET /api/history` as JSON.
pub fn history(agent: &RunningAgent) -> Value {
    let (status, body) = agent.api_get("/api/history").expect("GET /api/history");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("history JSON")
}

/// The recorded history of `name`.
pub fn recorded<'a>(history: &'a Value, name: &str) -> &'a Value {
    history["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no history for {name}: {history}"))
}

/// (state, cause) of each transition of `name`.
pub fn steps(history: &Value, name: &str) -> Vec<(String, String)> {
    recorded(history, name)["transitions"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|t| {
                    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                    (text(&t["state"]), text(&t["cause"]))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the drawn `bands` are `name`'s recorded transitions: the state
/// at the window's start, then one band per transition, each from its
/// transition to the next; the window's edges (the page's own clock
/// reading, refreshed every 5 s) within 10 s.
pub fn bands_match(drawn: &[Band], history: &Value, name: &str) -> Result<(), String> {
    let service = recorded(history, name);
    let transitions = service["transitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if drawn.len() != transitions.len() + 1 {
        return Err(format!(
            "{} bands for {} transitions",
            drawn.len(),
            transitions.len()
        ));
    }
    let edge = |a: i64, b: i64| (a - b).abs() <= 10_000;
    let first = &drawn[0];
    if first.state != service["state_at_start"]
        || !edge(first.from, history["window_start_ms"].as_i64().unwrap_or(0))
    {
        return Err(format!(
            "first band {first:?} vs {}",
            service["state_at_start"]
        ));
    }
    for (i, t) in transitions.iter().enumerate() {
        let at = t["at_ms"].as_i64().unwrap_or(-1);
        let (before, band) = (&drawn[i], &drawn[i + 1]);
        if before.to != at || band.from != at || band.state != t["state"] {
            return Err(format!(
                "band {band:?} (after {before:?}) vs transition {t}"
            ));
        }
    }
    let last = &drawn[drawn.len() - 1];
    if !edge(last.to, history["now_ms"].as_i64().unwrap_or(0)) {
        return Err(format!("last band {last:?} does not end now"));
    }
    Ok(())
}
