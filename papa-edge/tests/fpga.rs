//! The FPGA export: golden vectors against the int8 runtime, memory files read back,
//! the header, refusals of what the hardware cannot express, and (when iverilog is
//! installed) the RTL testbench on an export, bit for bit.

mod common;

use common::{quantised, stored_pixels, Card};
use papa_core::rng::Rng;
use papa_edge::flash::{write, FlashModel, Precision};
use papa_edge::fpga::{self, limits, memory, FpgaError, FpgaExport};
use papa_edge::runtime::Input;
use papa_model::file::ModelFile;
use papa_model::layer::Layer;
use papa_model::zoo;
use std::path::Path;
use std::process::Command;

fn random_model(layers: &[Layer], input: [usize; 3], classes: usize, seed: u64) -> ModelFile {
    let card = Card::pixels("fpga-test", input[0]);
    common::random_model(layers, input, classes, seed, None, card)
}

/// conv(5) - BN - ReLU - maxpool2 - conv(4) - ReLU - flatten - linear(12) - ReLU -
/// linear(5) on 2 x 9 x 9: two input channels, the pool's floor, a conv without a pool.
fn cnn() -> ModelFile {
    let layers = [
        Layer::conv3x3(5),
        Layer::BatchNorm,
        Layer::Relu,
        Layer::max_pool2(),
        Layer::conv3x3(4),
        Layer::Relu,
        Layer::Flatten,
        Layer::Linear { out_features: 12 },
        Layer::Relu,
        Layer::Linear { out_features: 5 },
    ];
    random_model(&layers, [2, 9, 9], 5, 21)
}

fn mlp() -> ModelFile {
    random_model(&zoo::mlp(&[16, 8], 4), [1, 5, 6], 4, 22)
}

fn file<'a>(export: &'a FpgaExport, path: &str) -> &'a str {
    &export
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path}"))
        .text
}

#[test]
fn golden_vectors_are_the_int8_runtimes_layer_outputs_read_back_from_the_files() {
    for model in [cnn(), mlp()] {
        let q = quantised(&model, &stored_pixels(&model, 64, 1));
        let samples = stored_pixels(&model, 7, 2);
        let export = fpga::export(&q, &samples).unwrap();
        let image = write::int8(&q).unwrap();
        let flash = FlashModel::parse(&image).unwrap();
        let mut arena = vec![0i8; flash.arena_len()];
        assert_eq!(export.golden.len(), 7);
        for (s, sample) in samples.chunks(flash.input_len()).enumerate() {
            let mut traced = vec![Vec::new(); flash.layer_count()];
            let class = flash
                .infer_int8_traced(Input::Bytes(sample), &mut arena, |i, y| {
                    traced[i] = y.to_vec()
                })
                .unwrap()
                .class;
            let input = memory::read(
                file(&export, &format!("golden/s{s:04}_input.mem")),
                8,
                false,
            );
            let input: Vec<u8> = input.unwrap().iter().map(|&v| v as u8).collect();
            assert_eq!(input, sample);
            for (l, expected) in traced.iter().enumerate() {
                let path = format!("golden/s{s:04}_layer{l}.mem");
                let got: Vec<i8> = memory::read(file(&export, &path), 8, true)
                    .unwrap()
                    .iter()
                    .map(|&v| v as i8)
                    .collect();
                assert_eq!(&got, expected, "{path}");
            }
            // The last layer's golden output is the runtime's logits.
            let logits = flash.infer_int8(Input::Bytes(sample), &mut arena).unwrap();
            assert_eq!(traced.last().unwrap(), logits.logits);
            let classes = memory::read(file(&export, "golden/classes.mem"), 16, false).unwrap();
            assert_eq!(classes[s], class as i64);
        }
        // The memories hold the image's tensors.
        let weights = memory::read(file(&export, "weights.mem"), 8, true).unwrap();
        let image_weights: Vec<i64> = (0..flash.layer_count())
            .flat_map(|i| flash.layer(i).unwrap().weights.to_vec())
            .map(|b| i64::from(b as i8))
            .collect();
        assert_eq!(weights, image_weights);
        let shifts = memory::read(file(&export, "shift.mem"), 8, true).unwrap();
        let mults = memory::read(file(&export, "mult.mem"), 32, true).unwrap();
        let mut k = 0;
        for i in 0..flash.layer_count() {
            let l = flash.layer(i).unwrap();
            for c in 0..l.geometry.cout {
                let m = l.multiplier(c).unwrap();
                assert_eq!(
                    (mults[k], shifts[k]),
                    (m.multiplier().into(), m.shift().into())
                );
                k += 1;
            }
        }
        assert_eq!(k, export.plan.channels);
    }
}

