//! The per-column part of `pipe check --against` (see `diff.rs`).

use pipe_framework::config::Spanned;

use crate::diff::{Bound, Differ, Severity};
use crate::spec::{ColumnSpec, Literal};
use crate::types::LogicalType;

use Severity::{Breaking, NonBreaking};

/// Changes of one column's rules. `o` is the old column, or an empty one for a column the new
/// contract adds (so every rule it brings is reported).
pub(crate) fn column(d: &mut Differ<'_>, o: &ColumnSpec, n: &ColumnSpec) {
    let name = n.name.get_ref().as_str();
    let c = Some(name);
    let ty = |s: &ColumnSpec| {
        s.data_type
            .as_ref()
            .and_then(|t| LogicalType::parse(t.get_ref()))
    };
    match (ty(o), ty(n), &n.data_type) {
        (None, Some(t), Some(at)) => d.add(
            Breaking,
            "type_added",
            c,
            Some(at.span()),
            format!("`{name}` must now be {t}"),
        ),
        (Some(t), None, _) => d.add(
            NonBreaking,
            "type_removed",
            c,
            None,
            format!("`{name}` no longer must be {t}"),
        ),
        (Some(a), Some(b), Some(at)) if a != b => {
            let (severity, code) = if a.widens_to(&b) {
                (NonBreaking, "type_widened")
            } else if b.widens_to(&a) {
                (Breaking, "type_narrowed")
            } else {
                (Breaking, "type_changed")
            };
            d.add(
                severity,
                code,
                c,
                Some(at.span()),
                format!("`{name}` type {a} → {b}"),
            );
        }
        _ => {}
    }
    for (was, is, what, added, removed) in [
        (
            o.required,
            n.required,
            "required",
            "required_added",
            "required_removed",
        ),
        (
            o.unique,
            n.unique,
            "unique",
            "unique_added",
            "unique_removed",
        ),
    ] {
        match (was, is) {
            (false, true) => d.add(
                Breaking,
                added,
                c,
                Some(n.name.span()),
                format!("`{name}` is now {what}"),
            ),
            (true, false) => d.add(
                NonBreaking,
                removed,
                c,
                Some(n.name.span()),
                format!("`{name}` is no longer {what}"),
            ),
            _ => {}
        }
    }
    let lit =
        |v: &Option<Spanned<Literal>>| v.as_ref().map(|s| (Bound(s.get_ref().clone()), s.span()));
    let num = |v: &Option<Spanned<u64>>| v.as_ref().map(|s| (*s.get_ref(), s.span()));
    d.bound(c, "min", MIN, lit(&o.min).map(|x| x.0), lit(&n.min), true);
    d.bound(c, "max", MAX, lit(&o.max).map(|x| x.0), lit(&n.max), false);
    let codes = [
        "min_length_added",
        "min_length_removed",
        "min_length_raised",
        "min_length_lowered",
    ];
    d.bound(
        c,
        "min_length",
        codes,
        num(&o.min_length).map(|x| x.0),
        num(&n.min_length),
        true,
    );
    let codes = [
        "max_length_added",
        "max_length_removed",
        "max_length_lowered",
        "max_length_raised",
    ];
    d.bound(
        c,
        "max_length",
        codes,
        num(&o.max_length).map(|x| x.0),
        num(&n.max_length),
        false,
    );
    precision(d, o, n);
    match (&o.pattern, &n.pattern) {
        (None, Some(p)) => d.add(
            Breaking,
            "pattern_added",
            c,
            Some(p.span()),
            format!("`{name}` must now match /{}/", p.get_ref()),
        ),
        (Some(p), None) => d.add(
            NonBreaking,
            "pattern_removed",
            c,
            None,
            format!("`{name}` no longer must match /{}/", p.get_ref()),
        ),
        (Some(a), Some(b)) if a.get_ref() != b.get_ref() => d.add(
            Breaking,
            "pattern_changed",
            c,
            Some(b.span()),
            format!("`{name}` pattern /{}/ → /{}/", a.get_ref(), b.get_ref()),
        ),
        _ => {}
    }
    allowed(d, name, o, n);
    let schema = |s: &ColumnSpec| s.json_schema.as_ref().map(|j| j.get_ref().clone());
    d.json_schema(
        &format!("{name}.json_schema"),
        c,
        schema(o),
        n.json_schema.as_ref(),
    );
}

const MIN: [&str; 4] = ["min_added", "min_removed", "min_raised", "min_lowered"];
const MAX: [&str; 4] = ["max_added", "max_removed", "max_lowered", "max_raised"];

