//! Backfill windows: `--from A --to B --step S` → `[A, A+S), [A+S, A+2S), …, [.., B)`.
//!
//! Bounds are integers (`--step 1000`), dates (`2024-01-01`, steps in days or weeks) or
//! timestamps (`2024-01-01T00:00:00Z`, steps `30s`, `15m`, `1h`, `1d`, `1w`); each window's
//! bounds are SQL literals of the same kind, pushed down to the source as
//! `start <= cursor < end`.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};

use crate::context::Window;
use crate::error::{Error, Result};

/// At most this many windows per backfill (a typo in `--step` should not plan a million runs).
const MAX_WINDOWS: usize = 100_000;

fn step_duration(step: &str) -> Option<Duration> {
    let (n, unit) = step.split_at(step.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "s" => Some(Duration::seconds(n)),
        "m" | "min" => Some(Duration::minutes(n)),
        "h" => Some(Duration::hours(n)),
        "d" => Some(Duration::days(n)),
        "w" => Some(Duration::weeks(n)),
        _ => None,
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
                .ok()
                .map(|t| t.and_utc())
        })
}

fn too_many(n: usize) -> Error {
    Error::user(format!(
        "the backfill would have {n} windows (at most {MAX_WINDOWS}); use a larger --step"
    ))
}

/// Split `[from, to)` into windows of `step`.
pub fn windows(from: &str, to: &str, step: &str) -> Result<Vec<Window>> {
    let bad = |what: &str| {
        Error::user(format!(
            "--{what}: give integers (with an integer --step), dates (2024-01-01) or timestamps \
             (2024-01-01T00:00:00Z), with a step like 1000, 1d, 6h, 15m"
        ))
    };
    if let (Ok(a), Ok(b)) = (from.parse::<i64>(), to.parse::<i64>()) {
        let s: i64 = step
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| bad("step"))?;
        let count = ((b - a).max(0) as u64).div_ceil(s as u64) as usize;
        if count > MAX_WINDOWS {
            return Err(too_many(count));
        }
        return Ok((0..count as i64)
            .map(|i| Window {
                start: (a + i * s).to_string(),
                end: (a + (i + 1) * s).min(b).to_string(),
            })
            .collect());
    }
    let step = step_duration(step).ok_or_else(|| bad("step"))?;
    let dates = (
        NaiveDate::parse_from_str(from, "%Y-%m-%d"),
        NaiveDate::parse_from_str(to, "%Y-%m-%d"),
    );
    let whole_days = step.num_seconds() % 86_400 == 0;
    let (start, end, as_dates) = match dates {
        (Ok(a), Ok(b)) => (
            a.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
            b.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
            whole_days,
        ),
        _ => (parse_time(from), parse_time(to), false),
    };
    let (Some(start), Some(end)) = (start, end) else {
        return Err(bad(if parse_time(from).is_none() {
            "from"
        } else {
            "to"
        }));
    };
    let literal = |t: DateTime<Utc>| {
        if as_dates {
            t.format("%Y-%m-%d").to_string()
        } else {
            t.format("%Y-%m-%d %H:%M:%S+00").to_string()
        }
    };
    let mut out = Vec::new();
    let mut t = start;
    while t < end {
        if out.len() == MAX_WINDOWS {
            return Err(too_many(MAX_WINDOWS + 1));
        }
        let next = (t + step).min(end);
        out.push(Window {
            start: literal(t),
            end: literal(next),
        });
        t = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_windows_over_dates() {
        let w = windows("2024-01-01", "2024-01-31", "1d").expect("windows");
        assert_eq!(w.len(), 30);
        assert_eq!(
            w[0],
            Window {
                start: "2024-01-01".into(),
                end: "2024-01-02".into()
            }
        );
        assert_eq!(w[29].end, "2024-01-31");
    }

    #[test]
    fn hourly_windows_become_timestamps_and_integers_split_evenly() {
        let w = windows("2024-01-01", "2024-01-02", "6h").expect("windows");
        assert_eq!(w.len(), 4);
        assert_eq!(w[1].start, "2024-01-01 06:00:00+00");
        let w = windows("0", "2500", "1000").expect("windows");
        assert_eq!(
            w.iter()
                .map(|w| (w.start.as_str(), w.end.as_str()))
                .collect::<Vec<_>>(),
            vec![("0", "1000"), ("1000", "2000"), ("2000", "2500")]
        );
    }

    #[test]
    fn bad_bounds_and_huge_plans_are_refused() {
        assert!(windows("yesterday", "2024-01-01", "1d").is_err());
        assert!(windows("2024-01-01", "2024-02-01", "1fortnight").is_err());
        assert!(windows("0", "10000000", "1").is_err());
    }
}
