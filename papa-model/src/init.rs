//! PyTorch's default initialisation.

use crate::plan::Op;
use crate::ModelError;
use papa_core::layout::TensorKind;
use papa_core::rng::Rng;
use papa_core::LengthMismatch;

/// Initialises the tensors of `ops` in `member` with PyTorch's defaults: conv and linear
/// weight and bias `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (what `kaiming_uniform_(a = sqrt(5))`
/// gives; `fan_in` is the weight's size per output channel), BatchNorm scale 1, shift 0,
/// running mean 0, running variance 1, counter 0. Values are drawn from `rng` in op order,
/// each weight before its bias, so a seed fixes the member.
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
        // A bias takes the bound of the weight before it.
        let mut bound = 0.0;
        for t in op.tensors() {
            let values = tensor(member, t.offset, t.shape.numel())?;
            let fill = match t.kind {
                TensorKind::Weight | TensorKind::Bias => {
                    if t.kind == TensorKind::Weight {
                        let fan_in: usize = t.shape.as_slice()[1..].iter().product();
                        bound = 1.0 / libm::sqrtf(fan_in as f32);
                    }
                    for v in values {
                        *v = bound * (2.0 * rng.uniform_f32() - 1.0);
                    }
                    continue;
                }
                TensorKind::BnScale | TensorKind::BnRunningVar => 1.0,
                TensorKind::BnShift
                | TensorKind::BnRunningMean
                | TensorKind::Counter
                | TensorKind::Other => 0.0,
            };
            values.fill(fill);
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
