//! The `autostop status` table: one row per service, each column as wide
//! as its widest cell (display width: the state icons and wide characters
//! count two), two spaces between columns, durations in one compact style
//! (`0.3s`, `20s`, `3m`, `1m15s`, `1h05m`, `2d03h`) and no negative zero.
//! The default columns fit [`DEFAULT_WIDTH`] (a name too long for that is
//! shortened with `…`, as is a long error line); `--wide` shows every
//! column and every name and error in full.

use std::time::Duration;

use unicode_width::UnicodeWidthStr;

use crate::api::ServiceView;

/// What the default table fits in, in terminal columns.
pub const DEFAULT_WIDTH: usize = 100;
/// A shortened name keeps at least this many columns.
const MIN_NAME_WIDTH: usize = 8;
const GAP: &str = "  ";

/// One column: its header, whether the default table shows it, and how a
/// service's cell reads.
struct Column {
    header: &'static str,
    default: bool,
    cell: fn(&ServiceView) -> String,
}

const COLUMNS: &[Column] = &[
    Column {
        header: "NAME",
        default: true,
        cell: |s| s.name.clone(),
    },
    Column {
        header: "STATE",
        default: true,
        cell: state,
    },
    Column {
        header: "FOR",
        default: true,
        cell: |s| compact_seconds(s.state_for_s),
    },
    Column {
        header: "MODE",
        default: false,
        cell: |s| dash_if_empty(s.mode.clone()),
    },
    Column {
        header: "PORTS",
        default: false,
        cell: |s| dash_if_empty(s.ports.join(",")),
    },
    Column {
        header: "HELD",
        default: false,
        cell: |s| s.held.to_string(),
    },
    Column {
        header: "RAM",
        default: true,
        cell: ram,
    },
    Column {
        header: "TIMEOUT",
        default: true,
        cell: |s| compact_seconds(s.idle_timeout_s),
    },
    Column {
        header: "IDLE FOR",
        default: false,
        cell: |s| s.idle_for_s.map_or_else(dash, compact_seconds),
    },
    Column {
        header: "STOP IN",
        default: true,
        cell: stop_in,
    },
    Column {
        header: "LAST START",
        default: true,
        cell: |s| s.last_start_duration_s.map_or_else(dash, seconds_f64),
    },
    Column {
        header: "AVG START",
        default: false,
        cell: |s| s.average_start_duration_s.map_or_else(dash, seconds_f64),
    },
    Column {
        header: "STARTS 24H",
        default: false,
        cell: |s| s.starts_24h.to_string(),
    },
    Column {
        header: "SAVED 24H",
        default: true,
        cell: |s| gb_h(s.ram_saved_gb_h_24h),
    },
    Column {
        header: "SAVED",
        default: false,
        cell: |s| gb_h(s.ram_saved_gb_h),
    },
    Column {
        header: "BLOCK",
        default: false,
        cell: block,
    },
];

