//! Parameter layouts: which named tensor sits where in a member's flat parameter vector,
//! and how each kind of entry is averaged.

use crate::Error;
use core::ops::Range;

/// What a tensor holds; decides how the rules combine it (see [`TensorKind::policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TensorKind {
    /// A convolution or linear weight.
    Weight,
    /// A convolution or linear bias.
    Bias,
    /// BatchNorm scale (gamma).
    BnScale,
    /// BatchNorm shift (beta).
    BnShift,
    /// BatchNorm running mean.
    BnRunningMean,
    /// BatchNorm running variance.
    BnRunningVar,
    /// An integer counter stored as a float (e.g. BatchNorm's `num_batches_tracked`).
    Counter,
    /// Anything else that should be averaged like a weight.
    Other,
}

/// How a rule combines one kind of entry across members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Policy {
    /// Weighted average (weights, biases, BatchNorm parameters and running statistics).
    Average,
    /// The largest value across the members (counters: averaging a step count is meaningless).
    Max,
}

impl TensorKind {
    /// The averaging policy of this kind: counters take the max, everything else is averaged
    /// (running statistics included, as the paper's code does).
    pub const fn policy(self) -> Policy {
        match self {
            TensorKind::Counter => Policy::Max,
            _ => Policy::Average,
        }
    }

    /// Whether an optimizer trains this kind (running statistics and counters are not trained).
    pub const fn trainable(self) -> bool {
        !matches!(
            self,
            TensorKind::BnRunningMean | TensorKind::BnRunningVar | TensorKind::Counter
        )
    }
}

/// One named tensor inside a member's parameter vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorSpec<'a> {
    /// Its name (e.g. `"conv1.weight"`).
    pub name: &'a str,
    /// Its shape, outermost first (`[out, in, kh, kw]` for a convolution weight).
    pub shape: &'a [usize],
    /// Index of its first element in the member's vector.
    pub offset: usize,
    /// What it holds.
    pub kind: TensorKind,
}

impl TensorSpec<'_> {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index range it covers in the member's vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// A checked list of tensors that tiles a member's vector `0..len` without gap or overlap.
///
/// ```
/// use papa_core::layout::{Layout, TensorKind, TensorSpec};
/// let tensors = [
///     TensorSpec { name: "fc.weight", shape: &[2, 3], offset: 0, kind: TensorKind::Weight },
///     TensorSpec { name: "fc.bias", shape: &[2], offset: 6, kind: TensorKind::Bias },
/// ];
/// let layout = Layout::new(&tensors).unwrap();
/// assert_eq!(layout.len(), 8);
/// assert_eq!(layout.find("fc.bias").unwrap().range(), 6..8);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Layout<'a> {
    tensors: &'a [TensorSpec<'a>],
    len: usize,
}

impl<'a> Layout<'a> {
    /// Checks that `tensors` are in order and tile `0..len` exactly.
    pub fn new(tensors: &'a [TensorSpec<'a>]) -> Result<Self, Error> {
        let mut end = 0;
        for (i, t) in tensors.iter().enumerate() {
            if t.offset != end {
                return Err(Error::BadLayout { tensor: i });
            }
            end = t
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .and_then(|n| n.checked_add(t.offset))
                .ok_or(Error::BadLayout { tensor: i })?;
        }
        Ok(Self { tensors, len: end })
    }

    /// Length of a member's vector.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the layout describes no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors, in order.
    pub fn tensors(&self) -> &'a [TensorSpec<'a>] {
        self.tensors
    }

    /// The tensor called `name`, if any.
    pub fn find(&self, name: &str) -> Option<&'a TensorSpec<'a>> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Maximal runs of consecutive tensors sharing a policy, in order: the segments a rule
    /// streams over.
    pub fn segments(&self) -> impl Iterator<Item = (Range<usize>, Policy)> + 'a {
        let tensors = self.tensors;
        let mut i = 0;
        core::iter::from_fn(move || {
            let first = tensors.get(i)?;
            let policy = first.kind.policy();
            let start = first.offset;
            let mut end = first.range().end;
            i += 1;
            while let Some(t) = tensors.get(i).filter(|t| t.kind.policy() == policy) {
                end = t.range().end;
                i += 1;
            }
            Some((start..end, policy))
        })
    }
}
