//! Why an image is refused, and why a run is.

use core::fmt;

/// Why bytes are not a usable flash image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageError {
    /// Fewer bytes than the header says (or than a header).
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        found: usize,
    },
    /// The first bytes are not `PAPAFLSH`: not an image.
    Magic,
    /// An image of a version this crate does not read.
    Version {
        /// Its version.
        found: u16,
    },
    /// The stored checksum does not match the bytes: the image is corrupt.
    Checksum {
        /// The checksum stored in the header.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A header field holds a value the format does not allow.
    Header {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// A layer table entry that does not describe a layer, or does not fit the layer before.
    Layer {
        /// The entry (0-based).
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A tensor (or the input section) that lies outside the image or is misaligned.
    Tensor {
        /// The layer (0-based; `usize::MAX` for the input section).
        layer: usize,
        /// Which tensor.
        tensor: &'static str,
        /// Its offset.
        offset: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A requantisation multiplier that is not normalised.
    Requantization {
        /// The layer.
        layer: usize,
        /// The output channel.
        channel: usize,
    },
    /// The header's arena length is smaller than the layers need.
    Arena {
        /// The header's length.
        stated: usize,
        /// What the layers need.
        needed: usize,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ImageError::Truncated { needed, found } => write!(
                f,
                "the image is truncated: {found} bytes, {needed} needed"
            ),
            ImageError::Magic => write!(f, "not a papa flash image (no PAPAFLSH magic)"),
            ImageError::Version { found } => write!(
                f,
                "image version {found}; this runtime reads version {}",
                super::VERSION
            ),
            ImageError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the image is corrupt"
            ),
            ImageError::Header { field, value } => {
                write!(f, "header field `{field}` = {value} is not allowed")
            }
            ImageError::Layer { index, what } => write!(f, "layer {index}: {what}"),
            ImageError::Tensor {
                layer,
                tensor,
                offset,
                len,
            } => {
                if layer == usize::MAX {
                    write!(f, "the input section")?;
                } else {
                    write!(f, "layer {layer}'s {tensor}")?;
                }
                write!(
                    f,
                    " ({len} bytes at offset {offset}) lies outside the image or is not aligned to {}",
                    super::ALIGN
                )
            }
            ImageError::Requantization { layer, channel } => write!(
                f,
                "layer {layer}, channel {channel}: the requantisation multiplier is not normalised"
            ),
            ImageError::Arena { stated, needed } => write!(
                f,
                "the header's arena of {stated} elements is smaller than the {needed} the layers need"
            ),
        }
    }
}

impl core::error::Error for ImageError {}

/// Why an inference was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunError {
    /// An input of the wrong length.
    Input {
        /// Values the model takes.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// An arena smaller than the image says it needs.
    Arena {
        /// Elements needed ([`FlashModel::arena_len`](super::FlashModel::arena_len)).
        needed: usize,
        /// Elements given.
        found: usize,
    },
    /// An int8 run of an f32 image, or the reverse.
    Precision {
        /// The image's precision.
        image: super::Precision,
    },
    /// The image changed under the runtime (a tensor no longer where it was checked).
    Image(ImageError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RunError::Input { expected, found } => {
                write!(
                    f,
                    "the input holds {found} values; the model takes {expected}"
                )
            }
            RunError::Arena { needed, found } => write!(
                f,
                "the arena holds {found} elements; the model needs {needed}"
            ),
            RunError::Precision { image } => {
                write!(f, "the image is {image}: run it with its own precision")
            }
            RunError::Image(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for RunError {}

impl From<ImageError> for RunError {
    fn from(e: ImageError) -> Self {
        RunError::Image(e)
    }
}
