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

/// A window bound as a comparable number: the integer itself, or microseconds since 1970
/// for dates and timestamps.
fn point(literal: &str) -> Option<i128> {
    if let Ok(n) = literal.parse::<i64>() {
        return Some(i128::from(n));
    }
    if let Ok(d) = NaiveDate::parse_from_str(literal, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| i128::from(t.and_utc().timestamp_micros()));
    }
    let t = literal.strip_suffix("+00").unwrap_or(literal);
    parse_time(t).map(|t| i128::from(t.timestamp_micros()))
}

fn range_of(key: &str) -> Option<(i128, i128)> {
    let (start, end) = key.strip_prefix("backfill.")?.split_once("..")?;
    Some((point(start)?, point(end)?))
}

/// The planned windows not committed yet, given the committed state's keys. A planned window
/// that overlaps a committed one without being identical (another `--from`/`--step`) is an
/// error: loading it would load rows twice.
pub fn pending<'a>(
    planned: &[Window],
    committed: impl Iterator<Item = &'a String> + Clone,
) -> Result<Vec<Window>> {
    let done: Vec<(String, (i128, i128))> = committed
        .filter_map(|k| range_of(k).map(|r| (k.clone(), r)))
        .collect();
    let mut out = Vec::new();
    for w in planned {
        let key = w.state_key();
        if done.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let (Some(a), Some(b)) = (point(&w.start), point(&w.end)) else {
            out.push(w.clone());
            continue;
        };
        if let Some((k, _)) = done.iter().find(|(_, (s, e))| a < *e && *s < b) {
            return Err(Error::user(format!(
                "window {}..{} overlaps the committed window {} but is not the same window; \
                 plan the backfill with the same --from and --step as before (or a range that \
                 does not overlap)",
                w.start,
                w.end,
                k.trim_start_matches("backfill.")
            )));
        }
        out.push(w.clone());
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
    fn committed_windows_are_skipped_and_overlapping_plans_refused() {
        let planned = windows("2024-01-01", "2024-01-05", "1d").expect("windows");
        let done = [planned[1].state_key()];
        let left = pending(&planned, done.iter()).expect("pending");
        assert_eq!(left.len(), 3);
        let other = windows("2024-01-01", "2024-01-05", "2d").expect("windows");
        let err = pending(&other, done.iter()).expect_err("overlap");
        assert!(
            err.message()
                .contains("overlaps the committed window 2024-01-02..2024-01-03")
        );
        let later = windows("2024-01-03", "2024-01-05", "12h").expect("windows");
        assert_eq!(pending(&later, done.iter()).expect("no overlap").len(), 4);
    }

    #[test]
    fn bad_bounds_and_huge_plans_are_refused() {
        assert!(windows("yesterday", "2024-01-01", "1d").is_err());
        assert!(windows("2024-01-01", "2024-02-01", "1fortnight").is_err());
        assert!(windows("0", "10000000", "1").is_err());
    }
}
