//! Writing flash images (feature `export`): the int8 model of [`crate::onnx::quantize`] or
//! the folded f32 model, and the same bytes as C source for C firmware.

// Host-side code (feature `export`): it builds images from checked models and never reads
// one, so the runtime's no-indexing rule does not apply.
#![allow(clippy::indexing_slicing)]

use super::format::{self, header, input, layer, ALIGN, HEADER_LEN, LAYER_LEN, LUT_LEN};
use super::{input_section_len, normalise, FlashModel, Precision};
use crate::onnx::{fold, ExportError, Quantized};
use crate::quant::QuantizedLayer;
use papa_model::file::ModelFile;
use papa_model::plan::Op;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

/// The int8 image of `quantized` (checked by parsing it back).
pub fn int8(quantized: &Quantized) -> Result<Vec<u8>, ExportError> {
    let model = &quantized.folded;
    let layers = planned(model)?;
    if layers.len() != quantized.layers.len() {
        return Err(unsupported("the quantised layers do not match the model's"));
    }
    let mut w = Writer::new(model, Precision::Int8, layers.len())?;
    let params = quantized.input;
    w.input_section(params.scale(), params.zero_point(), |c, v| {
        let (mean, std) = normalization(model, c);
        params.quantize(normalise(v, model.card.input.pixel_scale, mean, std)) as u8
    });
    for (i, (p, q)) in layers.iter().zip(&quantized.layers).enumerate() {
        let weights: Vec<u8> = q.weights.iter().map(|&v| v as u8).collect();
        let bias: Vec<u8> = q.bias.iter().flat_map(|b| b.to_le_bytes()).collect();
        let requant: Vec<u8> = q
            .multipliers
            .iter()
            .flat_map(|m| [m.multiplier().to_le_bytes(), m.shift().to_le_bytes()])
            .flatten()
            .collect();
        let offsets = [w.tensor(&weights), w.tensor(&bias), w.tensor(&requant)];
        w.entry(i, p, offsets, Some(q))?;
    }
    let last = quantized.layers.last().map(|q| q.output);
    if let Some(out) = last {
        w.put(header::OUTPUT_SCALE, &out.scale().to_le_bytes());
        w.put(header::OUTPUT_ZERO_POINT, &[out.zero_point() as u8]);
    }
    w.finish()
}

/// The f32 image of `model`, its BatchNorms folded first (checked by parsing it back).
pub fn f32(model: &ModelFile) -> Result<Vec<u8>, ExportError> {
    let model = fold(model)?;
    let layers = planned(&model)?;
    let mut w = Writer::new(&model, Precision::F32, layers.len())?;
    w.input_section(1.0, 0, |_, _| 0);
    for (i, p) in layers.iter().enumerate() {
        let (weight, bias) = match p.op {
            Op::Conv(c) => (
                (c.weight, c.cout * c.cin * c.kernel * c.kernel),
                (c.bias, c.cout),
            ),
            Op::Linear(l) => ((l.weight, l.fout * l.fin), (l.bias, l.fout)),
            _ => return Err(unsupported("a layer that is neither conv nor linear")),
        };
        let bytes = |(at, n): (usize, usize)| -> Vec<u8> {
            model.params[at..at + n]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        };
        let offsets = [w.tensor(&bytes(weight)), w.tensor(&bytes(bias)), 0];
        w.entry(i, p, offsets, None)?;
    }
    w.finish()
}

