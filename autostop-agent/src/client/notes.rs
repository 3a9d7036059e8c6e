//! The lines `autostop status` prints under its table about what keeps a
//! service awake or wakes it besides traffic: keep-awake reasons,
//! requirements and dependents, `keep_warm` windows and pre-warms (issue
//! #18). Times are shown in the host's time zone.

use jiff::{tz::TimeZone, Timestamp};

use crate::api::ServiceView;

/// One line per service that has anything to say, in table order.
pub fn schedule_notes(services: &[ServiceView], tz: &TimeZone) -> Vec<String> {
    services
        .iter()
        .filter_map(|s| {
            let mut parts = Vec::new();
            if !s.keep_awake.is_empty() {
                parts.push(format!("kept awake: {}", s.keep_awake.join("; ")));
            }
            if !s.requires.is_empty() {
                parts.push(format!("requires {}", s.requires.join(", ")));
            }
            let said = s.keep_awake.iter().any(|r| r.starts_with("needed by"));
            if !s.needed_by.is_empty() && !said {
                parts.push(format!("needed by {}", s.needed_by.join(", ")));
            }
            if let Some(next) = s.next_keep_warm.as_deref().and_then(|t| local(t, tz)) {
                parts.push(format!("next keep_warm window {next}"));
            }
            if let Some(p) = &s.next_prewarm {
                if let Some(at) = local(&p.at, tz) {
                    parts.push(format!("next pre-warm {at} ({})", p.reason));
                }
            }
            (!parts.is_empty()).then(|| format!("{}: {}", s.name, parts.join(" · ")))
        })
        .collect()
}

/// An RFC 3339 time from the API as a short local time.
fn local(rfc3339: &str, tz: &TimeZone) -> Option<String> {
    let at: Timestamp = rfc3339.parse().ok()?;
    Some(
        at.to_zoned_datetime(tz.clone())
            .strftime("%a %d %b %H:%M")
            .to_string(),
    )
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]
mod tests {
    use super::*;
    use crate::api::PrewarmView;

    #[test]
    fn notes_name_reasons_links_and_next_times() {
        let services = vec![
            ServiceView {
                name: "db".into(),
                keep_awake: vec!["needed by app".into()],
                needed_by: vec!["app".into()],
                ..ServiceView::default()
            },
            ServiceView {
                name: "app".into(),
                requires: vec!["db".into()],
                next_keep_warm: Some("2026-12-01T08:00:00Z".into()),
                next_prewarm: Some(PrewarmView {
                    at: "2026-12-01T07:45:00Z".into(),
                    expected: "2026-12-01T08:00:00Z".into(),
                    reason: "3 of the last 4 Tuesdays".into(),
                }),
                ..ServiceView::default()
            },
            ServiceView {
                name: "quiet".into(),
                ..ServiceView::default()
            },
        ];
        assert_eq!(
            schedule_notes(&services, &TimeZone::UTC),
            [
                "db: kept awake: needed by app",
                "app: requires db · next keep_warm window Tue 01 Dec 08:00 · \
                 next pre-warm Tue 01 Dec 07:45 (3 of the last 4 Tuesdays)",
            ]
        );
    }
}
