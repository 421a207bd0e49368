//! The layers of a sequential model, with PyTorch semantics, and the shapes they map.

use core::fmt;

/// One layer. Parameters live in fields, so a model is data, not a type name.
///
/// ```
/// use papa_model::layer::{Layer, Shape};
/// let image = Shape::Spatial { channels: 1, height: 28, width: 28 };
/// let conv = Layer::conv3x3(32);
/// assert_eq!(conv.output(image), Some(Shape::Spatial { channels: 32, height: 28, width: 28 }));
/// assert_eq!(Layer::max_pool2().output(image), Some(Shape::Spatial { channels: 1, height: 14, width: 14 }));
/// assert_eq!(Layer::Linear { out_features: 10 }.output(image), None); // flatten first
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)
)]
pub enum Layer {
    /// `Conv2d(in, out_channels, kernel, stride, padding)` with bias, square kernel, zero
    /// padding; needs a spatial input.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel height and width.
        kernel: usize,
        /// Step between kernel positions.
        stride: usize,
        /// Zeros added on every side.
        padding: usize,
    },
    /// `BatchNorm2d` on a spatial input, `BatchNorm1d` on a flat one (affine, with running
    /// statistics and PyTorch's `num_batches_tracked`).
    BatchNorm,
    /// `ReLU`.
    Relu,
    /// `MaxPool2d(kernel, stride)` (no padding, floor); needs a spatial input.
    MaxPool2d {
        /// Window height and width.
        kernel: usize,
        /// Step between windows.
        stride: usize,
    },
    /// `Flatten` (channel-major, as PyTorch flattens `C x H x W`); nothing on a flat input.
    Flatten,
    /// `Linear(in, out_features)` with bias; needs a flat input.
    Linear {
        /// Output features.
        out_features: usize,
    },
}

impl Layer {
    /// `Conv2d(kernel 3, stride 1, padding 1)`: keeps the image size.
    pub const fn conv3x3(out_channels: usize) -> Self {
        Layer::Conv2d {
            out_channels,
            kernel: 3,
            stride: 1,
            padding: 1,
        }
    }

    /// `MaxPool2d(2)`: halves the image size (floor).
    pub const fn max_pool2() -> Self {
        Layer::MaxPool2d {
            kernel: 2,
            stride: 2,
        }
    }

    /// The shape this layer gives for `input`, or `None` when it cannot take it (wrong kind
    /// of input, zero size or stride, a window larger than the padded image, overflow).
    pub fn output(&self, input: Shape) -> Option<Shape> {
        match (*self, input) {
            (
                Layer::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                },
                Shape::Spatial { height, width, .. },
            ) if out_channels > 0 => Some(Shape::Spatial {
                channels: out_channels,
                height: window_count(height, kernel, stride, padding)?,
                width: window_count(width, kernel, stride, padding)?,
            })
            .filter(|s| s.len().is_some()),
            (
                Layer::MaxPool2d { kernel, stride },
                Shape::Spatial {
                    channels,
                    height,
                    width,
                },
            ) => Some(Shape::Spatial {
                channels,
                height: window_count(height, kernel, stride, 0)?,
                width: window_count(width, kernel, stride, 0)?,
            }),
            (Layer::BatchNorm | Layer::Relu, s) => Some(s),
            (Layer::Flatten, s) => s.len().map(|features| Shape::Flat { features }),
            (Layer::Linear { out_features }, Shape::Flat { .. }) if out_features > 0 => {
                Some(Shape::Flat {
                    features: out_features,
                })
            }
            _ => None,
        }
    }
}

/// Positions of a `kernel` window moved by `stride` over `size + 2 padding` values.
fn window_count(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = size.checked_add(padding.checked_mul(2)?)?;
    if kernel == 0 || stride == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Layer::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
            } => write!(
                f,
                "conv2d({out_channels} channels, kernel {kernel}, stride {stride}, padding {padding})"
            ),
            Layer::BatchNorm => write!(f, "batch_norm"),
            Layer::Relu => write!(f, "relu"),
            Layer::MaxPool2d { kernel, stride } => {
                write!(f, "max_pool2d(kernel {kernel}, stride {stride})")
            }
            Layer::Flatten => write!(f, "flatten"),
            Layer::Linear { out_features } => write!(f, "linear({out_features} features)"),
        }
    }
}

/// What flows between layers, per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Shape {
    /// An image: `channels x height x width`, row-major (NCHW without the batch).
    Spatial {
        /// Channels.
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// A vector of features.
    Flat {
        /// Its length.
        features: usize,
    },
}

impl Shape {
    /// Values per sample, or `None` on overflow.
    pub fn len(&self) -> Option<usize> {
        match *self {
            Shape::Spatial {
                channels,
                height,
                width,
            } => channels.checked_mul(height)?.checked_mul(width),
            Shape::Flat { features } => Some(features),
        }
    }

    /// Whether a sample holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// `[channels, height, width]` (`[features, 1, 1]` for a flat shape).
    pub fn chw(&self) -> [usize; 3] {
        match *self {
            Shape::Spatial {
                channels,
                height,
                width,
            } => [channels, height, width],
            Shape::Flat { features } => [features, 1, 1],
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Spatial {
                channels,
                height,
                width,
            } => write!(f, "{channels} x {height} x {width}"),
            Shape::Flat { features } => write!(f, "{features} features"),
        }
    }
}
