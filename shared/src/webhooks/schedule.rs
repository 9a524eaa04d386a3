//! When a callback that did not deliver is tried again: a schedule of delays after each failed
//! attempt (by default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h: seven attempts over some 18 hours),
//! each spread by up to a fifth either way so that the callbacks of a burst of jobs do not retry in
//! step, and never earlier than the receiver's `Retry-After`.

use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

use crate::config::{Setting, parse_duration};

/// The longest wait between two attempts: SQS's longest visibility timeout.
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 3600);
const MAX_RETRIES: usize = 20;

/// `LABELQ_CALLBACK_RETRIES`: the delays before each retry, comma-separated (`5s,5m,30m,2h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        let [s, m, h] = [1, 60, 3600];
        Self([5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h].into_iter().map(Duration::from_secs).collect())
    }
}

impl RetrySchedule {
    /// Attempts in all: the first and one per delay.
    pub fn attempts(&self) -> u32 {
        self.0.len() as u32 + 1
    }

    /// The wait after attempt `attempt` (1 for the first) failed, or `None` once the schedule is
    /// spent; at least `retry_after` when the receiver asked for it, at most [`MAX_DELAY`].
    pub fn after(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let planned = *self.0.get(attempt.checked_sub(1)? as usize)?;
        let jittered = planned.mul_f64(rand::rng().random_range(0.8..=1.2));
        Some(jittered.max(retry_after.unwrap_or_default()).min(MAX_DELAY))
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let delays = s.split(',').map(|d| parse_duration(d.trim())).collect::<Result<Vec<_>, _>>()?;
        if delays.len() > MAX_RETRIES {
            return Err(format!("at most {MAX_RETRIES} retries"));
        }
        if delays.iter().any(|d| *d > MAX_DELAY) {
            return Err("each delay is at most 12h".into());
        }
        Ok(Self(delays))
    }
}

impl Setting for RetrySchedule {
    const VARIABLE: &'static str = "LABELQ_CALLBACK_RETRIES";
}

impl std::fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|d| format!("{}ms", d.as_millis())).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_seven_attempts_over_hours() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 7);
        let first = schedule.after(1, None).unwrap();
        assert!((4000..=6000).contains(&first.as_millis()), "{first:?}");
        let last = schedule.after(6, None).unwrap();
        assert!(last >= Duration::from_secs(8 * 3600), "{last:?}");
        assert_eq!(schedule.after(7, None), None, "spent");
        assert_eq!(schedule.after(0, None), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_longest_delay() {
        let schedule: RetrySchedule = "1s".parse().unwrap();
        assert_eq!(schedule.after(1, Some(Duration::from_secs(90))), Some(Duration::from_secs(90)));
        assert_eq!(schedule.after(1, Some(Duration::from_secs(86_400))), Some(MAX_DELAY));
    }

    #[test]
    fn a_schedule_is_a_list_of_durations_within_bounds() {
        assert_eq!("200ms, 1s".parse::<RetrySchedule>().unwrap().attempts(), 3);
        for bad in ["", "5x", "1s,,2s", "13h", &vec!["1s"; 21].join(",")] {
            assert!(bad.parse::<RetrySchedule>().is_err(), "{bad:?}");
        }
    }
}
