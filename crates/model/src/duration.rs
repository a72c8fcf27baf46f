//! Go's duration syntax (`"10s"`, `"1m30s"`, `"120000ms"`), parsed and printed.
//!
//! Consul speaks Go durations everywhere: check intervals and timeouts in registration bodies,
//! the `wait` parameter of blocking queries, and the `Interval`/`Timeout` strings it answers
//! with, which Go clients decode strictly. `humantime` and friends accept a different grammar
//! (spaces, `sec`, `min`) and print differently (`1m 30s`), so this small module does exactly
//! what Go's `time.ParseDuration` and `Duration.String` do, for non-negative durations.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

/// Parses a Go duration: a sequence of decimal numbers, each with an optional fraction and a
/// unit suffix (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), or a bare `0`. Negative durations are
/// clamped to zero, which is what every caller in Consul's API does with them.
pub fn parse_go_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |reason| ParseDurationError {
        input: input.to_owned(),
        reason,
    };
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit_nanos: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("number too large"))?
        };
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| err("overflow"))?;
        // The fraction scaled to the unit, truncated to whole nanoseconds as Go does.
        let mut scale = unit_nanos;
        for digit in frac_part.bytes().take(30) {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| err("overflow"))?;
        if total_nanos > i64::MAX as u128 {
            return Err(err("overflow"));
        }
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// Prints a duration as Go's `Duration.String` does: `"0s"`, `"1.5s"`, `"500ms"`, `"1m30s"`,
/// `"2h0m0s"`.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let second_nanos = nanos % 60_000_000_000;
    let seconds = decimal(second_nanos, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / scale` with the remainder as a decimal fraction without trailing zeros.
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let remainder = value % scale;
    if remainder == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let fraction = format!("{remainder:0width$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_parses() {
        let cases = [
            ("0", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("120000ms", Duration::from_secs(120)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("3µs", Duration::from_micros(3)),
            ("-5s", Duration::ZERO),
            ("+2m", Duration::from_secs(120)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_go_duration(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for input in [
            "",
            "10",
            "s",
            "1x",
            "1.s.",
            "abc",
            "1 s",
            "99999999999999999999h",
            "-",
        ] {
            assert!(
                parse_go_duration(input).is_err(),
                "{input} should be refused"
            );
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::from_micros(3), "3µs"),
            (Duration::from_nanos(12), "12ns"),
            (Duration::from_secs(60), "1m0s"),
        ];
        for (duration, expected) in cases {
            assert_eq!(format_go_duration(duration), expected);
        }
    }

    #[test]
    fn round_trips() {
        for ms in [1u64, 999, 1000, 61_001, 3_600_000, 86_400_123] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }
    }
}
