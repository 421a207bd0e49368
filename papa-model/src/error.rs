//! What can be wrong with a model description.

use crate::layer::{Layer, Shape};
use core::fmt;
use papa_core::LengthMismatch;

/// Why a model description cannot be built or used; `Copy`, so it travels through no_std
/// code unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelError {
    /// The input has a zero dimension.
    EmptyInput,
    /// The model has zero classes.
    ZeroClasses,
    /// Layer `index` cannot take its input (a conv after flatten, a linear on an image, a
    /// kernel larger than the padded image, a zero size or stride).
    LayerDoesNotFit {
        /// Position of the layer in the model.
        index: usize,
        /// The layer.
        layer: Layer,
        /// The shape it was given.
        input: Shape,
    },
    /// The model does not end with `classes` flat features.
    WrongOutput {
        /// The classes the model must predict.
        classes: usize,
        /// The shape its last layer gives.
        output: Shape,
    },
    /// A size overflows the address space (layer `index`).
    TooLarge {
        /// Position of the layer in the model.
        index: usize,
    },
    /// A bounded table (a [`ModelView`](crate::view::ModelView)) holds fewer ops than the
    /// model has.
    TooManyLayers {
        /// What the table holds.
        capacity: usize,
    },
    /// A buffer had the wrong length.
    Length(LengthMismatch),
}

impl From<LengthMismatch> for ModelError {
    fn from(e: LengthMismatch) -> Self {
        ModelError::Length(e)
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::EmptyInput => write!(f, "the input has a zero dimension"),
            ModelError::ZeroClasses => write!(f, "the model has zero classes"),
            ModelError::LayerDoesNotFit {
                index,
                layer,
                input,
            } => write!(f, "layer {index} ({layer}) cannot take an input of {input}"),
            ModelError::WrongOutput { classes, output } => write!(
                f,
                "the model must end with {classes} flat features (one per class), it gives {output}"
            ),
            ModelError::TooLarge { index } => write!(f, "layer {index} is too large"),
            ModelError::TooManyLayers { capacity } => {
                write!(
                    f,
                    "the model has more than {capacity} ops, the table's capacity"
                )
            }
            ModelError::Length(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for ModelError {}
