//! The flash image: one averaged model as bytes a microcontroller runs in place.
//!
//! An image is a versioned header, a layer table (one entry per conv/linear layer, with the
//! ReLU and max-pool after it fused in), an input section (the card's pixel scale and
//! normalisation, and for int8 a 256-entry table per channel mapping each stored byte to its
//! int8 input), and the tensors, each aligned to [`ALIGN`] bytes, then checked by a CRC-32.
//! [`FlashModel::parse`] checks all of it once, so that the [`runtime`](crate::runtime)
//! reads weights straight from flash, without a copy to RAM, and without a panic a bad
//! image could reach. The byte layout is in [`format`]'s documentation.
//!
//! The writer is [`write`] (feature `export`): `papa export --format flash` (and `c`).
//!
//! ```
//! use papa_edge::flash::{arena_len_of, FlashModel, ImageError};
//! // An image is checked before anything runs:
//! assert_eq!(FlashModel::parse(b"PAPA").unwrap_err(), ImageError::Truncated { needed: 64, found: 4 });
//! // and its arena length is a constant for a firmware that embeds it (0 for a non-image):
//! const ARENA: usize = arena_len_of(b"not an image");
//! assert_eq!(ARENA, 0);
//! ```

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod error;
pub mod format;
#[cfg(feature = "export")]
mod report;
#[cfg(feature = "export")]
pub mod write;

pub use error::{ImageError, RunError};
pub use format::{ALIGN, HEADER_LEN, LAYER_LEN, MAGIC, VERSION};
#[cfg(feature = "export")]
pub use report::{quantization_report, LayerError, QuantizationReport};

use crate::quant::{QuantParams, QuantizedMultiplier};
use core::fmt;
use format::{bytes_at, f32_at, header, i32_at, i8_at, input, layer, u16_at, u32_at, u8_at};

/// The arithmetic an image's layers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// int8 weights and activations, int32 accumulators (TFLM's scheme, see
    /// [`crate::quant`]).
    Int8,
    /// f32 throughout.
    F32,
}

impl Precision {
    pub(crate) const fn code(self) -> u8 {
        match self {
            Precision::Int8 => 1,
            Precision::F32 => 2,
        }
    }

    /// Bytes per weight.
    pub const fn weight_bytes(self) -> usize {
        match self {
            Precision::Int8 => 1,
            Precision::F32 => 4,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Int8 => "int8",
            Precision::F32 => "f32",
        })
    }
}

/// The arena length (in activation elements) an image's header states, or 0 when `image`
/// is not one; a `const fn`, so that firmware embedding an image sizes its arena at compile
/// time (`static mut ARENA: [i8; arena_len_of(IMAGE)]`). [`FlashModel::parse`] checks that
/// the stated length covers the layers.
pub const fn arena_len_of(image: &[u8]) -> usize {
    match (bytes_at::<8>(image, 0), u32_at(image, header::ARENA)) {
        (Some(magic), Some(len)) if is_magic(magic) => len as usize,
        _ => 0,
    }
}

const fn is_magic(bytes: [u8; 8]) -> bool {
    u64::from_le_bytes(bytes) == u64::from_le_bytes(MAGIC)
}

/// A layer's shape, fused ReLU and pool, and int8 input and clamp: everything but its
/// tensors and output scale. The flash runtime's [`Layer`] and the FPGA export's
/// [`LayerPlan`](crate::fpga::LayerPlan) both hold one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// A convolution (`true`) or a linear layer.
    pub conv: bool,
    /// Whether a ReLU follows (fused: the output is clamped at zero).
    pub relu: bool,
    /// The fused max-pool's window and stride (`None`: no pool).
    pub pool: Option<(usize, usize)>,
    /// Input channels (a linear layer's input features).
    pub cin: usize,
    /// Output channels (features).
    pub cout: usize,
    /// Input height and width (1 x 1 for a linear layer).
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel size (1 for a linear layer).
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// The convolution's output height before the pool.
    pub conv_h: usize,
    /// Its width.
    pub conv_w: usize,
    /// The layer's output height (after the pool).
    pub out_h: usize,
    /// Its width.
    pub out_w: usize,
    /// int8: the input's zero point.
    pub input_zero_point: i8,
    /// int8: the output's clamp (`[zero point, 127]` with a ReLU).
    pub clamp: (i8, i8),
}

