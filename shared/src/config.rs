//! Configuration, read once at start: one rule per setting, shared by `labelq`'s flags and the
//! Lambda functions' environment.
//!
//! Each setting that both read is a type here implementing [`Setting`]: its environment variable
//! and a `FromStr` that is its one rule. `labelq` parses its flag with that `FromStr` (the flag
//! falls back to the same variable), and a function reads the variable with [`read`]; either way a
//! bad value is refused with a message that names it, never clamped into range. Only the defaults
//! differ by where the code runs, and each caller states its own.
//!
//! | setting | variable | rule |
//! |---|---|---|
//! | [`MaxLabels`] | `LABELQ_MAX_LABELS` | a whole number within 1..=1000 |
//! | [`MinConfidence`] | `LABELQ_MIN_CONFIDENCE` | a percentage within 0..=100 |
//! | [`MaxReceives`] | `LABELQ_MAX_RECEIVE_COUNT` | 2..=1000 deliveries (within SQS's `maxReceiveCount` range) |
//! | [`VisibilityTimeout`] | `LABELQ_VISIBILITY_TIMEOUT` | a duration within 1s..=12h (SQS's range) |
//! | [`JobTtl`] | `LABELQ_JOB_TTL` | a duration within 1m..=365d |
//! | [`Concurrency`] | `LABELQ_WORKER_CONCURRENCY` | jobs at once, 1..=256 |
//! | [`MaxImageBytes`] | `LABELQ_MAX_IMAGE_BYTES` | 1..=5242880 bytes (Rekognition's inline limit) |
//! | [`DetectorKind`](crate::detectors::DetectorKind) | `LABEL_DETECTOR` | `onnx` or `rekognition` |
//! | `TlsTrust` (feature `aws`) | `LABELQ_TLS_TRUST` | `native` or `amazon` |
//!
//! Durations are a whole number with a unit, `ms`, `s`, `m`, `h` or `d` (`250ms`, `30s`, `24h`); a
//! bare number is seconds.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use crate::domain::Confidence;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

/// A setting with a rule of its own, read from its environment variable (and, in `labelq`, from
/// a flag that falls back to the same variable).
pub trait Setting: FromStr<Err = String> {
    const VARIABLE: &'static str;
}

/// The setting from its variable, or `None` if the variable is absent or empty.
pub fn read<S: Setting>() -> Result<Option<S>, ConfigError> {
    optional(S::VARIABLE)
}

/// A variable that must be set and non-empty.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(ConfigError::Missing(name)),
    }
}

/// A variable that may be absent (or empty), parsed when present.
pub fn optional<T>(name: &'static str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|e: T::Err| ConfigError::Invalid {
            name,
            value: v,
            reason: e.to_string(),
        }),
        _ => Ok(None),
    }
}

/// Parses a duration: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`); a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 250ms, 30s, 5m, 24h or 7d"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use ms, s, m, h or d")),
    };
    n.checked_mul(unit_ms).map(Duration::from_millis).ok_or_else(|| format!("{s:?} is too long"))
}

fn whole_number_within<T>(s: &str, min: T, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    s.trim()
        .parse::<T>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be a whole number within {min}..={max}"))
}

fn duration_within(s: &str, min: Duration, max: Duration, bounds: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if (min..=max).contains(&d) { Ok(d) } else { Err(format!("must be within {bounds}")) }
}

macro_rules! newtype_display {
    ($name:ident) => {
        impl Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

/// At most this many labels per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxLabels(usize);

impl MaxLabels {
    pub const DEFAULT: Self = Self(10);

    pub fn get(self) -> usize {
        self.0
    }
}

impl FromStr for MaxLabels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        whole_number_within(s, 1, 1000).map(Self)
    }
}

impl Setting for MaxLabels {
    const VARIABLE: &'static str = "LABELQ_MAX_LABELS";
}

newtype_display!(MaxLabels);

/// Only labels at least this confident, in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinConfidence(Confidence);

impl MinConfidence {
    pub const DEFAULT_PERCENT: f32 = 55.0;

    pub fn get(self) -> Confidence {
        self.0
    }
}

impl Default for MinConfidence {
    fn default() -> Self {
        Self(Confidence::new(Self::DEFAULT_PERCENT).unwrap_or(Confidence::from_probability(0.55)))
    }
}

impl FromStr for MinConfidence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<f32>()
            .ok()
            .and_then(Confidence::new)
            .map(Self)
            .ok_or_else(|| "must be a percentage within 0..=100".to_owned())
    }
}

impl Setting for MinConfidence {
    const VARIABLE: &'static str = "LABELQ_MIN_CONFIDENCE";
}

/// Deliveries of one message before it is dead-lettered: the queue's `maxReceiveCount`. The worker
/// fails a job on its last delivery, so both must agree. At least 2: a direct upload's own message
/// is delivered once to find no bytes yet and must come back when the upload target expires, to
/// fail the job (`upload_expired`) if they never came; with 1 it would be dead-lettered instead,
/// and the job would wait for its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaxReceives(u32);

impl MaxReceives {
    pub const DEFAULT: Self = Self(5);
    /// For the callback queue: more than any retry schedule's attempts, with room for crashes.
    pub const CALLBACKS: Self = Self(50);

    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for MaxReceives {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        whole_number_within(s, 2, 1000).map(Self)
    }
}