/// Recomputes an image's checksum after its bytes were changed (tools, fuzzing); nothing
/// happens to bytes shorter than a header.
pub fn seal(image: &mut [u8]) {
    if image.len() >= HEADER_LEN {
        let crc = format::checksum(image);
        image[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// `image` as C: a header declaring `symbol` (its bytes), `SYMBOL_LEN` and `SYMBOL_ARENA_LEN`
/// (the arena's elements: `int8_t` or `float`), and a source file defining the array,
/// 16-byte aligned so that the runtime's tensors stay aligned. `header_name` is the name the
/// source includes.
pub fn c_source(
    image: &[u8],
    symbol: &str,
    header_name: &str,
) -> Result<(String, String), ExportError> {
    let model =
        FlashModel::parse(image).map_err(|e| unsupported_owned(format!("not an image: {e}")))?;
    let valid = symbol
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && symbol
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(unsupported_owned(format!(
            "`{symbol}` is not a C identifier"
        )));
    }
    let upper = symbol.to_ascii_uppercase();
    let guard = format!("{upper}_H");
    let element = match model.precision() {
        Precision::Int8 => "int8_t",
        Precision::F32 => "float",
    };
    let h = format!(
        "/* A papa flash image ({precision}, {classes} classes, input {c} x {hh} x {ww}), written by papa export. */\n\
         #ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n\n\
         #define {upper}_LEN {len}u\n\
         /* Elements ({element}) of the activation arena an inference needs. */\n\
         #define {upper}_ARENA_LEN {arena}u\n\n\
         extern const uint8_t {symbol}[{upper}_LEN];\n\n#endif\n",
        precision = model.precision(),
        classes = model.classes(),
        c = model.input_shape()[0],
        hh = model.input_shape()[1],
        ww = model.input_shape()[2],
        len = image.len(),
        arena = model.arena_len(),
    );
    let mut c = format!(
        "#include \"{header_name}\"\n\n__attribute__((aligned({ALIGN}))) const uint8_t {symbol}[{upper}_LEN] = {{\n"
    );
    for row in image.chunks(16) {
        c.push_str("   ");
        for b in row {
            c.push_str(&format!(" 0x{b:02x},"));
        }
        c.push('\n');
    }
    c.push_str("};\n");
    Ok((h, c))
}

/// One table entry to be: a conv or linear op, and what is fused after it.
struct Planned {
    op: Op,
    relu: bool,
    pool: Option<(usize, usize)>,
}

/// The folded model's ops as table entries: each conv or linear layer with the ReLU and
/// (after a conv) the max-pool that follow it; flattens vanish (the data is channel-major).
fn planned(model: &ModelFile) -> Result<Vec<Planned>, ExportError> {
    let spec = model.card.spec()?;
    let mut layers: Vec<Planned> = Vec::new();
    for op in spec.ops() {
        match (*op, layers.last_mut()) {
            (Op::Conv(_) | Op::Linear(_), _) => layers.push(Planned {
                op: *op,
                relu: false,
                pool: None,
            }),
            (Op::Relu { .. }, Some(last)) if !last.relu => last.relu = true,
            (Op::MaxPool { kernel, stride, .. }, Some(last))
                if matches!(last.op, Op::Conv(_)) && last.pool.is_none() =>
            {
                last.pool = Some((kernel, stride))
            }
            (Op::Flatten { .. }, _) => {}
            (other, _) => {
                return Err(unsupported_owned(format!(
                    "the flash image fuses a ReLU and a max-pool into the conv or linear layer before them; this model has {} there",
                    describe(&other)
                )))
            }
        }
    }
    if layers.is_empty() {
        return Err(unsupported("a model with no conv or linear layer"));
    }
    Ok(layers)
}

fn describe(op: &Op) -> &'static str {
    match op {
        Op::BatchNorm { .. } => "a BatchNorm that could not be folded",
        Op::Relu { .. } => "a ReLU that follows no layer (or a second one)",
        Op::MaxPool { .. } => "a max-pool that follows no conv (or a second one)",
        _ => "an op it cannot express",
    }
}

fn normalization(model: &ModelFile, c: usize) -> (f32, f32) {
    let n = &model.card.normalization;
    (
        n.mean.get(c).copied().unwrap_or(0.0),
        n.std.get(c).copied().unwrap_or(1.0),
    )
}

fn unsupported(why: &str) -> ExportError {
    unsupported_owned(why.to_string())
}

fn unsupported_owned(why: String) -> ExportError {
    ExportError::Flash(why)
}

/// An image being written: the header and table up front, sections appended aligned.
struct Writer {
    bytes: Vec<u8>,
    channels: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    pixel_scale: f32,
    /// The input's length, then each layer's output length as entries are written.
    last_len: usize,
    arena: usize,
}

impl Writer {
    fn new(model: &ModelFile, precision: Precision, layers: usize) -> Result<Self, ExportError> {
        let spec = model.card.spec()?;
        let [c, h, w] = spec.input_shape();
        let norm = &model.card.normalization;
        if norm.mean.len() != c || norm.std.len() != c {
            return Err(unsupported(
                "the normalisation does not give one mean and std per input channel",
            ));
        }
        let mut writer = Writer {
            bytes: std::vec![0u8; HEADER_LEN + layers * LAYER_LEN],
            channels: c,
            mean: norm.mean.clone(),
            std: norm.std.clone(),
            pixel_scale: model.card.input.pixel_scale,
            last_len: spec.input_len(),
            arena: 0,
        };
        writer.put(0, &format::MAGIC);
        writer.put(header::VERSION, &format::VERSION.to_le_bytes());
        writer.put(header::PRECISION, &[precision.code()]);
        for (at, v, what) in [
            (header::LAYERS, layers, "layers"),
            (header::CLASSES, spec.classes(), "classes"),
            (header::CHANNELS, c, "input channels"),
            (header::HEIGHT, h, "input height"),
            (header::WIDTH, w, "input width"),
        ] {
            writer.put(at, &field::<u16>(v, what)?.to_le_bytes());
        }
        Ok(writer)
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Appends `bytes` at the next aligned offset; returns the offset.
    fn tensor(&mut self, bytes: &[u8]) -> usize {
        let at = self.bytes.len().next_multiple_of(ALIGN);
        self.bytes.resize(at, 0);
        self.bytes.extend_from_slice(bytes);
        at
    }

    /// The input section: the pixel scale, the int8 input's scale and zero point, the
    /// normalisation, and (int8) each channel's table `table(channel, stored byte)`.
    fn input_section(&mut self, scale: f32, zero_point: i8, table: impl Fn(usize, f32) -> u8) {
        let c = self.channels;
        let mut section = std::vec![0u8; format::INPUT_FIXED_LEN];
        section[input::PIXEL_SCALE..input::PIXEL_SCALE + 4]
            .copy_from_slice(&self.pixel_scale.to_le_bytes());
        section[input::SCALE..input::SCALE + 4].copy_from_slice(&scale.to_le_bytes());
        section[input::ZERO_POINT] = zero_point as u8;
        section.extend(
            self.mean
                .iter()
                .chain(&self.std)
                .flat_map(|v| v.to_le_bytes()),
        );
        let precision = if self.bytes[header::PRECISION] == Precision::Int8.code() {
            Precision::Int8
        } else {
            Precision::F32
        };
        if precision == Precision::Int8 {
            for channel in 0..c {
                section.extend((0..LUT_LEN).map(|v| table(channel, v as f32)));
            }
        }
        debug_assert_eq!(section.len(), input_section_len(precision, c));
        let at = self.tensor(&section);
        self.put(header::INPUT, &(at as u32).to_le_bytes());
    }

    /// Table entry `i`: layer `p`, its tensors at `offsets` (weights, bias,
    /// requantisation), and (int8) its quantisation `q`.
    fn entry(
        &mut self,
        i: usize,
        p: &Planned,
        offsets: [usize; 3],
        q: Option<&QuantizedLayer>,
    ) -> Result<(), ExportError> {
        let (cin, cout, h, w, k, stride, pad) = match p.op {
            Op::Conv(c) => (c.cin, c.cout, c.h, c.w, c.kernel, c.stride, c.padding),
            Op::Linear(l) => (l.fin, l.fout, 1, 1, 1, 1, 0),
            _ => return Err(unsupported("a layer that is neither conv nor linear")),
        };
        let (pool_k, pool_s) = p.pool.unwrap_or((0, 0));
        let at = HEADER_LEN + i * LAYER_LEN;
        let mut e = [0u8; LAYER_LEN];
        e[layer::KIND] = if matches!(p.op, Op::Conv(_)) { 1 } else { 2 };
        e[layer::RELU] = u8::from(p.relu);
        for (off, v, what) in [
            (layer::POOL_KERNEL, pool_k, "the max-pool window"),
            (layer::POOL_STRIDE, pool_s, "the max-pool stride"),
            (layer::KERNEL, k, "the kernel"),
            (layer::STRIDE, stride, "the stride"),
            (layer::PADDING, pad, "the padding"),
        ] {
            e[off] = field::<u8>(v, what)?;
        }
        for (off, v, what) in [
            (layer::CIN, cin, "input channels"),
            (layer::COUT, cout, "output channels"),
            (layer::HEIGHT, h, "height"),
            (layer::WIDTH, w, "width"),
        ] {
            e[off..off + 2].copy_from_slice(&field::<u16>(v, what)?.to_le_bytes());
        }
        for (off, v) in [
            (layer::WEIGHTS, offsets[0]),
            (layer::BIAS, offsets[1]),
            (layer::REQUANT, offsets[2]),
        ] {
            e[off..off + 4].copy_from_slice(&field::<u32>(v, "a tensor offset")?.to_le_bytes());
        }
        if let Some(q) = q {
            let (min, max) = q.output_range();
            e[layer::INPUT_ZERO_POINT] = q.input.zero_point() as u8;
            e[layer::OUTPUT_ZERO_POINT] = q.output.zero_point() as u8;
            e[layer::CLAMP_MIN] = min as u8;
            e[layer::CLAMP_MAX] = max as u8;
            e[layer::OUTPUT_SCALE..layer::OUTPUT_SCALE + 4]
                .copy_from_slice(&q.output.scale().to_le_bytes());
        }
        self.put(at, &e);
        let out = p.op.out_len();
        let out = match (p.op, p.pool) {
            (Op::Conv(c), Some((pk, ps))) => {
                c.cout * ((c.out_h - pk) / ps + 1) * ((c.out_w - pk) / ps + 1)
            }
            _ => out,
        };
        self.arena = self.arena.max(self.last_len + out);
        self.last_len = out;
        Ok(())
    }

    /// Sets the arena and length, seals the image and checks it by parsing it back.
    fn finish(mut self) -> Result<Vec<u8>, ExportError> {
        let len = self.bytes.len().next_multiple_of(ALIGN);
        self.bytes.resize(len, 0);
        self.put(
            header::ARENA,
            &field::<u32>(self.arena, "the arena")?.to_le_bytes(),
        );
        self.put(
            header::LENGTH,
            &field::<u32>(len, "the image length")?.to_le_bytes(),
        );
        seal(&mut self.bytes);
        FlashModel::parse(&self.bytes)
            .map_err(|e| unsupported_owned(format!("the written image does not parse: {e}")))?;
        Ok(self.bytes)
    }
}

/// `v` in the image's field type, or an error naming `what`.
fn field<T: TryFrom<usize>>(v: usize, what: &str) -> Result<T, ExportError> {
    T::try_from(v).map_err(|_| {
        unsupported_owned(format!(
            "{what} = {v} does not fit the flash image's {}-bit field",
            8 * std::mem::size_of::<T>()
        ))
    })
}
