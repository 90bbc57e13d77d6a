//! Resource quantities as apimachinery's `resource.Quantity` parses, rounds and prints them:
//! `500m`, `2`, `1.5`, `8Gi`, `12e6`. The API server keeps the string a client sent when it is
//! already canonical (even `+1`), and rewrites it otherwise (`0.5` → `500m`, `1024Mi` → `1Gi`).

use std::cmp::Ordering;
use std::fmt;

/// The regular expression apimachinery names when a quantity does not parse.
const FORMAT_WRONG: &str = "quantities must match the regular expression \
                            '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const NUMERIC: &str = "unable to parse numeric part of quantity";
const SUFFIX: &str = "unable to parse quantity's suffix";

/// How a quantity is written back: the kind of suffix it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::DecimalSI => "DecimalSI",
            Format::BinarySI => "BinarySI",
            Format::DecimalExponent => "DecimalExponent",
        }
    }
}

/// A parsed quantity: its exact value in thousandths once rounded (every quantity of a pod is
/// rounded up to milli scale by the API server's defaults), and what it prints as.
#[derive(Clone, Debug)]
pub(crate) struct Quantity {
    /// The value times 10^9 (nano units), rounded up (away from zero) at the last digit.
    nanos: i128,
    format: Format,
    /// The string as sent, kept when it was canonical already.
    cached: Option<String>,
    /// `(value, scale)` of the int64 fast path, or `None` when parsed as a big decimal.
    fast: Option<(i64, i32)>,
}

/// Why a string is not a quantity, in apimachinery's words.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParseError(pub &'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

struct Parts<'a> {
    positive: bool,
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

