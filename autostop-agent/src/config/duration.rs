//! Duration handling: humantime strings (`"3m"`, `"1m 30s 500ms"`) and the
//! seed tool's integer milliseconds, both resolved to [`Duration`] and held
//! to a one-second minimum (shorter timeouts would make services flap).

use std::time::Duration;

/// Smallest accepted idle or start timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Parses a humantime duration and enforces [`MIN_TIMEOUT`].
pub(crate) fn parse_human(text: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    check_min(d, text)
}

/// Converts integer milliseconds (the seed's `timeout`) and enforces
/// [`MIN_TIMEOUT`].
pub(crate) fn from_millis(ms: i64) -> Result<Duration, String> {
    let ms = u64::try_from(ms).map_err(|_| format!("timeout must not be negative, got {ms}"))?;
    check_min(Duration::from_millis(ms), &format!("{ms} ms"))
}

fn check_min(d: Duration, shown: &str) -> Result<Duration, String> {
    if d < MIN_TIMEOUT {
        return Err(format!(
            "duration {shown:?} is shorter than the minimum of 1s"
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
}