/// Renders the table (`wide`: every column, nothing shortened), with a
/// `last error:` line under each service that has one and, in the default
/// table (which has no BLOCK column), a `start blocked:` line.
pub fn status_table(services: &[ServiceView], wide: bool) -> String {
    let columns: Vec<&Column> = COLUMNS.iter().filter(|c| wide || c.default).collect();
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| columns.iter().map(|c| (c.cell)(s)).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.header.width()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }
    if !wide {
        // Shorten the names so the row fits, never below MIN_NAME_WIDTH.
        let gaps = GAP.len().saturating_mul(widths.len().saturating_sub(1));
        let total = widths.iter().fold(gaps, |sum, w| sum.saturating_add(*w));
        let over = total.saturating_sub(DEFAULT_WIDTH);
        if let Some(name) = widths.first_mut() {
            *name = name.saturating_sub(over).max(MIN_NAME_WIDTH.min(*name));
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = columns.iter().map(|c| c.header.to_owned()).collect();
    push_row(&mut out, &headers, &widths);
    for (service, row) in services.iter().zip(&rows) {
        push_row(&mut out, row, &widths);
        if let Some(error) = &service.last_error {
            let line = format!("{:indent$}last error: {error}", "", indent = 2);
            let line = if wide {
                line
            } else {
                shorten(&line, DEFAULT_WIDTH)
            };
            out.push_str(&line);
            out.push('\n');
        }
        if !wide && service.start_block.is_some() {
            let why = match service.start_block.as_deref() {
                Some("crash_loop") => format!(
                    "crash loop, visitors get an error until `autostop start {}`",
                    service.name
                ),
                _ => block(service),
            };
            out.push_str(&shorten(&format!("  start blocked: {why}"), DEFAULT_WIDTH));
            out.push('\n');
        }
    }
    out
}

/// Appends one line: each cell padded (or shortened) to its width, the
/// last one unpadded.
fn push_row(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str(GAP);
        }
        let cell = shorten(cell, *width);
        line.push_str(&cell);
        line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.width())));
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// `text` cut to `width` display columns, ending in `…` when cut.
fn shorten(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    for c in text.chars() {
        let grown = out.width().saturating_add(c.to_string().width());
        if grown.saturating_add(1) > width {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

fn dash() -> String {
    "-".to_owned()
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        dash()
    } else {
        text
    }
}

/// Icon and label; every icon is two columns wide.
fn state(s: &ServiceView) -> String {
    let (icon, label) = match s.state.as_str() {
        "ready" => ("✅", "RUNNING"),
        "starting" => ("🟡", "STARTING"),
        "stopping" => ("🟠", "STOPPING"),
        "hibernating" => ("🟠", "HIBERNATING"),
        "hibernated" => ("🧊", "HIBERNATED"),
        "stopped" => ("💤", "STOPPED"),
        "failed" => ("❌", "FAILED"),
        _ => ("❔", "UNKNOWN"),
    };
    format!("{icon} {label}")
}

fn ram(s: &ServiceView) -> String {
    if let Some(h) = &s.hibernation {
        return format!("{} + {} swap", bytes(h.resident_bytes), bytes(h.swap_bytes));
    }
    match (s.memory_bytes, s.memory_limit_bytes) {
        (Some(used), Some(limit)) if limit > 0 => format!("{} / {}", bytes(used), bytes(limit)),
        (Some(used), _) => bytes(used),
        _ => dash(),
    }
}

fn stop_in(s: &ServiceView) -> String {
    match (s.hold, s.seconds_until_stop) {
        (true, _) => "hold".to_owned(),
        (false, Some(secs)) => compact_seconds(secs),
        (false, None) => dash(),
    }
}

fn block(s: &ServiceView) -> String {
    match (s.start_block.as_deref(), s.retry_in_s) {
        (Some("crash_loop"), _) => "crash loop".to_owned(),
        (Some("backoff"), Some(secs)) => format!("retry in {}", compact_seconds(secs)),
        (Some(other), _) => other.replace('_', " "),
        (None, _) => dash(),
    }
}

/// Whole seconds, compactly: `0s`, `45s`, `3m`, `1m15s`, `1h05m`, `2d03h`
/// (two units at most, the smaller zero-padded and left out when zero).
pub fn compact_seconds(secs: u64) -> String {
    let two = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small:02}{small_unit}")
        }
    };
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => {
            let (m, s) = (secs / 60, secs % 60);
            if s == 0 {
                format!("{m}m")
            } else {
                format!("{m}m{s:02}s")
            }
        }
        3600..=86_399 => two(secs / 3600, "h", secs % 3600 / 60, "m"),
        _ => two(secs / 86_400, "d", secs % 86_400 / 3600, "h"),
    }
}

/// A duration in the same style, with tenths under 10 s (`0.3s`, `4.5s`).
pub fn compact_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs == 0.0 {
        "0s".to_owned()
    } else if secs < 0.05 {
        "<0.1s".to_owned()
    } else if secs < 9.95 {
        format!("{secs:.1}s")
    } else {
        // Rounded to the second (10.4 s reads 10s, 59.6 s reads 1m).
        compact_seconds(
            duration
                .as_secs()
                .saturating_add(u64::from(duration.subsec_millis() >= 500)),
        )
    }
}

/// Seconds from the API (never negative; NaN reads `-`).
fn seconds_f64(secs: f64) -> String {
    if secs.is_nan() {
        return dash();
    }
    compact_duration(Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX))
}

/// GB·h saved: tenths from 0.1 GB·h, whole MB·h below, `0 GB·h` for
/// nothing (never `-0.0`).
fn gb_h(value: f64) -> String {
    let mb_h = value * 1000.0;
    if value.is_nan() || mb_h < 0.5 {
        "0 GB·h".to_owned()
    } else if value < 0.1 {
        format!("{mb_h:.0} MB·h")
    } else {
        format!("{value:.1} GB·h")
    }
}

/// `512kB`, `300MB`, `6.2GB` (10^3 steps, as Docker's stats show).
fn bytes(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}GB", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{}MB", n / 1_000_000)
    } else if n >= 1_000 {
        format!("{}kB", n / 1_000)
    } else {
        format!("{n}B")
    }
}