/// apimachinery's `parseQuantityString`: sign, digits (leading zeros dropped), fraction, suffix.
fn split(s: &str) -> Result<Parts<'_>, ParseError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    if let Some(&c) = b.first() {
        if c == b'-' || c == b'+' {
            positive = c == b'+';
            pos = 1;
        }
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Ok(Parts {
            positive,
            num: "0",
            denom: "",
            suffix: "",
        });
    }
    let digits = |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let num_end = digits(pos);
    let num = if num_end == pos {
        "0"
    } else {
        &s[pos..num_end]
    };
    pos = num_end;
    let mut denom = "";
    if pos < end && b[pos] == b'.' {
        let d_end = digits(pos + 1);
        denom = &s[pos + 1..d_end];
        pos = d_end;
    }
    let suffix_start = pos;
    pos += b[pos..]
        .iter()
        .take_while(|c| b"eEinumkKMGTP".contains(c))
        .count();
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    if digits(pos) != end {
        return Err(ParseError(FORMAT_WRONG));
    }
    Ok(Parts {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// Base, exponent and format of a suffix (`quantitySuffixer.interpret`).
fn interpret(suffix: &str) -> Option<(u32, i32, Format)> {
    let decimal = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
    if let Some(i) = decimal.iter().position(|s| *s == suffix) {
        return Some((10, (i as i32 - 3) * 3, Format::DecimalSI));
    }
    let binary = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if let Some(i) = binary.iter().position(|s| *s == suffix) {
        return Some((2, (i as i32 + 1) * 10, Format::BinarySI));
    }
    let rest = suffix.strip_prefix(['e', 'E']).filter(|r| !r.is_empty())?;
    let exp: i64 = rest.strip_prefix('+').unwrap_or(rest).parse().ok()?;
    Some((10, exp as i32, Format::DecimalExponent))
}

fn pow10(n: u32) -> i128 {
    10i128.checked_pow(n).unwrap_or(i128::MAX)
}

/// `x / 10^n`, rounded away from zero.
fn div_up(x: i128, n: u32) -> i128 {
    let d = pow10(n);
    let q = x / d;
    if x % d == 0 {
        q
    } else {
        q + x.signum()
    }
}

impl Quantity {
    /// Parses as `resource.ParseQuantity` does, then rounds up to milli scale as the API
    /// server's defaults do for every container resource.
    pub fn parse(s: &str) -> Result<Quantity, ParseError> {
        let mut q = Quantity::parse_exact(s)?;
        q.round_up_milli();
        Ok(q)
    }

    fn parse_exact(s: &str) -> Result<Quantity, ParseError> {
        if s.is_empty() {
            return Err(ParseError(FORMAT_WRONG));
        }
        if s == "0" {
            return Ok(Quantity {
                nanos: 0,
                format: Format::DecimalSI,
                cached: Some(s.into()),
                fast: Some((0, 0)),
            });
        }
        let p = split(s)?;
        let (base, exponent, mut format) = interpret(p.suffix).ok_or(ParseError(SUFFIX))?;
        let digits = (p.num.len() + p.denom.len()) as i32;
        let (mut scale, mantissa, precision) = match format {
            Format::BinarySI if p.denom.is_empty() => {
                let precision = 15 - p.num.len() as i32 - (exponent as f32 * 3.0 / 10.0) as i32 - 1;
                (0, 1i64 << exponent, precision)
            }
            Format::BinarySI => (0, 1, -1),
            _ => (exponent, 1, 18 - digits),
        };
        let shifted = format!("{}{}", p.num, p.denom);
        if precision >= 0 {
            scale -= p.denom.len() as i32;
            if scale >= -9 {
                let value: i64 = shifted.parse().map_err(|_| ParseError(NUMERIC))?;
                if let Some(mut result) = value.checked_mul(mantissa) {
                    if !p.positive {
                        result = -result;
                    }
                    let canonical = match format {
                        Format::BinarySI => exponent % 10 == 0 && value & 7 != 0,
                        _ => {
                            scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0')
                        }
                    };
                    let nanos = i128::from(result).saturating_mul(pow10((scale + 9) as u32));
                    return Ok(Quantity {
                        nanos,
                        format,
                        cached: canonical.then(|| s.to_string()),
                        fast: Some((result, scale)),
                    });
                }
            }
        }
        // The big-decimal path: exact, then rounded up to nano units.
        let unscaled: i128 = shifted.parse().unwrap_or(i128::MAX);
        let mut nanos = if base == 10 {
            let shift = exponent - p.denom.len() as i32 + 9;
            if shift >= 0 {
                unscaled.saturating_mul(pow10(shift as u32))
            } else {
                div_up(unscaled, (-shift) as u32)
            }
        } else {
            let value = unscaled
                .saturating_mul(1i128 << exponent)
                .saturating_mul(pow10(9));
            div_up(value, p.denom.len() as u32)
        };
        let max = i128::from(i64::MAX) * pow10(9);
        if format == Format::BinarySI {
            nanos = nanos.min(max);
            if nanos > 0 && nanos < pow10(9) {
                format = Format::DecimalSI;
            }
        }
        if !p.positive {
            nanos = -nanos;
        }
        Ok(Quantity {
            nanos,
            format,
            cached: None,
            fast: None,
        })
    }

    /// `Quantity.RoundUp(-3)`: finer values lose their cached string.
    fn round_up_milli(&mut self) {
        let rounded = div_up(self.nanos, 6) * pow10(6);
        match &mut self.fast {
            Some((_, scale)) if *scale >= -3 => {}
            Some((value, scale)) => {
                *value = i64::try_from(div_up(i128::from(*value), (-3 - *scale) as u32))
                    .unwrap_or(i64::MAX);
                *scale = -3;
                self.cached = None;
            }
            None => self.cached = None,
        }
        self.nanos = rounded;
    }

    /// The value in thousandths (exact after rounding).
    pub fn millis(&self) -> i128 {
        self.nanos / pow10(6)
    }

    /// `Value()`: whole units, rounded up.
    pub fn value(&self) -> i128 {
        div_up(self.nanos, 9)
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// `q.MilliValue() % 1000 == 0`: whether an extended resource may have this quantity.
    pub fn is_whole(&self) -> bool {
        self.millis() % 1000 == 0
    }

    /// How Go's `%#v` prints the quantity (`field.Invalid` with a `Quantity` value does).
    pub fn go_syntax(&self) -> String {
        let (value, scale, dec) = match self.fast {
            Some((value, scale)) => (value, scale, "(*inf.Dec)(nil)"),
            None => (0, 0, "(*inf.Dec)(0xc000b2c0a0)"),
        };
        format!(
            "resource.Quantity{{i:resource.int64Amount{{value:{value}, scale:{scale}}}, \
             d:resource.infDecAmount{{Dec:{dec}}}, s:{:?}, Format:{:?}}}",
            self.cached.as_deref().unwrap_or(""),
            self.format.as_str()
        )
    }

    /// `CanonicalizeBytes`: the largest suffix that loses nothing.
    fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let mut format = self.format;
        if format == Format::BinarySI {
            let whole = self.nanos % pow10(9) == 0;
            if self.nanos.abs() < 1024 * pow10(9) || !whole {
                format = Format::DecimalSI;
            }
        }
        if format == Format::BinarySI {
            let mut amount = self.nanos / pow10(9);
            let mut exp = 0;
            while amount % 1024 == 0 && exp < 6 {
                amount /= 1024;
                exp += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
            return format!("{amount}{suffix}");
        }
        let mut amount = self.nanos;
        let mut exp: i32 = -9;
        while amount % 10 == 0 {
            amount /= 10;
            exp += 1;
        }
        while exp.rem_euclid(3) != 0 {
            amount *= 10;
            exp -= 1;
        }
        let suffix = match format {
            Format::DecimalExponent if exp == 0 => String::new(),
            Format::DecimalExponent => format!("e{exp}"),
            _ => match exp {
                -9 => "n".into(),
                -6 => "u".into(),
                -3 => "m".into(),
                3 => "k".into(),
                6 => "M".into(),
                9 => "G".into(),
                12 => "T".into(),
                15 => "P".into(),
                18 => "E".into(),
                _ => String::new(),
            },
        };
        format!("{amount}{suffix}")
    }
}

impl fmt::Display for Quantity {
    /// What the API server writes back: the sent string if it was canonical, else the
    /// canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cached {
            Some(s) => f.write_str(s),
            None => f.write_str(&self.canonical()),
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Quantity) -> bool {
        self.nanos == other.nanos
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Quantity) -> Option<Ordering> {
        Some(self.nanos.cmp(&other.nanos))
    }
}

#[cfg(test)]
mod tests;