impl Geometry {
    /// Values the layer reads.
    pub fn input_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// Values the layer writes.
    pub fn output_len(&self) -> usize {
        self.cout * self.out_h * self.out_w
    }

    /// Weights per output channel.
    pub fn row_len(&self) -> usize {
        self.cin * self.kernel * self.kernel
    }
}

/// One conv or linear layer of an image, checked, its tensors borrowed from the image.
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    /// Its shape, fused operations, input zero point and clamp.
    pub geometry: Geometry,
    /// Weights `[cout][cin][kernel][kernel]`: int8 or little-endian f32.
    pub weights: &'a [u8],
    /// Bias `[cout]`: little-endian i32 or f32.
    pub bias: &'a [u8],
    /// int8: `[cout]` of (multiplier, shift) as little-endian i32 pairs; empty for f32.
    pub requant: &'a [u8],
    /// int8: the output's quantisation (scale and zero point).
    pub output: Option<QuantParams>,
}

impl Layer<'_> {
    /// Values the layer reads.
    pub fn input_len(&self) -> usize {
        self.geometry.input_len()
    }

    /// Values the layer writes.
    pub fn output_len(&self) -> usize {
        self.geometry.output_len()
    }

    /// Weights per output channel.
    pub fn row_len(&self) -> usize {
        self.geometry.row_len()
    }

    /// Output channel `c`'s requantisation multiplier (int8 images).
    pub fn multiplier(&self, c: usize) -> Option<QuantizedMultiplier> {
        let at = c.checked_mul(8)?;
        QuantizedMultiplier::new(i32_at(self.requant, at)?, i32_at(self.requant, at + 4)?).ok()
    }
}

/// A checked flash image, borrowing its bytes (from flash, in place).
#[derive(Clone, Copy, Debug)]
pub struct FlashModel<'a> {
    image: &'a [u8],
    precision: Precision,
    layers: usize,
    classes: usize,
    chw: [usize; 3],
    arena: usize,
    input_section: &'a [u8],
}

impl<'a> FlashModel<'a> {
    /// Checks `image` whole: header, checksum, every layer entry against the one before,
    /// every tensor inside the image and aligned, every multiplier normalised, the arena
    /// length. Anything wrong is an [`ImageError`] naming the field, layer or tensor.
    pub fn parse(image: &'a [u8]) -> Result<Self, ImageError> {
        let truncated = |needed| ImageError::Truncated {
            needed,
            found: image.len(),
        };
        if image.len() < HEADER_LEN {
            return Err(truncated(HEADER_LEN));
        }
        if bytes_at::<8>(image, 0) != Some(MAGIC) {
            return Err(ImageError::Magic);
        }
        let h16 = |at| u16_at(image, at).map_or(0, usize::from);
        let h32 = |at| u32_at(image, at).map_or(0, |v| v as usize);
        let version = u16_at(image, header::VERSION).unwrap_or(0);
        if version != VERSION {
            return Err(ImageError::Version { found: version });
        }
        let len = h32(header::LENGTH);
        if len < HEADER_LEN {
            return Err(header_error("image length", len));
        }
        if image.len() < len {
            return Err(truncated(len));
        }
        let image = image.get(..len).ok_or(truncated(len))?;
        let stored = u32_at(image, header::CRC).unwrap_or(0);
        let computed = format::checksum(image);
        if stored != computed {
            return Err(ImageError::Checksum { stored, computed });
        }
        let precision = match u8_at(image, header::PRECISION) {
            Some(c) if c == Precision::Int8.code() => Precision::Int8,
            Some(c) if c == Precision::F32.code() => Precision::F32,
            other => return Err(header_error("precision", other.map_or(0, usize::from))),
        };
        let layers = h16(header::LAYERS);
        if layers == 0 {
            return Err(header_error("layers", 0));
        }
        let classes = h16(header::CLASSES);
        let chw = [
            h16(header::CHANNELS),
            h16(header::HEIGHT),
            h16(header::WIDTH),
        ];
        let fields = ["channels", "height", "width"];
        if let Some((field, _)) = fields.iter().zip(chw).find(|(_, d)| *d == 0) {
            return Err(header_error(field, 0));
        }
        if chw[0]
            .checked_mul(chw[1])
            .and_then(|n| n.checked_mul(chw[2]))
            .is_none()
        {
            return Err(header_error("height", chw[1]));
        }
        let table_end = HEADER_LEN + layers * LAYER_LEN;
        if table_end > len {
            return Err(truncated(table_end));
        }
        let input_section = input_section(image, precision, chw[0], table_end)?;
        let mut model = FlashModel {
            image,
            precision,
            layers,
            classes,
            chw,
            arena: h32(header::ARENA),
            input_section,
        };
        let needed = model.check_layers(table_end)?;
        if model.arena < needed {
            return Err(ImageError::Arena {
                stated: model.arena,
                needed,
            });
        }
        model.arena = needed.max(model.arena);
        Ok(model)
    }

