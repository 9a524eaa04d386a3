//! Durations on the command line: `250ms`, `30s`, `5m`, `24h`, `7d`.

use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_units_and_refuses_the_rest() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse("1.5h").is_err());
        assert!(parse("h").is_err());
        assert!(parse("5y").is_err());
    }
}
