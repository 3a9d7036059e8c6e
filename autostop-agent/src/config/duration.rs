//! Duration handling: humantime strings (`"3m"`, `"1m 30s 500ms"`) and the
//! seed tool's integer milliseconds, both resolved to [`Duration`] and held
//! between a one-second minimum (shorter timeouts would make services flap)
//! and a 30-day maximum. The maximum is what keeps the agent's clock
//! arithmetic (`Instant + timeout`) far from overflow whatever a file, a
//! label or an API call says: every path that accepts a timeout goes
//! through [`check_timeout`], the state file's saved overrides included.

use std::time::Duration;

/// Smallest accepted idle or start timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest accepted idle or start timeout (30 days): longer than any
/// sensible idle period, short enough that adding it to any clock reading
/// cannot overflow. A service that must never sleep uses `keep_warm`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses a humantime duration and enforces [`MIN_TIMEOUT`] and
/// [`MAX_TIMEOUT`].
pub(crate) fn parse_human(text: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    check_timeout(d, text)
}

/// Converts integer milliseconds (the seed's `timeout`) and enforces
/// [`MIN_TIMEOUT`] and [`MAX_TIMEOUT`].
pub(crate) fn from_millis(ms: i64) -> Result<Duration, String> {
    let ms = u64::try_from(ms).map_err(|_| format!("timeout must not be negative, got {ms}"))?;
    check_timeout(Duration::from_millis(ms), &format!("{ms} ms"))
}

/// Holds `d` (shown to the user as `shown`) to
/// [`MIN_TIMEOUT`]..=[`MAX_TIMEOUT`].
pub fn check_timeout(d: Duration, shown: &str) -> Result<Duration, String> {
    if d < MIN_TIMEOUT {
        return Err(format!(
            "duration {shown:?} is shorter than the minimum of 1s"
        ));
    }
    if d > MAX_TIMEOUT {
        return Err(format!(
            "duration {shown:?} is longer than the maximum of 30days"
        ));
    }
    Ok(d)
}

/// Renders a duration exactly in humantime form (`"3m"`, `"1m 30s 500ms"`),
/// the inverse of [`parse_human`].
pub fn format_human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
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

    #[test]
    fn formats_exactly_and_round_trips() {
        assert_eq!(format_human(Duration::from_millis(180_000)), "3m");
        assert_eq!(format_human(Duration::from_millis(90_500)), "1m 30s 500ms");
        for ms in [1000, 90_500, 180_000, 86_400_123] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_human(&format_human(d)), Ok(d));
        }
    }

    #[test]
    fn rejects_short_negative_and_garbage() {
        assert!(parse_human("500ms").is_err());
        assert!(from_millis(-5).is_err());
        assert!(from_millis(999).is_err());
        assert!(parse_human("3 mins x").is_err());
        assert_eq!(from_millis(1000), Ok(MIN_TIMEOUT));
    }

    /// Issue #25 item 2: `18446744073709551615s` was accepted and the
    /// next wake panicked adding it to an `Instant`.
    #[test]
    fn rejects_durations_past_the_maximum() {
        let err = parse_human("18446744073709551615s").unwrap_err();
        assert!(err.contains("maximum"), "{err}");
        assert!(parse_human("31days").is_err());
        assert!(from_millis(i64::MAX).is_err());
        assert_eq!(parse_human("30days"), Ok(MAX_TIMEOUT));
        assert!(std::time::Instant::now().checked_add(MAX_TIMEOUT).is_some());
    }
}