impl Setting for MaxReceives {
    const VARIABLE: &'static str = "LABELQ_MAX_RECEIVE_COUNT";
}

newtype_display!(MaxReceives);

/// How long a received message stays hidden, and the worker's lease on its job, as long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisibilityTimeout(Duration);

impl VisibilityTimeout {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for VisibilityTimeout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        duration_within(s, Duration::from_secs(1), Duration::from_secs(12 * 3600), "1s..=12h").map(Self)
    }
}

impl Setting for VisibilityTimeout {
    const VARIABLE: &'static str = "LABELQ_VISIBILITY_TIMEOUT";
}

/// How long a job and its image are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobTtl(Duration);

impl JobTtl {
    pub const DEFAULT: Self = Self(Duration::from_secs(24 * 3600));

    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for JobTtl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        duration_within(s, Duration::from_secs(60), Duration::from_secs(365 * 86_400), "1m..=365d").map(Self)
    }
}

impl Setting for JobTtl {
    const VARIABLE: &'static str = "LABELQ_JOB_TTL";
}

/// Jobs processed at once: the worker pool's workers, or the records of a Lambda batch in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency(usize);

impl Concurrency {
    /// The worker Lambda's default: four records of a batch in flight.
    pub const FOUR: Self = Self(4);

    /// One per core.
    pub fn per_core() -> Self {
        Self(std::thread::available_parallelism().map_or(1, |n| n.get()).min(256))
    }

    pub fn get(self) -> usize {
        self.0
    }
}

impl FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        whole_number_within(s, 1, 256).map(Self)
    }
}

impl Setting for Concurrency {
    const VARIABLE: &'static str = "LABELQ_WORKER_CONCURRENCY";
}

newtype_display!(Concurrency);

/// The largest image body accepted, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxImageBytes(usize);

impl MaxImageBytes {
    /// Rekognition's limit for inline bytes (5 MiB).
    pub const MAX: usize = 5 * 1024 * 1024;

    pub fn get(self) -> usize {
        self.0
    }
}

impl FromStr for MaxImageBytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        whole_number_within(s, 1, Self::MAX).map(Self)
    }
}

impl Setting for MaxImageBytes {
    const VARIABLE: &'static str = "LABELQ_MAX_IMAGE_BYTES";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_variable_is_named() {
        let err = required("LABELQ_SURELY_NOT_SET_ANYWHERE").unwrap_err();
        assert_eq!(err.to_string(), "missing required environment variable LABELQ_SURELY_NOT_SET_ANYWHERE");
        assert_eq!(optional::<u32>("LABELQ_SURELY_NOT_SET_ANYWHERE"), Ok(None));
    }

    #[test]
    fn a_malformed_variable_is_named_with_its_value() {
        // Cargo sets CARGO_PKG_NAME for every test run: a string that is not a number.
        let err = optional::<MaxLabels>("CARGO_PKG_NAME").unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable CARGO_PKG_NAME=\"labelq-shared\" is invalid: must be a whole number within 1..=1000"
        );
    }

    #[test]
    fn values_out_of_range_are_refused_not_clamped() {
        assert_eq!("0".parse::<MaxLabels>(), Err("must be a whole number within 1..=1000".into()));
        assert_eq!("1001".parse::<MaxLabels>().map(MaxLabels::get).ok(), None);
        assert_eq!(" 7 ".parse::<MaxLabels>().map(MaxLabels::get), Ok(7));
        assert!("0".parse::<MaxReceives>().is_err());
        assert_eq!("1".parse::<MaxReceives>(), Err("must be a whole number within 2..=1000".into()));
        assert_eq!("2".parse::<MaxReceives>().map(MaxReceives::get), Ok(2));
        assert!("-1".parse::<MaxReceives>().is_err());
        assert!("0".parse::<Concurrency>().is_err());
        assert!("257".parse::<Concurrency>().is_err());
        assert!("100.5".parse::<MinConfidence>().is_err());
        assert!("NaN".parse::<MinConfidence>().is_err());
        assert_eq!("0".parse::<MinConfidence>().map(|m| m.get().percent()), Ok(0.0));
        assert!("0".parse::<MaxImageBytes>().is_err());
        assert!("5242881".parse::<MaxImageBytes>().is_err());
    }

    #[test]
    fn a_visibility_timeout_of_zero_or_over_twelve_hours_is_refused() {
        assert_eq!("0s".parse::<VisibilityTimeout>(), Err("must be within 1s..=12h".into()));
        assert!("999ms".parse::<VisibilityTimeout>().is_err());
        assert!("13h".parse::<VisibilityTimeout>().is_err());
        assert_eq!("180".parse::<VisibilityTimeout>().map(VisibilityTimeout::get), Ok(Duration::from_secs(180)));
        assert_eq!("12h".parse::<VisibilityTimeout>().map(VisibilityTimeout::get), Ok(Duration::from_secs(43_200)));
        assert!("30s".parse::<JobTtl>().is_err());
        assert_eq!("24h".parse::<JobTtl>(), Ok(JobTtl::DEFAULT));
    }

    #[test]
    fn durations_take_the_usual_units_and_refuse_the_rest() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }
}