    /// Walks the table: each entry valid and reading what the one before writes, the last
    /// writing the classes; returns the arena the layers need (the largest input plus
    /// output of one layer: the runtime puts them at the two ends of the arena).
    fn check_layers(&self, table_end: usize) -> Result<usize, ImageError> {
        let mut previous: Option<Layer<'a>> = None;
        let mut arena = 0usize;
        for index in 0..self.layers {
            let l = self.read_layer(index, table_end)?;
            let bad = |what| ImageError::Layer { index, what };
            let expected_input = match previous {
                None => self.input_len(),
                Some(p) => {
                    if self.precision == Precision::Int8
                        && p.output.map(QuantParams::zero_point)
                            != Some(l.geometry.input_zero_point)
                    {
                        return Err(bad(
                            "its input zero point is not the previous layer's output zero point",
                        ));
                    }
                    p.output_len()
                }
            };
            let (g, pg) = (l.geometry, previous.map(|p| p.geometry));
            let fits = match (pg, g.conv) {
                // A conv reads the spatial output of the conv before it, or the input image.
                (Some(p), true) => p.conv && [p.cout, p.out_h, p.out_w] == [g.cin, g.h, g.w],
                (None, true) => self.chw == [g.cin, g.h, g.w],
                (_, false) => l.input_len() == expected_input,
            };
            if !fits {
                return Err(bad("its input shape is not what the layer before it gives"));
            }
            if previous.is_none()
                && self.precision == Precision::Int8
                && Some(g.input_zero_point) != self.input_params().map(QuantParams::zero_point)
            {
                return Err(bad("its input zero point is not the input section's"));
            }
            let io = l.input_len().checked_add(l.output_len());
            arena = arena.max(io.ok_or(bad("too large"))?);
            previous = Some(l);
        }
        match previous {
            Some(last) if last.output_len() == self.classes => Ok(arena),
            _ => Err(ImageError::Layer {
                index: self.layers - 1,
                what: "the last layer does not give one value per class",
            }),
        }
    }

