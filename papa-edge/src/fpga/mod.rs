//! The FPGA export (feature `export`): an int8 model as the memory files, parameter header
//! and golden vectors of the Verilog network in papa-edge/fpga/rtl (`papa export --format
//! fpga`).
//!
//! Everything is derived from the int8 flash image ([`crate::flash::write::int8`]): the
//! same quantiser, the same layer table (ReLU and max-pool fused into the conv), the same
//! arena and its two ends, and golden vectors from the runtime's own int8 path, so the
//! hardware is held bit for bit to what the microcontroller runs.
//!
//! Files ([`FpgaExport::files`], paths relative to the output directory):
//! - `model.vh` / `model.h`: the parameters ([`header`]);
//! - `weights.mem` (int8, every layer's `[cout][cin][k][k]` one after another),
//!   `bias.mem` (int32), `mult.mem` (the Q31 multiplier, int32), `shift.mem` (int8), one
//!   entry per output channel of every layer, `input_table.mem` (per input channel, the
//!   int8 input of each stored byte): `$readmemh` files ([`memory`]);
//! - `golden/golden.vh` (`GOLDEN_SAMPLES`), `golden/sNNNN_input.mem` (stored bytes),
//!   `golden/sNNNN_layerL.mem` (layer L's int8 output), `golden/classes.mem`.
//!
//! What the hardware cannot express is refused with an [`FpgaError`] before anything is
//! written ([`limits`]).

mod error;
mod golden;
pub mod header;
pub mod limits;
pub mod memory;
mod plan;

pub use error::FpgaError;
pub use golden::{stored_bytes, GoldenSample};
pub use plan::{LayerPlan, Plan};

use crate::flash::{self, FlashModel};
use crate::onnx::Quantized;
use std::format;
use std::string::String;
use std::vec::Vec;

/// One file of an export: its path relative to the output directory, its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FpgaFile {
    /// Relative path (`model.vh`, `golden/s0000_layer1.mem`).
    pub path: String,
    /// Contents.
    pub text: String,
}

/// An export: the plan the hardware runs, the golden vectors, the files.
#[derive(Clone, Debug)]
pub struct FpgaExport {
    /// The layers as the hardware runs them.
    pub plan: Plan,
    /// The golden samples.
    pub golden: Vec<GoldenSample>,
    /// The files to write.
    pub files: Vec<FpgaFile>,
}

/// The export of a quantised model, with golden vectors of `samples` (whole inputs of
/// stored bytes): its int8 flash image written and checked first, then [`from_image`].
pub fn export(quantized: &Quantized, samples: &[u8]) -> Result<FpgaExport, FpgaError> {
    let image = flash::write::int8(quantized)?;
    from_image(&FlashModel::parse(&image)?, samples)
}

/// The export of an int8 flash image.
pub fn from_image(model: &FlashModel<'_>, samples: &[u8]) -> Result<FpgaExport, FpgaError> {
    let plan = Plan::of(model)?;
    let golden = golden::run(model, samples)?;
    let about = format!(
        "papa int8 model: {} layers, input {} x {} x {}, {} classes, {} weights",
        plan.layers.len(),
        plan.input[0],
        plan.input[1],
        plan.input[2],
        plan.classes,
        plan.weights
    );
    let mut files = Vec::new();
    let mut file = |path: String, text: String| files.push(FpgaFile { path, text });
    file("model.vh".into(), header::verilog(&plan, &about));
    file("model.h".into(), header::c(&plan, &about));

    let mut weights = Vec::with_capacity(plan.weights);
    let (mut bias, mut mult, mut shift) = (Vec::new(), Vec::new(), Vec::new());
    for index in 0..model.layer_count() {
        let l = model.layer(index)?;
        weights.extend(l.weights.iter().map(|&b| i64::from(b as i8)));
        for c in 0..l.geometry.cout {
            let b = l.bias.get(4 * c..4 * c + 4).and_then(|b| b.try_into().ok());
            bias.push(i64::from(b.map_or(0, i32::from_le_bytes)));
            let m = l
                .multiplier(c)
                .unwrap_or(crate::quant::QuantizedMultiplier::ZERO);
            mult.push(i64::from(m.multiplier()));
            shift.push(i64::from(m.shift()));
        }
    }
    let table = (0..plan.input[0])
        .flat_map(|c| model.input_table(c).iter())
        .map(|&b| i64::from(b as i8));
    for (name, bits, values, what) in [
        (
            "weights.mem",
            8,
            weights,
            "int8 weights, every layer's [cout][cin][k][k]",
        ),
        (
            "bias.mem",
            32,
            bias,
            "int32 bias per output channel, every layer",
        ),
        (
            "mult.mem",
            32,
            mult,
            "Q31 requantisation multiplier per output channel",
        ),
        (
            "shift.mem",
            8,
            shift,
            "requantisation shift per output channel (signed)",
        ),
        (
            "input_table.mem",
            8,
            table.collect(),
            "per input channel, the int8 input of each stored byte",
        ),
    ] {
        let text = memory::write(&format!("{name}: {what} ({about})"), bits, values);
        file(name.into(), text);
    }

    file(
        "golden/golden.vh".into(),
        format!(
            "// Golden vectors of the int8 runtime (papa export --format fpga).\nlocalparam integer GOLDEN_SAMPLES = {};\n",
            golden.len()
        ),
    );
    for (s, g) in golden.iter().enumerate() {
        let input = g.input.iter().map(|&b| i64::from(b));
        file(
            format!("golden/s{s:04}_input.mem"),
            memory::write(&format!("sample {s}: stored bytes"), 8, input),
        );
        for (l, y) in g.layers.iter().enumerate() {
            file(
                format!("golden/s{s:04}_layer{l}.mem"),
                memory::write(
                    &format!("sample {s}: layer {l}'s int8 output"),
                    8,
                    y.iter().map(|&v| i64::from(v)),
                ),
            );
        }
    }
    let classes = golden.iter().map(|g| i64::try_from(g.class).unwrap_or(0));
    file(
        "golden/classes.mem".into(),
        memory::write("the class of each sample", 16, classes),
    );
    Ok(FpgaExport {
        plan,
        golden,
        files,
    })
}