#[test]
fn memory_files_round_trip() {
    let mut rng = Rng::new(5);
    for bits in [8u32, 16, 32] {
        let half = 1i64 << (bits - 1);
        let values: Vec<i64> = (0..500)
            .map(|_| (rng.uniform_f32() as f64 * (2 * half) as f64) as i64 - half)
            .chain([-half, half - 1, 0, -1])
            .collect();
        let text = memory::write("a comment\nover two lines", bits, values.iter().copied());
        assert_eq!(text.lines().count(), values.len() + 1);
        assert!(text
            .lines()
            .skip(1)
            .all(|l| l.len() == bits as usize / 4 && l.chars().all(|c| c.is_ascii_hexdigit())));
        assert_eq!(memory::read(&text, bits, true).unwrap(), values);
    }
    assert_eq!(memory::read("1ff\n", 8, false), None);
    assert_eq!(memory::read("zz\n", 8, false), None);
    assert_eq!(memory::read("ff\n", 8, false), Some(vec![255]));
}

#[test]
fn the_header_gives_every_layer_and_the_rtl_widths_are_the_exporters() {
    let model = cnn();
    let q = quantised(&model, &stored_pixels(&model, 32, 1));
    let export = fpga::export(&q, &stored_pixels(&model, 1, 2)).unwrap();
    let vh = file(&export, "model.vh");
    assert!(vh.contains("localparam integer NUM_LAYERS = 4;"), "{vh}");
    assert!(vh.contains("localparam integer IN_LEN = 162;"));
    // Layer 1 (conv 5 -> 4 on 5 x 5 after the pool), layer 0 in the low bits.
    assert!(vh.contains(
        "localparam [32*NUM_LAYERS-1:0] L_COUT = {32'h00000005, 32'h0000000c, 32'h00000004, 32'h00000005};"
    ));
    assert!(vh.contains("L_NEG_PAD = {32'h00000000, 32'h00000000, 32'hffffffff, 32'hffffffff};"));
    let h = file(&export, "model.h");
    assert!(h.contains("#define PAPA_L_COUT {5, 4, 12, 5}"), "{h}");
    assert_eq!(export.plan.layers[1].input_len(), 5 * 4 * 4);

    let rtl = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fpga/rtl/papa_network.v"),
    )
    .unwrap();
    for (name, value) in [
        ("ADDR_BITS", limits::ADDR_BITS),
        ("LAYER_BITS", limits::LAYER_BITS),
    ] {
        assert!(
            rtl.contains(&format!("localparam {name} = {value};")),
            "papa_network.v's {name} is not the exporter's {value}"
        );
    }
}