/// The only values allowed: removing one is breaking, adding one is not. `1` and `1.0`, and
/// a TOML date and the same date as text, are one value.
fn allowed(d: &mut Differ<'_>, name: &str, o: &ColumnSpec, n: &ColumnSpec) {
    let c = Some(name);
    let has = |list: &[Literal], v: &Literal| list.iter().any(|x| same_value(x, v));
    match (&o.allowed, &n.allowed) {
        (None, Some(v)) => d.add(
            Breaking,
            "allowed_added",
            c,
            Some(v.span()),
            format!("`{name}` is now limited to {} values", v.get_ref().len()),
        ),
        (Some(_), None) => d.add(
            NonBreaking,
            "allowed_removed",
            c,
            None,
            format!("`{name}` is no longer limited to a list of values"),
        ),
        (Some(a), Some(b)) => {
            let (a, span, b) = (a.get_ref(), b.span(), b.get_ref());
            let gone: Vec<String> = a
                .iter()
                .filter(|v| !has(b, v))
                .map(|v| v.to_string())
                .collect();
            let new: Vec<String> = b
                .iter()
                .filter(|v| !has(a, v))
                .map(|v| v.to_string())
                .collect();
            if !gone.is_empty() {
                d.add(
                    Breaking,
                    "allowed_values_removed",
                    c,
                    Some(span.clone()),
                    format!("`{name}` no longer allows {}", gone.join(", ")),
                );
            }
            if !new.is_empty() {
                d.add(
                    NonBreaking,
                    "allowed_values_added",
                    c,
                    Some(span),
                    format!("`{name}` now also allows {}", new.join(", ")),
                );
            }
        }
        (None, None) => {}
    }
}

/// Whether two allowed values are one value in any column: equal, the same number written as
/// an integer and a float, or the same text written as a TOML date and a string. (Text that
/// merely reads as the same instant is not: in a text column they differ.)
fn same_value(a: &Literal, b: &Literal) -> bool {
    match (a, b) {
        (Literal::Int(i), Literal::Float(f)) | (Literal::Float(f), Literal::Int(i)) => {
            f.fract() == 0.0 && (*i as f64) == *f && (*f as i64) == *i
        }
        (Literal::Text(_) | Literal::Datetime(_), Literal::Text(_) | Literal::Datetime(_)) => {
            a.as_text() == b.as_text()
        }
        _ => a == b,
    }
}

/// `precision` and `scale` together: a value fits when it has at most `scale` fractional
/// digits and at most `precision - scale` integer digits. Fewer of either is breaking
/// (`decimal(5,0)` → `decimal(5,2)` rejects 12345).
fn precision(d: &mut Differ<'_>, o: &ColumnSpec, n: &ColumnSpec) {
    let name = n.name.get_ref();
    let get = |s: &ColumnSpec| {
        let p = s.precision.as_ref().map(|p| i32::from(*p.get_ref()));
        let sc = s.scale.as_ref().map(|x| i32::from(*x.get_ref()));
        (p.is_some() || sc.is_some()).then_some((p, sc))
    };
    let span = n
        .precision
        .as_ref()
        .map(|p| p.span())
        .or_else(|| n.scale.as_ref().map(|s| s.span()));
    let show = |(p, s): (Option<i32>, Option<i32>)| {
        let f = |v: Option<i32>| v.map_or("-".into(), |v| v.to_string());
        format!("precision {} scale {}", f(p), f(s))
    };
    match (get(o), get(n)) {
        (None, Some(new)) => d.add(
            Breaking,
            "precision_added",
            Some(name),
            span,
            format!("`{name}` must now fit {}", show(new)),
        ),
        (Some(old), None) => d.add(
            NonBreaking,
            "precision_removed",
            Some(name),
            None,
            format!("`{name}` no longer has {}", show(old)),
        ),
        (Some(old), Some(new)) if old != new => {
            // Unset precision: 38 digits; unset scale: the column's own, unknown here (so
            // setting one tightens, removing one loosens).
            let int_digits = |(p, s): (Option<i32>, Option<i32>)| p.unwrap_or(38) - s.unwrap_or(0);
            let fewer_fraction = match (old.1, new.1) {
                (Some(a), Some(b)) => b < a,
                (None, Some(_)) => true,
                // The scale falls back to the column's own, which may be larger: with a
                // precision set, that may leave fewer integer digits.
                (Some(_), None) => new.0.is_some(),
                (None, None) => false,
            };
            let tighter = fewer_fraction || int_digits(new) < int_digits(old);
            let (severity, code) = if tighter {
                (Breaking, "precision_tightened")
            } else {
                (NonBreaking, "precision_loosened")
            };
            d.add(
                severity,
                code,
                Some(name),
                span,
                format!("`{name}` {} → {}", show(old), show(new)),
            );
        }
        _ => {}
    }
}
