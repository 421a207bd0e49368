//! The quantiser against independent references: TFLM's fixed-point arithmetic against an
//! exact i128 re-derivation and against the f64 real multiplication, hand-computed cases
//! from gemmlowp/TFLM's definitions, and the tensor quantisers against their error bounds.

use papa_edge::quant::{
    quantize_bias, quantize_weights, requantization_multipliers, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul as srdhm, QuantParams, QuantizedLayer,
    QuantizedMultiplier, Range,
};
use proptest::prelude::*;

/// `num / 2^k` rounded to nearest, ties away from zero, in exact integer arithmetic.
fn div_pow2_round_away(num: i128, k: u32) -> i128 {
    let d = 1i128 << k;
    let (q, r) = (num / d, num % d);
    // |r| >= d / 2 rounds away from zero.
    if 2 * r.abs() >= d {
        q + num.signum()
    } else {
        q
    }
}

/// `floor((num + 2^(k-1)) / 2^k)`: to nearest, ties upward, in exact integer arithmetic.
fn div_pow2_round_up(num: i128, k: u32) -> i128 {
    (num + (1i128 << (k - 1))).div_euclid(1i128 << k)
}

/// MultiplyByQuantizedMultiplier derived from its definition, exactly: `x * 2^left` (wrapped
/// to i32 as TFLM's int32 product), the doubling high multiply as `2ab / 2^32` to nearest
/// (gemmlowp's nudge and truncating division send ties upward: 1.5 to 2, -1.5 to -1;
/// saturated), then a rounding right shift (ties away from zero).
fn reference_mbqm(x: i32, m: QuantizedMultiplier) -> i32 {
    let left = m.shift().max(0) as u32;
    let right = (-m.shift()).max(0) as u32;
    let a = x.wrapping_mul(1 << left);
    let high = div_pow2_round_up(i128::from(a) * i128::from(m.multiplier()), 31);
    let high = high.clamp(i32::MIN.into(), i32::MAX.into());
    div_pow2_round_away(high, right) as i32
}

#[test]
fn hand_computed_tflm_cases() {
    // QuantizeMultiplier: frexp, round(q * 2^31), renormalise, flush below 2^-32.
    let qm = |r: f64| {
        let m = QuantizedMultiplier::from_real(r).unwrap();
        (m.multiplier(), m.shift())
    };
    assert_eq!(qm(0.5), (1 << 30, 0));
    assert_eq!(qm(1.0), (1 << 30, 1));
    assert_eq!(qm(0.75), (1_610_612_736, 0));
    assert_eq!(qm(0.1), (1_717_986_918, -3)); // round(0.8 * 2^31 = 1717986918.4)
    assert_eq!(qm(1.0 - 2f64.powi(-40)), (1 << 30, 1)); // rounds up to 2^31: renormalised
    assert_eq!(qm(2f64.powi(-32)), (1 << 30, -31)); // the smallest kept
    assert_eq!(qm(2f64.powi(-33)), (0, 0)); // flushed to zero
    assert_eq!(qm(0.0), (0, 0));
    assert!(QuantizedMultiplier::from_real(-0.5).is_err());
    assert!(QuantizedMultiplier::from_real(f64::NAN).is_err());
    assert!(QuantizedMultiplier::from_real(2f64.powi(30)).is_err());
    assert!(QuantizedMultiplier::from_real(2f64.powi(30) * 0.99).is_ok());

    // gemmlowp's SaturatingRoundingDoublingHighMul.
    assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
    assert_eq!(srdhm(i32::MAX, i32::MAX), i32::MAX - 1);
    assert_eq!(srdhm(1 << 30, 1 << 30), 1 << 29);
    assert_eq!(srdhm(1 << 30, -(1 << 30)), -(1 << 29));
    assert_eq!(srdhm(3, 1 << 30), 2); // 1.5 rounds up
    assert_eq!(srdhm(-3, 1 << 30), -1); // -1.5: the nudge 1 - 2^30 sends ties upward
    assert_eq!(srdhm(1, 1 << 30), 1); // 0.5 rounds up
    assert_eq!(srdhm(-1, 1 << 30), 0); // -0.5
    assert_eq!(srdhm(-5, 1 << 30), -2); // -2.5
    assert_eq!(srdhm(0, i32::MIN), 0);

    // gemmlowp's RoundingDivideByPOT.
    assert_eq!(rounding_divide_by_pot(12, 2), 3);
    assert_eq!(rounding_divide_by_pot(10, 2), 3); // 2.5
    assert_eq!(rounding_divide_by_pot(-10, 2), -3);
    assert_eq!(rounding_divide_by_pot(9, 2), 2); // 2.25
    assert_eq!(rounding_divide_by_pot(-9, 2), -2);
    assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
    assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
    assert_eq!(rounding_divide_by_pot(7, 0), 7);

    // MultiplyByQuantizedMultiplier: 0.1 * 1000 = 100, 0.75 * -7 = -5.25, 3 * 5 (left shift).
    let m = |r: f64| QuantizedMultiplier::from_real(r).unwrap();
    assert_eq!(m(0.1).apply(1000), 100);
    assert_eq!(m(0.75).apply(-7), -5);
    assert_eq!(m(3.0).apply(5), 15);
    assert_eq!(m(0.5).apply(-3), -1); // -1.5 in the high multiply: upward
    assert_eq!(m(0.25).apply(-6), -2); // -1.5 in the right shift: away from zero
    assert_eq!(m(0.0).apply(123_456), 0);
    assert!(QuantizedMultiplier::new(1 << 29, 0).is_err());
    assert!(QuantizedMultiplier::new(1 << 30, 31).is_err());
    assert_eq!(QuantizedMultiplier::new(1 << 30, -1).unwrap(), m(0.25));
}

