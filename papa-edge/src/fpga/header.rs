//! The parameter header, as Verilog (`model.vh`, `localparam`s the RTL and the testbench
//! include) and as C (`model.h`, `#define`s for C or HLS code): the same names and values.
//!
//! Scalars are plain numbers. A per-layer value is one 32-bit field per layer packed into
//! one vector, layer 0 in the low bits (`L_CIN[32*l +: 32]` in Verilog; a C array
//! initialiser `{layer 0, layer 1, ...}`), two's complement where it can be negative.

use super::plan::{LayerPlan, Plan};
use std::fmt::Write;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

/// The header's entries: a scalar or one value per layer, with what it means.
fn entries(plan: &Plan) -> (Vec<(&'static str, i64, &'static str)>, Vec<Field>) {
    let [c, h, w] = plan.input;
    let scalars = vec![
        ("NUM_LAYERS", u(plan.layers.len()), "conv/linear layers"),
        ("IN_CHANNELS", u(c), "input channels"),
        ("IN_H", u(h), "input height"),
        ("IN_W", u(w), "input width"),
        ("IN_LEN", u(c * h * w), "stored bytes per input"),
        ("IN_PLANE", u(h * w), "bytes per input channel"),
        ("CLASSES", u(plan.classes), "logits"),
        (
            "ARENA_LEN",
            u(plan.arena),
            "activation memory (int8 entries)",
        ),
        ("WEIGHTS_LEN", u(plan.weights), "entries of weights.mem"),
        (
            "CHANNELS_LEN",
            u(plan.channels),
            "entries of bias.mem, mult.mem, shift.mem",
        ),
        ("TABLE_LEN", u(plan.table), "entries of input_table.mem"),
    ];
    type Get = fn(&LayerPlan) -> i64;
    let fields: Vec<(&'static str, &'static str, Get)> = vec![
        (
            "L_CONV",
            "1: conv (papa_conv), 0: linear (papa_dense)",
            |l| i64::from(l.geometry.conv),
        ),
        ("L_CIN", "input channels (features)", |l| u(l.geometry.cin)),
        ("L_COUT", "output channels (features)", |l| {
            u(l.geometry.cout)
        }),
        ("L_H", "input height", |l| u(l.geometry.h)),
        ("L_W", "input width", |l| u(l.geometry.w)),
        ("L_K", "kernel", |l| u(l.geometry.kernel)),
        ("L_STRIDE", "conv stride", |l| u(l.geometry.stride)),
        ("L_POOL_K", "max-pool window (1: none)", |l| u(l.pool().0)),
        ("L_OUT_H", "output height, after the pool", |l| {
            u(l.geometry.out_h)
        }),
        ("L_OUT_W", "output width", |l| u(l.geometry.out_w)),
        (
            "L_NEG_PAD",
            "minus the padding (the first window's corner)",
            |l| -u(l.geometry.padding),
        ),
        ("L_IN_ZP", "input zero point", |l| {
            i64::from(l.geometry.input_zero_point)
        }),
        ("L_OUT_ZP", "output zero point", |l| {
            i64::from(l.output_zero_point)
        }),
        ("L_CLAMP_MIN", "output clamp, low (the ReLU's)", |l| {
            i64::from(l.geometry.clamp.0)
        }),
        ("L_CLAMP_MAX", "output clamp, high", |l| {
            i64::from(l.geometry.clamp.1)
        }),
        ("L_W_BASE", "first weight in weights.mem", |l| u(l.w_base)),
        ("L_C_BASE", "first channel in bias/mult/shift.mem", |l| {
            u(l.c_base)
        }),
        ("L_RD_BASE", "input's start in the arena", |l| u(l.rd_base)),
        ("L_WR_BASE", "output's start in the arena", |l| u(l.wr_base)),
        ("L_IN_LEN", "values read", |l| u(l.input_len())),
        ("L_OUT_LEN", "values written", |l| u(l.output_len())),
        (
            "L_ROW_LEN",
            "weights per output channel",
            |l| u(l.row_len()),
        ),
        (
            "L_START",
            "arena address of output (0, 0)'s first tap",
            |l| l.increments()[0],
        ),
        ("L_D_ROW", "address step to the next kernel row", |l| {
            l.increments()[1]
        }),
        ("L_D_PLANE", "address step to the next input channel", |l| {
            l.increments()[2]
        }),
        ("L_S_W", "address step one conv row down", |l| {
            l.increments()[3]
        }),
        (
            "L_P_STEP",
            "pool step right (coordinate and address)",
            |l| l.increments()[4],
        ),
        ("L_P_ROW", "address step one pool row down", |l| {
            l.increments()[5]
        }),
    ];
    let fields = fields
        .into_iter()
        .map(|(name, doc, get)| Field {
            name,
            doc,
            values: plan.layers.iter().map(get).collect(),
        })
        .collect();
    (scalars, fields)
}

/// A size as a header value.
fn u(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

struct Field {
    name: &'static str,
    doc: &'static str,
    values: Vec<i64>,
}

/// `model.vh`: the Verilog header (`localparam`s, included inside a module).
pub fn verilog(plan: &Plan, about: &str) -> String {
    let (scalars, fields) = entries(plan);
    let mut v = format!(
        "// {about}\n// Written by `papa export --format fpga`; included inside papa_network and tb_network.\n"
    );
    for (name, value, doc) in scalars {
        let _ = writeln!(v, "localparam integer {name} = {value}; // {doc}");
    }
    let _ = writeln!(
        v,
        "// Per layer: 32 bits each, layer 0 in the low bits (FIELD[32*l +: 32])."
    );
    for f in fields {
        let words: Vec<String> = f
            .values
            .iter()
            .rev()
            .map(|&x| format!("32'h{:08x}", x as u32))
            .collect();
        let _ = writeln!(
            v,
            "localparam [32*NUM_LAYERS-1:0] {} = {{{}}}; // {}",
            f.name,
            words.join(", "),
            f.doc
        );
    }
    v
}

/// `model.h`: the same values as C `#define`s (`PAPA_` prefixed; per-layer values as array
/// initialisers).
pub fn c(plan: &Plan, about: &str) -> String {
    let (scalars, fields) = entries(plan);
    let mut h = format!(
        "/* {about} */\n/* Written by `papa export --format fpga`: the values of model.vh. */\n#ifndef PAPA_FPGA_MODEL_H\n#define PAPA_FPGA_MODEL_H\n\n"
    );
    for (name, value, doc) in scalars {
        let _ = writeln!(h, "#define PAPA_{name} {value} /* {doc} */");
    }
    for f in fields {
        let values: Vec<String> = f.values.iter().map(|x| x.to_string()).collect();
        let _ = writeln!(
            h,
            "#define PAPA_{} {{{}}} /* {} */",
            f.name,
            values.join(", "),
            f.doc
        );
    }
    h.push_str("\n#endif\n");
    h
}
