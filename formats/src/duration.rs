//! Go-style durations as Flux and Kubernetes tools write them (`30s`, `5m`, `1h30m`), for
//! intervals, timeouts and retries in manifests and on command lines.

use std::time::Duration;

/// A positive Go-style duration of whole seconds, minutes and hours (`30s`, `5m`, `1h30m`);
/// `None` for anything else, zero included.
pub fn parse(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total = total.checked_add(n.checked_mul(match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        })?)?;
    }
    if !num.is_empty() {
        return None;
    }
    (total > 0).then(|| Duration::from_secs(total))
}

/// [`parse`], with `0` (or `0s`, `0m0s`, ...) meaning zero (a switch-off).
pub fn parse_or_zero(s: &str) -> Option<Duration> {
    if !s.is_empty() && s.chars().all(|c| matches!(c, '0' | 's' | 'm' | 'h')) && s.starts_with('0') {
        Some(Duration::ZERO)
    } else {
        parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse("5"), None);
        assert_eq!(parse("5d"), None);
        assert_eq!(parse("0s"), None);
        assert_eq!(parse_or_zero("0"), Some(Duration::ZERO));
        assert_eq!(parse_or_zero("0m0s"), Some(Duration::ZERO));
        assert_eq!(parse_or_zero("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse("99999999999999999999h"), None);
    }
}