/// A real multiplier, log-uniform over what requantisation meets (2^-31 to 2^8).
fn multiplier() -> impl Strategy<Value = f64> {
    (-31.0f64..8.0).prop_map(|e| 2f64.powf(e))
}

proptest! {
    #[test]
    fn mbqm_is_its_exact_definition(real in multiplier(), x in any::<i32>()) {
        let m = QuantizedMultiplier::from_real(real).unwrap();
        prop_assert_eq!(m.apply(x), reference_mbqm(x, m));
    }

    #[test]
    fn mbqm_is_within_one_of_the_real_product(real in multiplier(), x in -(1i32 << 22)..(1 << 22)) {
        let m = QuantizedMultiplier::from_real(real).unwrap();
        // The stored multiplier: relative error at most 2^-31 (one rounding of a Q31 value
        // in [0.5, 1)), unless flushed.
        if m.multiplier() != 0 {
            prop_assert!(((m.to_real() - real) / real).abs() <= 2f64.powi(-31));
            prop_assert!((1 << 30..=i32::MAX).contains(&m.multiplier()));
        }
        let exact = f64::from(x) * real;
        let got = f64::from(m.apply(x));
        // Two roundings of at most 1/2 each, plus the multiplier's own rounding.
        prop_assert!((got - exact).abs() <= 1.0 + exact.abs() * 2f64.powi(-30), "{x} * {real}: {got} vs {exact}");
    }

    #[test]
    fn activation_params_cover_the_range(min in -50.0f32..10.0, width in 1e-3f32..100.0, t in 0.0f32..1.0) {
        let max = min + width;
        let p = QuantParams::from_range(Range::new(min, max)).unwrap();
        // Real 0 is exact; the range, widened to hold 0, fits the int8 grid.
        prop_assert_eq!(p.dequantize(p.zero_point()), 0.0);
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let s = p.scale();
        prop_assert!(((hi - lo) / 255.0 - s).abs() <= 1e-6 * s.max(1.0));
        prop_assert!(p.dequantize(-128) <= lo + s, "{} vs {lo}", p.dequantize(-128));
        prop_assert!(p.dequantize(127) >= hi - s, "{} vs {hi}", p.dequantize(127));
        // Any value of the range comes back within about half a step (one after nudging).
        let x = lo + t * (hi - lo);
        prop_assert!((p.dequantize(p.quantize(x)) - x).abs() <= 1.01 * s, "{x}");
    }

    #[test]
    fn weights_are_per_channel(w in prop::collection::vec(-1.0f32..1.0, 12), k in -6i32..6) {
        // Channel 1 scaled by 10^k: its ints are unchanged, channel 0's untouched.
        let mut scaled = w.clone();
        for v in &mut scaled[6..] {
            *v *= 10f32.powi(k);
        }
        let (mut q, mut s) = ([0i8; 12], [0f32; 2]);
        let (mut q2, mut s2) = ([0i8; 12], [0f32; 2]);
        quantize_weights(&w, 2, &mut q, &mut s).unwrap();
        quantize_weights(&scaled, 2, &mut q2, &mut s2).unwrap();
        prop_assert_eq!(&q[..6], &q2[..6]);
        prop_assert_eq!(s[0], s2[0]);
        for c in 0..2 {
            for i in 0..6 {
                let (v, q) = (scaled[6 * c + i], q2[6 * c + i]);
                prop_assert!(q != i8::MIN);
                prop_assert!((f32::from(q) * s2[c] - v).abs() <= 0.5001 * s2[c], "{v} {q} {}", s2[c]);
            }
            let row = &scaled[6 * c..6 * c + 6];
            if row.iter().any(|&v| v != 0.0) {
                prop_assert_eq!(q2[6 * c..6 * c + 6].iter().map(|q| q.abs()).max(), Some(127));
            }
        }
    }

    #[test]
    fn biases_are_at_the_product_scale(b in prop::collection::vec(-10.0f32..10.0, 3), si in 1e-3f32..1.0) {
        let ws = [0.01f32, 0.5, 1e-4];
        let (mut q, mut s) = ([0i32; 3], [0f32; 3]);
        quantize_bias(&b, si, &ws, &mut q, &mut s).unwrap();
        for c in 0..3 {
            prop_assert_eq!(s[c], si * ws[c]);
            prop_assert!((f64::from(q[c]) * f64::from(s[c]) - f64::from(b[c])).abs() <= 0.5 * f64::from(s[c]) * 1.0001);
        }
    }
}

