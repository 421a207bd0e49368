//! What the hardware can express: the fixed widths of papa-edge/fpga/rtl/papa_network.v
//! (its `localparam`s of the same names; a test holds the two equal). The flash image
//! already bounds every size to its u16/u8 fields, which the RTL's counters take whole; what
//! is left is the depth of the on-chip memories and the layer counter.

use super::plan::Plan;
use super::FpgaError;

/// Address bits of every on-chip memory (arena, weights, per-channel tensors, input table):
/// 1 Mi entries each, beyond which a model wants external memory these blocks do not drive.
pub const ADDR_BITS: u32 = 20;
/// Bits of the layer counter.
pub const LAYER_BITS: u32 = 6;

/// Entries of the deepest memory.
pub const MAX_MEMORY: usize = 1 << ADDR_BITS;
/// Layers the sequencer counts.
pub const MAX_LAYERS: usize = 1 << LAYER_BITS;

/// Refuses a plan beyond the widths, naming the first size that does not fit.
pub fn check(plan: &Plan) -> Result<(), FpgaError> {
    let too_large = |what: &str, value: usize, max: usize, why| FpgaError::Size {
        what: what.into(),
        value,
        max,
        why,
    };
    if plan.layers.len() > MAX_LAYERS {
        return Err(too_large(
            "layers",
            plan.layers.len(),
            MAX_LAYERS,
            "the layer counter's 6 bits",
        ));
    }
    let memory = "the 20-bit memory address";
    for (what, value) in [
        ("the arena (activation memory)", plan.arena),
        ("the weights, all layers", plan.weights),
        ("the output channels, all layers", plan.channels),
        ("the input table (256 per input channel)", plan.table),
    ] {
        if value > MAX_MEMORY {
            return Err(too_large(what, value, MAX_MEMORY, memory));
        }
    }
    Ok(())
}
