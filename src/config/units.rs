//! Durations (`"250ms"`, `"1m30s"`) and sizes (`"64KiB"`, `65536`) as the
//! config file writes them.

use std::time::Duration;

/// Why a duration or size string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("not in the expected form")]
    Malformed,
    #[error("too large")]
    TooLarge,
}

/// Parses `"250ms"`, `"10s"`, `"5m"`, `"1h"`, combinations such as
/// `"1h30m"`, and a bare `"0"`. Only whole numbers: a fraction of a unit is
/// always expressible in the next smaller one.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(UnitError::Malformed);
        }
        let number: u64 = rest[..digits].parse().map_err(|_| UnitError::TooLarge)?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(UnitError::Malformed);
        };
        rest = &rest[len..];
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or(UnitError::TooLarge)?;
        total = total.checked_add(part).ok_or(UnitError::TooLarge)?;
    }
    if text.is_empty() {
        return Err(UnitError::Malformed);
    }
    Ok(total)
}

/// Parses a size such as `"512B"`, `"64KiB"`, `"10MiB"`, `"1GiB"`, or a bare
/// number of bytes. As in nginx, `k`/`K`/`KB`, `m`/`M`/`MB` and `g`/`G`/`GB`
/// are powers of 1024 too: nobody sizing a buffer means 1000.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return Err(UnitError::Malformed);
    }
    let number: u64 = text[..digits].parse().map_err(|_| UnitError::TooLarge)?;
    let shift = match text[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(UnitError::Malformed),
    };
    number.checked_mul(1 << shift).ok_or(UnitError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h1m1s500ms"),
            Ok(Duration::from_millis(3_661_500))
        );
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in [
            "", "5", "5x", "s", "1.5s", " 5s", "5s ", "-1s", "10S", "5m30",
        ] {
            assert_eq!(parse_duration(bad), Err(UnitError::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err(UnitError::TooLarge)
        );
        assert_eq!(parse_duration("9999999999h"), Err(UnitError::TooLarge));
    }

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64KB"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
    }

    #[test]
    fn malformed_sizes_are_rejected() {
        for bad in ["", "KiB", "1.5MiB", "-1", "10TB", "10 ", "4 KiB", "ten"] {
            assert_eq!(parse_size(bad), Err(UnitError::Malformed), "{bad:?}");
        }
        assert_eq!(parse_size("99999999999GiB"), Err(UnitError::TooLarge));
    }
}
