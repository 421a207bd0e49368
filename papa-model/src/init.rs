//! PyTorch's default initialisation.

use crate::plan::{ConvLayer, LinearLayer, Op};
use crate::ModelError;
use papa_core::rng::Rng;
use papa_core::LengthMismatch;

/// Initialises the tensors of `ops` in `member` with PyTorch's defaults: conv and linear
/// weight and bias `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (what `kaiming_uniform_(a = sqrt(5))`
/// gives), BatchNorm scale 1, shift 0, running mean 0, running variance 1, counter 0.
/// Values are drawn from `rng` in op order, each weight before its bias, so a seed fixes the
/// member.
///
/// Fails with [`ModelError::Length`] when a tensor lies beyond `member`.
///
/// ```
/// use papa_core::rng::Rng;
/// use papa_model::init::init_ops;
/// use papa_model::plan::{LinearLayer, Op};
/// let fc = Op::Linear(LinearLayer { fin: 4, fout: 2, weight: 0, bias: 8 });
/// let mut member = [0.0f32; 10];
/// init_ops(&[fc], &mut Rng::new(1), &mut member)?;
/// assert!(member.iter().all(|v| v.abs() <= 0.5)); // 1 / sqrt(fan_in = 4)
/// # Ok::<(), papa_model::ModelError>(())
/// ```
pub fn init_ops<'o>(
    ops: impl IntoIterator<Item = &'o Op>,
    rng: &mut Rng,
    member: &mut [f32],
) -> Result<(), ModelError> {
    for op in ops {
        let (fan_in, fout, weight, bias) = match *op {
            Op::Conv(ConvLayer {
                cin,
                cout,
                kernel,
                weight,
                bias,
                ..
            }) => (cin * kernel * kernel, cout, weight, bias),
            Op::Linear(LinearLayer {
                fin,
                fout,
                weight,
                bias,
            }) => (fin, fout, weight, bias),
            Op::BatchNorm {
                c,
                scale,
                shift,
                mean,
                var,
                count,
                ..
            } => {
                for (offset, len, value) in [
                    (scale, c, 1.0),
                    (shift, c, 0.0),
                    (mean, c, 0.0),
                    (var, c, 1.0),
                    (count, 1, 0.0),
                ] {
                    tensor(member, offset, len)?.fill(value);
                }
                continue;
            }
            _ => continue,
        };
        let bound = 1.0 / libm::sqrtf(fan_in as f32);
        for (offset, len) in [(weight, fout * fan_in), (bias, fout)] {
            for v in tensor(member, offset, len)? {
                *v = bound * (2.0 * rng.uniform_f32() - 1.0);
            }
        }
    }
    Ok(())
}

/// `member[offset..offset + len]`, or the length `member` would need.
fn tensor(member: &mut [f32], offset: usize, len: usize) -> Result<&mut [f32], LengthMismatch> {
    let found = member.len();
    let end = offset.saturating_add(len);
    member.get_mut(offset..end).ok_or(LengthMismatch {
        what: "member",
        expected: end,
        found,
    })
}
