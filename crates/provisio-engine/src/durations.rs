//! Durations as people write them (`30d`, `12h`, `1d 12h`, `now`) for group operations'
//! `since` and the clean-up policy, and back for messages (humantime does the reading).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest duration a `since` may name.
const MAX_SINCE: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Reads `now` or a duration (`90s`, `30m`, `12h`, `30d`, `30 days`, `2w`, `1d 12h`), in
/// any case.
pub fn parse_since(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "now" {
        return Ok(Duration::ZERO);
    }
    // Lower case throughout, so `M` is minutes as `m` is, never humantime's months.
    let d = humantime::parse_duration(&t).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => {
            format!("'{s}' is out of range (at most ten years)")
        }
        _ => format!("'{s}' is not `now` or a duration such as 30d"),
    })?;
    if d > MAX_SINCE {
        return Err(format!("'{s}' is longer than ten years"));
    }
    Ok(d)
}

/// The time `d` before `now`, for filters of people (`--since 30d`). `now` is the store's
/// clock ([`crate::Engine::now`]), the clock that stamped the times it is compared with,
/// so a node whose own clock is off by days still cuts where the others do.
pub(crate) fn since_cutoff(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
}

/// Renders a duration for messages, in a notation [`parse_since`] reads back.
pub fn describe(d: Duration) -> String {
    let s = d.as_secs();
    // Whole days stay days: humantime would spell 60 days as months (of 30.44 days) and a
    // remainder of hours.
    if s.is_multiple_of(86_400) && s > 0 && d.subsec_nanos() == 0 {
        format!("{} days", s / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_now_and_durations() {
        assert_eq!(parse_since("now").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_since("30 days").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_since("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_since("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_since("30D").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_since("5 M").unwrap(), Duration::from_secs(5 * 60));
        assert!(parse_since("soon").is_err());
        assert!(parse_since("99999w").is_err());
        assert!(parse_since("").is_err());
        // Past u64 seconds: an error, not a wrapped small duration.
        let e = parse_since("213503982334602d").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn the_cutoff_is_taken_from_the_given_now() {
        let now = DateTime::parse_from_rfc3339("2026-03-31T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cut = since_cutoff(now, parse_since("30d").unwrap());
        assert_eq!(cut.to_rfc3339(), "2026-03-01T12:00:00+00:00");
        assert_eq!(since_cutoff(now, Duration::ZERO), now);
    }

    #[test]
    fn describe_reads_back() {
        for d in [30 * 86_400, 5400, 59, 0] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_since(&describe(d)).unwrap(), d, "{}", describe(d));
        }
        assert_eq!(describe(Duration::from_secs(60 * 86_400)), "60 days");
        assert_eq!(describe(Duration::from_secs(5400)), "1h 30m");
    }
}
