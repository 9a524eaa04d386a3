//! `Retry-After` as RFC 9110 (section 10.2.3) defines it: a number of seconds, or an HTTP-date
//! in any of the three forms a recipient must accept (IMF-fixdate, RFC 850, asctime). Read where
//! labelq is the client: a callback's receiver asking for time, and the API answering `labelq
//! submit` with 503 or a job still running.

use std::time::{Duration, SystemTime};

/// How long `value` asks to wait from `now`: its seconds, or the time until its date (nothing
/// for a date already past). `None` for a value that is neither.
pub fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is a wait longer than anyone honours.
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, the date of RFC 9110's examples.
    fn example() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn seconds_are_a_delay() {
        assert_eq!(parse("120", example()), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 ", example()), Some(Duration::ZERO));
        assert_eq!(parse("99999999999999999999999", example()), Some(Duration::MAX));
    }

    #[test]
    fn a_date_in_any_of_the_three_forms_is_the_time_until_it() {
        let now = example() - Duration::from_secs(30);
        for form in ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(parse(form, now), Some(Duration::from_secs(30)), "{form}");
        }
    }

    #[test]
    fn a_date_already_past_asks_for_no_wait() {
        let later = example() + Duration::from_secs(3600);
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", later), Some(Duration::ZERO));
    }

    #[test]
    fn anything_else_is_not_a_retry_after() {
        for bad in ["", "soon", "-5", "1.5", "Sun, 32 Nov 1994 08:49:37 GMT", "12 s"] {
            assert_eq!(parse(bad, example()), None, "{bad:?}");
        }
    }
}
