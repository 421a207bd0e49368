//! Fixed-point requantisation exactly as TensorFlow Lite Micro does it (the reference
//! kernels' `QuantizeMultiplier` and `MultiplyByQuantizedMultiplier`, built on gemmlowp's
//! `SaturatingRoundingDoublingHighMul` and `RoundingDivideByPOT`): two roundings, not the
//! single-rounding variant CMSIS-NN offers under a build flag.

use super::QuantError;

/// A real multiplier `M` as TFLM stores it: `M ~= multiplier * 2^shift / 2^31`, with
/// `multiplier` in `[2^30, 2^31)` (Q31 of a value in `[0.5, 1)`), or `0` for `M = 0`.
///
/// ```
/// use papa_edge::quant::QuantizedMultiplier;
/// let m = QuantizedMultiplier::from_real(0.1)?; // 0.1 = 0.8 * 2^-3
/// assert_eq!((m.multiplier(), m.shift()), (1_717_986_918, -3)); // round(0.8 * 2^31)
/// assert_eq!(m.apply(1000), 100);
/// assert_eq!(m.apply(-15), -2); // -1.5 rounds away from zero
/// # Ok::<(), papa_edge::quant::QuantError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantizedMultiplier {
    multiplier: i32,
    shift: i32,
}

impl QuantizedMultiplier {
    /// The largest left shift [`QuantizedMultiplier::apply`] takes (TFLM shifts `x` left by a
    /// positive shift before the multiply: beyond 30 every input but 0 overflows).
    pub const MAX_SHIFT: i32 = 30;
    /// The smallest shift: a right shift of more than 31 leaves nothing (TFLM flushes such a
    /// multiplier to zero).
    pub const MIN_SHIFT: i32 = -31;

    /// TFLM's `QuantizeMultiplier(double_multiplier, &multiplier, &shift)`: `frexp` gives
    /// `M = q * 2^shift` with `q` in `[0.5, 1)`; `multiplier = round(q * 2^31)` (half away
    /// from zero), renormalised when that rounds up to `2^31`; a multiplier whose shift is
    /// below -31 (`M < ~2^-32`) becomes `0` with shift 0.
    ///
    /// Refuses a negative, NaN or infinite `real`, and one of `2^30` or more (its left
    /// shift would overflow every non-zero input).
    pub fn from_real(real: f64) -> Result<Self, QuantError> {
        if !real.is_finite() || real < 0.0 {
            return Err(QuantError::Multiplier { real });
        }
        if real == 0.0 {
            return Ok(Self::ZERO);
        }
        let (q, mut shift) = frexp(real);
        let mut fixed = round_half_away(q * TWO_POW_31);
        if fixed == TWO_POW_31 {
            fixed /= 2.0;
            shift += 1;
        }
        if shift < Self::MIN_SHIFT {
            return Ok(Self::ZERO);
        }
        if shift > Self::MAX_SHIFT {
            return Err(QuantError::Multiplier { real });
        }
        // q in [0.5, 1): fixed in [2^30, 2^31), an i32.
        Ok(QuantizedMultiplier {
            multiplier: fixed as i32,
            shift,
        })
    }

    /// The multiplier of 0.
    pub const ZERO: QuantizedMultiplier = QuantizedMultiplier {
        multiplier: 0,
        shift: 0,
    };

    /// A stored pair, checked: `multiplier` in `[2^30, 2^31)` (or 0 with shift 0) and
    /// `shift` in [`MIN_SHIFT`](Self::MIN_SHIFT)`..=`[`MAX_SHIFT`](Self::MAX_SHIFT).
    pub fn new(multiplier: i32, shift: i32) -> Result<Self, QuantError> {
        let normalised = multiplier >= 1 << 30 || (multiplier == 0 && shift == 0);
        if !normalised || !(Self::MIN_SHIFT..=Self::MAX_SHIFT).contains(&shift) {
            return Err(QuantError::StoredMultiplier { multiplier, shift });
        }
        Ok(QuantizedMultiplier { multiplier, shift })
    }

    /// The Q31 mantissa.
    pub fn multiplier(self) -> i32 {
        self.multiplier
    }