#[test]
fn what_the_hardware_cannot_express_is_refused() {
    // A layer type: a second ReLU (the blocks fuse one into the layer before it).
    let model = random_model(
        &[
            Layer::Flatten,
            Layer::Linear { out_features: 3 },
            Layer::Relu,
            Layer::Relu,
            Layer::Linear { out_features: 2 },
        ],
        [1, 2, 2],
        2,
        1,
    );
    let q = quantised(&model, &stored_pixels(&model, 8, 1));
    let err = fpga::export(&q, &stored_pixels(&model, 1, 2)).unwrap_err();
    assert!(matches!(err, FpgaError::Model(_)), "{err}");
    assert!(err.to_string().contains("ReLU"), "{err}");

    // An f32 image.
    let image = write::f32(&mlp()).unwrap();
    let err = fpga::from_image(&FlashModel::parse(&image).unwrap(), &[]).unwrap_err();
    assert!(matches!(err, FpgaError::Precision(Precision::F32)), "{err}");

    // More layers than the sequencer counts.
    let deep = random_model(&zoo::mlp(&[2; limits::MAX_LAYERS], 2), [1, 1, 2], 2, 3);
    let q = quantised(&deep, &stored_pixels(&deep, 8, 1));
    let err = fpga::export(&q, &[]).unwrap_err();
    assert!(
        matches!(err, FpgaError::Size { ref what, value, max, .. } if what == "layers" && value == limits::MAX_LAYERS + 1 && max == limits::MAX_LAYERS),
        "{err}"
    );

    // More weights than the weight memory's address reaches (1,024 x 1,025 > 2^20).
    let wide = random_model(&zoo::mlp(&[1025], 2), [1, 32, 32], 2, 4);
    let q = quantised(&wide, &stored_pixels(&wide, 2, 1));
    let err = fpga::export(&q, &[]).unwrap_err();
    assert!(
        matches!(err, FpgaError::Size { value, max, .. } if value == 1024 * 1025 + 1025 * 2 && max == limits::MAX_MEMORY),
        "{err}"
    );
    assert!(err.to_string().contains("weights"), "{err}");

    // Golden samples that are not whole inputs.
    let model = mlp();
    let q = quantised(&model, &stored_pixels(&model, 8, 1));
    let err = fpga::export(&q, &[0; 31]).unwrap_err();
    assert!(
        matches!(
            err,
            FpgaError::Samples {
                input_len: 30,
                found: 31
            }
        ),
        "{err}"
    );

    // Golden sample values that the input port cannot take (CSV features, say).
    assert_eq!(
        fpga::stored_bytes(&[0.0, 17.0, 255.0]).unwrap(),
        [0, 17, 255]
    );
    for bad in [1.5, -1.0, 256.0, f32::NAN] {
        let err = fpga::stored_bytes(&[3.0, bad]).unwrap_err();
        assert!(
            matches!(err, FpgaError::NotBytes { value } if value.to_bits() == bad.to_bits()),
            "{err}"
        );
        assert!(err.to_string().contains("0 to 255"), "{err}");
    }
}

/// The RTL on an export, when iverilog is installed (CI installs it in its own step, which
/// also runs the zoo's models): every layer bit for bit.
#[test]
fn the_testbench_matches_the_golden_vectors_when_iverilog_is_installed() {
    if Command::new("iverilog").arg("-V").output().is_err() {
        println!("SKIP: iverilog is not installed; the RTL testbench did not run (CI's FPGA step runs it)");
        return;
    }
    let rtl = Path::new(env!("CARGO_MANIFEST_DIR")).join("fpga");
    for (name, model) in [("cnn", cnn()), ("mlp", mlp())] {
        let q = quantised(&model, &stored_pixels(&model, 64, 1));
        let export = fpga::export(&q, &stored_pixels(&model, 4, 3)).unwrap();
        let dir =
            std::env::temp_dir().join(format!("papa-fpga-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("golden")).unwrap();
        for f in &export.files {
            std::fs::write(dir.join(&f.path), &f.text).unwrap();
        }
        let mut sources: Vec<_> = std::fs::read_dir(rtl.join("rtl"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        sources.sort();
        sources.push(rtl.join("tb/tb_network.v"));
        let compiled = Command::new("iverilog")
            .current_dir(&dir)
            .args(["-g2012", "-I", ".", "-I", "golden", "-o", "tb.vvp"])
            .args(&sources)
            .output()
            .unwrap();
        assert!(
            compiled.status.success(),
            "{}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let run = Command::new("vvp")
            .current_dir(&dir)
            .args(["-n", "tb.vvp"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success() && out.contains("tb_network: PASS"),
            "{name}: {out}"
        );
        println!(
            "{name}: {}",
            out.lines().find(|l| l.contains("bit-exact")).unwrap_or("")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