#[test]
fn bad_tensors_are_errors_not_panics() {
    let (mut q, mut s) = ([0i8; 4], [0f32; 2]);
    assert!(quantize_weights(&[1.0, 2.0, 3.0], 2, &mut q[..3], &mut s).is_err()); // not whole rows
    assert!(quantize_weights(&[1.0; 4], 2, &mut q, &mut s[..1]).is_err());
    assert!(quantize_weights(&[1.0, f32::NAN, 0.0, 0.0], 2, &mut q, &mut s).is_err());
    assert!(quantize_weights(&[], 0, &mut [], &mut []).is_err());
    let (mut qb, mut sb) = ([0i32; 1], [0f32; 1]);
    assert!(quantize_bias(&[1e30], 1e-6, &[1e-6], &mut qb, &mut sb).is_err()); // beyond int32
    assert!(quantize_bias(&[1.0], 0.0, &[1.0], &mut qb, &mut sb).is_err());
    assert!(QuantParams::from_range(Range::EMPTY).is_err());
    assert!(QuantParams::from_range(Range::new(f32::NAN, 1.0)).is_err());
    assert!(QuantParams::from_range(Range::new(0.0, f32::INFINITY)).is_err());
    let mut r = Range::EMPTY;
    r.observe(&[1.0, f32::NAN]);
    assert!(QuantParams::from_range(r).is_err()); // a NaN is not hidden
    assert_eq!(
        QuantParams::from_range(Range::new(0.0, 0.0))
            .unwrap()
            .scale(),
        1.0
    );
    let mut m = [QuantizedMultiplier::ZERO; 1];
    assert!(requantization_multipliers(1.0, &[1e10], 1e-10, &mut m).is_err());
}

/// An integer linear layer (TFLM's reference arithmetic) against the f64 real layer it
/// quantises: within a few output steps on every output, for random layers and inputs.
#[test]
fn an_integer_layer_approximates_its_real_layer() {
    let mut rng = papa_core::rng::Rng::new(11);
    let mut u = move || f64::from(rng.uniform_f32());
    for trial in 0..50 {
        let (fin, fout) = (16, 5);
        // Channels of very different magnitudes, as after BatchNorm folding.
        let w: Vec<f32> = (0..fin * fout)
            .map(|i| ((u() - 0.5) * 10f64.powi((i / fin) as i32 - 2)) as f32)
            .collect();
        let b: Vec<f32> = (0..fout).map(|_| (u() - 0.5) as f32 * 0.1).collect();
        let x: Vec<f32> = (0..fin).map(|_| (u() * 4.0 - 1.0) as f32).collect();
        let mut input = Range::EMPTY;
        input.observe(&x);
        let real: Vec<f64> = (0..fout)
            .map(|c| {
                (0..fin)
                    .map(|i| f64::from(w[c * fin + i]) * f64::from(x[i]))
                    .sum::<f64>()
                    + f64::from(b[c])
            })
            .collect();
        let relu = trial % 2 == 0;
        let real: Vec<f64> = real
            .iter()
            .map(|&v| if relu { v.max(0.0) } else { v })
            .collect();
        let mut output = Range::EMPTY;
        output.observe(&real.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let (pi, po) = (
            QuantParams::from_range(input).unwrap(),
            QuantParams::from_range(output).unwrap(),
        );
        let layer = QuantizedLayer::new(&w, &b, pi, po, relu).unwrap();
        let xq: Vec<i8> = x.iter().map(|&v| pi.quantize(v)).collect();
        let y = layer.forward_one(&xq).unwrap();
        for c in 0..fout {
            // Error budget: the input's rounding (half a step each, through |w|), the
            // weights' (half a step each, through |x|), the output's rounding.
            let budget: f64 = (0..fin)
                .map(|i| {
                    0.5 * f64::from(pi.scale()) * f64::from(w[c * fin + i]).abs()
                        + 0.5 * f64::from(layer.weight_scales[c]) * f64::from(x[i]).abs()
                })
                .sum::<f64>()
                + f64::from(po.scale());
            let got = f64::from(po.dequantize(y[c]));
            assert!(
                (got - real[c]).abs() <= budget + 1e-6,
                "trial {trial}, channel {c}: {got} vs {} (budget {budget})",
                real[c]
            );
        }
    }
}