    /// The power of two (positive: a left shift of the input first; negative: a rounding
    /// right shift of the product).
    pub fn shift(self) -> i32 {
        self.shift
    }

    /// The real multiplier it stands for, `multiplier * 2^(shift - 31)` (exact in f64).
    pub fn to_real(self) -> f64 {
        f64::from(self.multiplier) * pow2(self.shift - 31)
    }

    /// TFLM's `MultiplyByQuantizedMultiplier(x, multiplier, shift)`:
    /// `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^left, multiplier),
    /// right)`, `left = max(shift, 0)`, `right = max(-shift, 0)`. `x * 2^left` wraps on
    /// overflow (two's complement, what the C++ does on every target TFLM runs on).
    pub fn apply(self, x: i32) -> i32 {
        let left = self.shift.max(0);
        let right = (-self.shift).max(0);
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(x.wrapping_mul(1 << left), self.multiplier),
            right,
        )
    }
}

/// 2^31 as f64.
const TWO_POW_31: f64 = 2_147_483_648.0;

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: the high 32 bits of `2 * a * b`, rounded
/// to nearest (the nudge is `2^30` for a non-negative product, `1 - 2^30` for a negative
/// one, then a division truncating toward zero: ties go upward, 1.5 to 2 and -1.5 to -1),
/// saturating the one case that overflows (`a = b = i32::MIN`) to `i32::MAX`.
///
/// ```
/// use papa_edge::quant::saturating_rounding_doubling_high_mul as srdhm;
/// assert_eq!(srdhm(1 << 30, 1 << 30), 1 << 29); // 0.5 * 0.5 in Q31
/// assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
/// ```
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == b && a == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // |ab + nudge| / 2^31 < 2^31 except in the case above: the quotient is an i32.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent` rounded to nearest, ties away from
/// zero. `exponent` is clamped to `0..=31` (gemmlowp asserts that range).
///
/// ```
/// use papa_edge::quant::rounding_divide_by_pot as rdbpot;
/// assert_eq!((rdbpot(5, 1), rdbpot(-5, 1), rdbpot(7, 2), rdbpot(-6, 2)), (3, -3, 2, -2));
/// ```
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let exponent = exponent.clamp(0, 31);
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// `x` rounded to an integer, halves away from zero (C's `round`, TFLM's `TfLiteRound`),
/// without `std`.
pub(crate) fn round_half_away(x: f64) -> f64 {
    let t = trunc(x);
    let frac = x - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// `x` truncated toward zero, without `std` (exact for every f64).
fn trunc(x: f64) -> f64 {
    // From 2^52 on every f64 is an integer.
    if x.abs() >= 4_503_599_627_370_496.0 || x == 0.0 {
        return x;
    }
    let t = x as i64 as f64;
    if t == 0.0 && x < 0.0 {
        -0.0
    } else {
        t
    }
}

/// `2^e` for `e` in the f64 normal range (exact).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// C's `frexp` for a positive, finite, normal or subnormal `x`: `(q, e)` with `x = q * 2^e`,
/// `q` in `[0.5, 1)`.
fn frexp(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: scale into the normal range first.
        let (q, e) = frexp(x * pow2(64));
        return (q, e - 64);
    }
    let q = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (q, exp - 1022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_matches_the_definition() {
        for &x in &[1.0, 0.5, 0.75, 3.0, 1e-300, 5e-324, 1e300, 0.1, 123.456] {
            let (q, e) = frexp(x);
            assert!((0.5..1.0).contains(&q), "{x}: {q}");
            // q * 2^e == x, computed in two steps to stay in range.
            let back = q * pow2(e / 2) * pow2(e - e / 2);
            assert_eq!(back, x, "{x}");
        }
    }

    #[test]
    fn rounding_matches_c_round() {
        for (x, r) in [
            (0.5, 1.0),
            (-0.5, -1.0),
            (1.5, 2.0),
            (2.5, 3.0),
            (-2.5, -3.0),
            (0.49999999999999994, 0.0),
            (-1.2, -1.0),
            (1e17, 1e17),
        ] {
            assert_eq!(round_half_away(x), r, "{x}");
        }
    }
}