    /// Entry `index` of the table, checked on its own.
    fn read_layer(&self, index: usize, table_end: usize) -> Result<Layer<'a>, ImageError> {
        let bad = |what| ImageError::Layer { index, what };
        let entry = self
            .image
            .get(HEADER_LEN + index * LAYER_LEN..HEADER_LEN + (index + 1) * LAYER_LEN)
            .ok_or(bad("outside the image"))?;
        let b = |at| u8_at(entry, at).map_or(0, usize::from);
        let h = |at| u16_at(entry, at).map_or(0, usize::from);
        let conv = match b(layer::KIND) {
            1 => true,
            2 => false,
            _ => return Err(bad("its kind is neither conv (1) nor linear (2)")),
        };
        let relu = match b(layer::RELU) {
            0 => false,
            1 => true,
            _ => return Err(bad("its ReLU flag is neither 0 nor 1")),
        };
        let (cin, cout, lh, lw) = (
            h(layer::CIN),
            h(layer::COUT),
            h(layer::HEIGHT),
            h(layer::WIDTH),
        );
        let (kernel, stride, padding) = (b(layer::KERNEL), b(layer::STRIDE), b(layer::PADDING));
        if cin == 0 || cout == 0 || lh == 0 || lw == 0 || kernel == 0 || stride == 0 {
            return Err(bad("a size, the kernel or the stride is 0"));
        }
        if !conv && (lh, lw, kernel, stride, padding) != (1, 1, 1, 1, 0) {
            return Err(bad(
                "a linear layer with a spatial size, kernel, stride or padding",
            ));
        }
        let windows = |size: usize, k: usize, s: usize, p: usize| {
            let padded = size + 2 * p;
            (padded >= k).then(|| (padded - k) / s + 1)
        };
        let conv_h = windows(lh, kernel, stride, padding)
            .ok_or(bad("the kernel is larger than the padded input"))?;
        let conv_w = windows(lw, kernel, stride, padding)
            .ok_or(bad("the kernel is larger than the padded input"))?;
        let pool = match (b(layer::POOL_KERNEL), b(layer::POOL_STRIDE)) {
            (0, 0) => None,
            (k, s) if k > 0 && s > 0 && k <= format::MAX_POOL_WINDOW && conv => Some((k, s)),
            _ => {
                return Err(bad(
                    "a max-pool with a zero window or stride, one wider than 32, or after a linear layer",
                ))
            }
        };
        let (out_h, out_w) = match pool {
            None => (conv_h, conv_w),
            Some((k, s)) => (
                windows(conv_h, k, s, 0)
                    .ok_or(bad("the pool window is larger than the conv output"))?,
                windows(conv_w, k, s, 0)
                    .ok_or(bad("the pool window is larger than the conv output"))?,
            ),
        };
        // Every product the runtime forms, checked once here (u16 sizes overflow a 32-bit
        // usize in a product of three).
        let product = |a: usize, b: usize, c: usize| a.checked_mul(b)?.checked_mul(c);
        let sizes = [
            product(cin, lh, lw),
            product(cout, out_h, out_w),
            product(cout, conv_h, conv_w),
            product(cin, kernel, kernel).and_then(|row| row.checked_mul(cout)),
        ];
        if sizes.iter().any(Option::is_none) {
            return Err(bad("too large"));
        }
        let weights_len = product(cout, cin * kernel * kernel, self.precision.weight_bytes())
            .ok_or(bad("too large"))?;
        let offset = |at| u32_at(entry, at).map_or(0, |v| v as usize);
        let weights = self.tensor(
            index,
            "weights",
            offset(layer::WEIGHTS),
            weights_len,
            table_end,
        )?;
        let bias = self.tensor(index, "bias", offset(layer::BIAS), cout * 4, table_end)?;
        let (requant, output, clamp, input_zero_point) = match self.precision {
            Precision::F32 => (&[][..], None, (i8::MIN, i8::MAX), 0),
            Precision::Int8 => {
                let requant = self.tensor(
                    index,
                    "requantisation",
                    offset(layer::REQUANT),
                    cout * 8,
                    table_end,
                )?;
                let zp = |at| i8_at(entry, at).unwrap_or(0);
                let scale = f32_at(entry, layer::OUTPUT_SCALE).unwrap_or(0.0);
                let output = QuantParams::new(scale, zp(layer::OUTPUT_ZERO_POINT))
                    .map_err(|_| bad("its output scale is not finite and positive"))?;
                let clamp = (zp(layer::CLAMP_MIN), zp(layer::CLAMP_MAX));
                if clamp.0 > clamp.1 {
                    return Err(bad("its output clamp is empty"));
                }
                (requant, Some(output), clamp, zp(layer::INPUT_ZERO_POINT))
            }
        };
        let l = Layer {
            geometry: Geometry {
                conv,
                relu,
                pool,
                cin,
                cout,
                h: lh,
                w: lw,
                kernel,
                stride,
                padding,
                conv_h,
                conv_w,
                out_h,
                out_w,
                input_zero_point,
                clamp,
            },
            weights,
            bias,
            requant,
            output,
        };
        if self.precision == Precision::Int8 {
            if let Some(channel) = (0..cout).find(|&c| l.multiplier(c).is_none()) {
                return Err(ImageError::Requantization {
                    layer: index,
                    channel,
                });
            }
        }
        Ok(l)
    }

    /// `len` bytes at `offset`: after the table, aligned, inside the image.
    fn tensor(
        &self,
        layer: usize,
        tensor: &'static str,
        offset: usize,
        len: usize,
        table_end: usize,
    ) -> Result<&'a [u8], ImageError> {
        let bad = ImageError::Tensor {
            layer,
            tensor,
            offset,
            len,
        };
        if offset < table_end || !offset.is_multiple_of(ALIGN) {
            return Err(bad);
        }
        offset
            .checked_add(len)
            .and_then(|end| self.image.get(offset..end))
            .ok_or(bad)
    }

    /// The arithmetic of its layers.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Classes (logits per inference).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The input's channels, height and width.
    pub fn input_shape(&self) -> [usize; 3] {
        self.chw
    }

    /// Values per input (`channels * height * width`).
    pub fn input_len(&self) -> usize {
        self.chw[0] * self.chw[1] * self.chw[2]
    }

    /// The arena an inference needs, in elements (`i8` for int8 images, `f32` for f32).
    pub fn arena_len(&self) -> usize {
        self.arena
    }

    /// Layers in the table.
    pub fn layer_count(&self) -> usize {
        self.layers
    }

    /// Layer `index` (checked by [`FlashModel::parse`]).
    pub fn layer(&self, index: usize) -> Result<Layer<'a>, ImageError> {
        self.read_layer(index, HEADER_LEN + self.layers * LAYER_LEN)
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.image
    }

    /// The bytes of the tensors (weights, biases, requantisation): the model without the
    /// header, the table and the input section.
    pub fn tensor_bytes(&self) -> usize {
        (0..self.layers)
            .filter_map(|i| self.layer(i).ok())
            .map(|l| l.weights.len() + l.bias.len() + l.requant.len())
            .sum()
    }

    /// The stored value scale: the model reads `stored / pixel_scale`.
    pub fn pixel_scale(&self) -> f32 {
        f32_at(self.input_section, input::PIXEL_SCALE).unwrap_or(1.0)
    }

    /// Channel `c`'s normalisation `(mean, std)`.
    pub fn normalization(&self, c: usize) -> (f32, f32) {
        let mean = format::INPUT_FIXED_LEN + 4 * c;
        let std = format::INPUT_FIXED_LEN + 4 * (self.chw[0] + c);
        (
            f32_at(self.input_section, mean).unwrap_or(0.0),
            f32_at(self.input_section, std).unwrap_or(1.0),
        )
    }

    /// int8: the input's quantisation.
    pub fn input_params(&self) -> Option<QuantParams> {
        let scale = f32_at(self.input_section, input::SCALE)?;
        QuantParams::new(scale, i8_at(self.input_section, input::ZERO_POINT)?).ok()
    }

    /// int8: the logits' quantisation (to dequantise them).
    pub fn output_params(&self) -> Option<QuantParams> {
        let scale = f32_at(self.image, header::OUTPUT_SCALE)?;
        QuantParams::new(scale, i8_at(self.image, header::OUTPUT_ZERO_POINT)?).ok()
    }

    /// int8: channel `c`'s table of the int8 input of each stored byte.
    pub fn input_table(&self, c: usize) -> &'a [u8] {
        let start = format::INPUT_FIXED_LEN + 8 * self.chw[0] + format::LUT_LEN * c;
        self.input_section
            .get(start..start + format::LUT_LEN)
            .unwrap_or(&[])
    }
}

