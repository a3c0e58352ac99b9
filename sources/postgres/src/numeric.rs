//! PostgreSQL's binary `numeric`: base-10000 digit groups, decoded exactly.
//!
//! Layout: `ndigits: i16, weight: i16, sign: u16, dscale: u16`, then `ndigits` groups of
//! `i16` (0..=9999). The value is `Σ digit[i] × 10000^(weight − i)`; `dscale` is the number of
//! decimal places to display.

const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;
const NAN: u16 = 0xC000;
const PINF: u16 = 0xD000;
const NINF: u16 = 0xF000;

/// A decoded numeric header and its digit groups.
#[derive(Debug)]
pub(crate) struct Numeric<'a> {
    weight: i16,
    sign: u16,
    dscale: u16,
    digits: &'a [u8],
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

impl<'a> Numeric<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, String> {
        if data.len() < 8 {
            return Err("numeric value shorter than its header".into());
        }
        let ndigits = be_i16(&data[0..2]);
        let digits = &data[8..];
        if ndigits < 0 || digits.len() != ndigits as usize * 2 {
            return Err("numeric value with an inconsistent digit count".into());
        }
        let sign = u16::from_be_bytes([data[4], data[5]]);
        if !matches!(sign, POSITIVE | NEGATIVE | NAN | PINF | NINF) {
            return Err(format!(
                "numeric value with an unknown sign word {sign:#06x}"
            ));
        }
        Ok(Self {
            weight: be_i16(&data[2..4]),
            sign,
            dscale: u16::from_be_bytes([data[6], data[7]]),
            digits,
        })
    }

    fn groups(&self) -> impl Iterator<Item = i128> + '_ {
        self.digits.chunks_exact(2).map(|c| i128::from(be_i16(c)))
    }

    fn special(&self) -> Option<&'static str> {
        match self.sign {
            NAN => Some("NaN"),
            PINF => Some("Infinity"),
            NINF => Some("-Infinity"),
            _ => None,
        }
    }

    /// The value × 10^`scale` as an integer with at most `precision` digits. Errors (never
    /// rounds) if the value has more decimal places than `scale` or too many digits.
    pub(crate) fn to_i128(&self, precision: u8, scale: i8) -> Result<i128, String> {
        if let Some(s) = self.special() {
            return Err(format!(
                "{s} cannot be stored in a decimal({precision},{scale}) column"
            ));
        }
        let overflow = || {
            format!(
                "{} does not fit decimal({precision},{scale})",
                self.to_text()
            )
        };
        // Walk the groups from the most significant; a group's power of ten is known from its
        // weight. Whole groups above 10^-scale are taken four digits at a time; only a group
        // straddling 10^-scale is split, and the digits below it must be zero (never rounded).
        let min_power = -i32::from(scale);
        let mut acc: i128 = 0;
        let mut next_power: Option<i32> = None;
        for (i, group) in self.groups().enumerate() {
            let low = 4 * (i32::from(self.weight) - i as i32); // power of the group's last digit
            if low >= min_power {
                acc = acc
                    .checked_mul(10_000)
                    .and_then(|a| a.checked_add(group))
                    .ok_or_else(overflow)?;
                next_power = Some(low - 1);
                continue;
            }
            // `keep` leading digits of this group are at or above 10^-scale.
            let keep = (low + 4 - min_power).clamp(0, 4) as u32;
            let divisor = 10i128.pow(4 - keep);
            if group % divisor != 0 {
                return Err(format!(
                    "{} has more than {scale} decimal places; it would be rounded",
                    self.to_text()
                ));
            }
            if keep > 0 {
                acc = acc
                    .checked_mul(10i128.pow(keep))
                    .and_then(|a| a.checked_add(group / divisor))
                    .ok_or_else(overflow)?;
                next_power = Some(min_power - 1);
            }
        }
        // Trailing zeros the groups did not spell out, down to 10^-scale.
        if let Some(p) = next_power
            && p >= min_power
        {
            let factor = 10i128
                .checked_pow((p - min_power + 1) as u32)
                .ok_or_else(overflow)?;
            acc = acc.checked_mul(factor).ok_or_else(overflow)?;
        }
        let limit = 10i128
            .checked_pow(u32::from(precision))
            .ok_or_else(overflow)?;
        if acc >= limit {
            return Err(overflow());
        }
        Ok(if self.sign == NEGATIVE { -acc } else { acc })
    }

    /// The exact decimal text, with `dscale` decimal places (`NaN`, `Infinity` as such).
    pub(crate) fn to_text(&self) -> String {
        if let Some(s) = self.special() {
            return s.to_string();
        }
        let groups: Vec<i128> = self.groups().collect();
        let group_at = |exp: i32| -> i128 {
            let idx = i32::from(self.weight) - exp;
            if idx >= 0 && (idx as usize) < groups.len() {
                groups[idx as usize]
            } else {
                0
            }
        };
        let mut out = String::new();
        if self.sign == NEGATIVE && groups.iter().any(|g| *g != 0) {
            out.push('-');
        }
        if self.weight < 0 {
            out.push('0');
        } else {
            for exp in (0..=i32::from(self.weight)).rev() {
                let g = group_at(exp);
                if exp == i32::from(self.weight) {
                    out.push_str(&g.to_string());
                } else {
                    out.push_str(&format!("{g:04}"));
                }
            }
        }
        if self.dscale > 0 {
            out.push('.');
            let mut frac = String::new();
            let mut exp = -1;
            while frac.len() < usize::from(self.dscale) {
                frac.push_str(&format!("{:04}", group_at(exp)));
                exp -= 1;
            }
            frac.truncate(usize::from(self.dscale));
            out.push_str(&frac);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn decodes_exact_values_at_any_scale() {
        let v = encode(0, POSITIVE, 2, &[123, 4500]); // 123.45
        let n = Numeric::parse(&v).expect("parses");
        assert_eq!(n.to_text(), "123.45");
        assert_eq!(n.to_i128(15, 2), Ok(12345));
        assert_eq!(n.to_i128(15, 4), Ok(1234500));
        assert!(
            n.to_i128(15, 1)
                .expect_err("rounding")
                .contains("would be rounded")
        );

        let v = encode(-3, NEGATIVE, 10, &[100]); // -0.0000000001
        let n = Numeric::parse(&v).expect("parses");
        assert_eq!(n.to_text(), "-0.0000000001");
        assert_eq!(n.to_i128(38, 10), Ok(-1));

        // 38 digits with 10 decimals: the groups spell 40 digits (padding), which must not
        // overflow on the way.
        let v = encode(
            6,
            POSITIVE,
            10,
            &[1234, 5678, 9012, 3456, 7890, 1234, 5678, 123, 4567, 8900],
        );
        let n = Numeric::parse(&v).expect("parses");
        assert_eq!(n.to_text(), "1234567890123456789012345678.0123456789");
        assert_eq!(
            n.to_i128(38, 10),
            Ok(12345678901234567890123456780123456789)
        );

        // 99999999999999999999999999999999999999 (38 nines), scale 0
        let mut digits = vec![99];
        digits.extend(std::iter::repeat_n(9999, 9));
        let v = encode(9, POSITIVE, 0, &digits);
        let n = Numeric::parse(&v).expect("parses");
        assert_eq!(n.to_text(), "9".repeat(38));
        assert_eq!(n.to_i128(38, 0), Ok(10i128.pow(38) - 1));
        assert!(n.to_i128(37, 0).is_err());
    }

    #[test]
    fn zero_large_weights_and_specials() {
        let zero = encode(0, POSITIVE, 3, &[]);
        let n = Numeric::parse(&zero).expect("zero");
        assert_eq!((n.to_text(), n.to_i128(5, 3)), ("0.000".to_string(), Ok(0)));
        let v = encode(2, POSITIVE, 0, &[12]); // 12 × 10000² = 1200000000
        assert_eq!(Numeric::parse(&v).expect("p").to_text(), "1200000000");
        let nan = encode(0, NAN, 0, &[]);
        let nan = Numeric::parse(&nan).expect("nan");
        assert_eq!(nan.to_text(), "NaN");
        assert!(
            nan.to_i128(10, 2)
                .expect_err("nan")
                .contains("NaN cannot be stored")
        );
        let bad = encode(0, 0x1234, 0, &[]);
        assert!(Numeric::parse(&bad).is_err());
    }
}
