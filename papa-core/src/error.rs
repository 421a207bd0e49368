//! The one error type of papa-core: every bad input is reported, never panicked on.

use core::fmt;

/// What was wrong with an input, and where.
///
/// Every fallible function of papa-core returns this; none of them panics on bad input.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A population, weight list or soup had no member.
    EmptyPopulation,
    /// A slice had the wrong length.
    LengthMismatch {
        /// Which argument was wrong (e.g. `"member"`, `"out"`, `"weights"`).
        what: &'static str,
        /// The index of the offending item when the argument is a list (e.g. the member).
        index: Option<usize>,
        /// The length that was needed.
        expected: usize,
        /// The length that was given.
        found: usize,
    },
    /// A weight was negative (or NaN).
    NegativeWeight {
        /// Position of the weight.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// The weights did not sum to 1 within [`WEIGHT_SUM_TOLERANCE`](crate::WEIGHT_SUM_TOLERANCE).
    WeightsDoNotSumToOne {
        /// Their sum.
        sum: f32,
    },
    /// The PAPA gradual coefficient was outside `[0, 1]` (or NaN).
    AlphaOutOfRange {
        /// The value given.
        alpha: f32,
    },
    /// A parent index of a PAPA-2 pair was not a member of the population.
    PairOutOfRange {
        /// The child whose pair was wrong.
        child: usize,
        /// The parent index given.
        parent: usize,
        /// The number of members.
        members: usize,
    },
    /// Caller-provided scratch space was too small.
    ScratchTooSmall {
        /// Which scratch argument.
        what: &'static str,
        /// Elements needed.
        needed: usize,
        /// Elements given.
        found: usize,
    },
    /// A NaN or infinity was found where finite values were required.
    NonFinite {
        /// The member (or list position) holding it.
        member: usize,
        /// Its index inside the member.
        index: usize,
    },
    /// A parameter layout was malformed: a tensor overlapping the previous one, leaving a gap,
    /// or whose shape does not match its length.
    BadLayout {
        /// Position of the offending tensor in the layout.
        tensor: usize,
    },
    /// A shape argument was inconsistent (zero channels, activations not a multiple of the
    /// channel count, ...).
    BadShape {
        /// Which argument.
        what: &'static str,
    },
    /// A statistic needed to divide by was zero (e.g. a channel with no variance).
    Degenerate {
        /// Which quantity.
        what: &'static str,
        /// The channel or index concerned.
        index: usize,
    },
    /// A number was NaN, infinite or outside its allowed range (a negative standard deviation,
    /// a zero schedule period, a NaN validation score, ...).
    InvalidValue {
        /// Which quantity.
        what: &'static str,
        /// The channel, member or list position concerned, when the argument is a list.
        index: Option<usize>,
        /// The value given.
        value: f64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::EmptyPopulation => write!(f, "the population is empty"),
            Error::LengthMismatch { what, index: Some(i), expected, found } => {
                write!(f, "{what} {i} has length {found}, expected {expected}")
            }
            Error::LengthMismatch { what, index: None, expected, found } => {
                write!(f, "{what} has length {found}, expected {expected}")
            }
            Error::NegativeWeight { index, value } => {
                write!(f, "weight {index} is {value}: weights must be non-negative")
            }
            Error::WeightsDoNotSumToOne { sum } => {
                write!(f, "weights sum to {sum}, expected 1")
            }
            Error::AlphaOutOfRange { alpha } => write!(f, "alpha {alpha} is outside [0, 1]"),
            Error::PairOutOfRange { child, parent, members } => write!(
                f,
                "pair of child {child} names parent {parent}, but the population has {members} members"
            ),
            Error::ScratchTooSmall { what, needed, found } => {
                write!(f, "scratch {what} holds {found} elements, {needed} needed")
            }
            Error::NonFinite { member, index } => {
                write!(f, "member {member} holds a non-finite value at index {index}")
            }
            Error::BadLayout { tensor } => write!(
                f,
                "layout tensor {tensor} overlaps, leaves a gap or has a shape that does not match"
            ),
            Error::BadShape { what } => write!(f, "inconsistent shape: {what}"),
            Error::Degenerate { what, index } => write!(f, "{what} is zero at {index}"),
            Error::InvalidValue { what, index: Some(i), value } => {
                write!(f, "{what} {i} is {value}, outside its allowed range")
            }
            Error::InvalidValue { what, index: None, value } => {
                write!(f, "{what} is {value}, outside its allowed range")
            }
        }
    }
}

impl core::error::Error for Error {}

/// A buffer of the wrong length: the one length error of every papa crate (papa-core's own
/// functions report it as [`Error::LengthMismatch`], which also says which list item).
///
/// ```
/// use papa_core::LengthMismatch;
/// assert!(LengthMismatch::check("input", 4, 4).is_ok());
/// let e = LengthMismatch::check("input", 4, 3).unwrap_err();
/// assert_eq!(e.to_string(), "input has length 3, expected 4");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LengthMismatch {
    /// Which argument was wrong (e.g. `"params"`, `"input"`).
    pub what: &'static str,
    /// The length that was needed.
    pub expected: usize,
    /// The length that was given.
    pub found: usize,
}

impl LengthMismatch {
    /// `Ok` when `found == expected`, else the mismatch naming `what`.
    pub fn check(what: &'static str, expected: usize, found: usize) -> Result<(), Self> {
        if expected == found {
            Ok(())
        } else {
            Err(Self {
                what,
                expected,
                found,
            })
        }
    }
}

impl fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            what,
            expected,
            found,
        } = self;
        write!(f, "{what} has length {found}, expected {expected}")
    }
}

impl core::error::Error for LengthMismatch {}

impl From<LengthMismatch> for Error {
    fn from(e: LengthMismatch) -> Self {
        Error::LengthMismatch {
            what: e.what,
            index: None,
            expected: e.expected,
            found: e.found,
        }
    }
}

/// Fails with [`Error::LengthMismatch`] naming `what` when a length is not the one needed.
pub(crate) fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), Error> {
    Ok(LengthMismatch::check(what, expected, found)?)
}