/// The input section of an image of `channels` channels, checked.
fn input_section(
    image: &[u8],
    precision: Precision,
    channels: usize,
    table_end: usize,
) -> Result<&[u8], ImageError> {
    let offset = u32_at(image, header::INPUT).map_or(0, |v| v as usize);
    let len = input_section_len(precision, channels);
    let bad = ImageError::Tensor {
        layer: usize::MAX,
        tensor: "input section",
        offset,
        len,
    };
    if offset < table_end || !offset.is_multiple_of(ALIGN) {
        return Err(bad);
    }
    let section = offset
        .checked_add(len)
        .and_then(|end| image.get(offset..end))
        .ok_or(bad)?;
    if precision == Precision::Int8 {
        let scale = f32_at(section, input::SCALE).unwrap_or(0.0);
        QuantParams::new(scale, 0)
            .map_err(|_| header_error("input scale", scale.to_bits() as usize))?;
    }
    Ok(section)
}

/// Bytes of the input section.
pub(crate) fn input_section_len(precision: Precision, channels: usize) -> usize {
    let tables = match precision {
        Precision::Int8 => format::LUT_LEN * channels,
        Precision::F32 => 0,
    };
    format::INPUT_FIXED_LEN + 8 * channels + tables
}

fn header_error(field: &'static str, value: usize) -> ImageError {
    ImageError::Header {
        field,
        value: u32::try_from(value).unwrap_or(u32::MAX),
    }
}

/// What a model reads for stored value `v` of a channel: `(v / pixel_scale - mean) / std`,
/// the operations and order of papa's own forward (so the f32 runtime and papa agree, and
/// the int8 input table is the quantisation of exactly this).
pub fn normalise(v: f32, pixel_scale: f32, mean: f32, std: f32) -> f32 {
    (v / pixel_scale - mean) / std
}
