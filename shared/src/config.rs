//! Reading configuration from the environment, once, at start. A missing or malformed variable
//! fails fast with an error that names it.

use std::fmt::Display;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
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

/// Checks a parsed value, naming the variable when it is out of range.
pub fn check<T: Display>(name: &'static str, value: T, ok: bool, reason: &str) -> Result<T, ConfigError> {
    if ok { Ok(value) } else { Err(ConfigError::Invalid { name, value: value.to_string(), reason: reason.to_owned() }) }
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
        let err = optional::<u32>("CARGO_PKG_NAME").unwrap_err();
        assert!(
            err.to_string().starts_with("environment variable CARGO_PKG_NAME=\"labelq-shared\" is invalid"),
            "{err}"
        );
        assert!(check("LABELQ_X", 0, false, "must be positive").is_err());
    }
}
