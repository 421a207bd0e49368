//! `papa export` and `papa infer` end to end: tiny models trained by the `papa` binary,
//! exported to ONNX, loaded in tract and compared with papa's own forward on Fashion-MNIST
//! test images; and the commands' errors on bad input.

use papa_edge::tract::Model;
use papa_train::checkpoint::load_model;
use papa_train::data;
use papa_train::model::{argmax, Input, Network};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Test images compared.
const SAMPLES: usize = 300;
/// Largest logit difference allowed, and the top-2 margin below which papa's prediction is a
/// near-tie that rounding may flip.
const TOLERANCE: f32 = 1e-4;

fn papa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_papa"))
        .args(args)
        .output()
        .expect("the papa binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = papa(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "papa {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-member model of `model` trained for one epoch on 600 images; its file.
fn train(dir: &Path, model: &str) -> PathBuf {
    let out = dir.join(model.replace(':', "-"));
    ok(&[
        "train",
        "--method",
        "none",
        "--population",
        "1",
        "--epochs",
        "1",
        "--train-limit",
        "600",
        "--model",
        model,
        "--out",
        out.to_str().unwrap(),
    ]);
    out.join("none.safetensors")
}

/// Exports `file`, compares tract's logits with papa's on the first test images; returns the
/// ONNX file.
fn export_and_compare(file: &Path) -> PathBuf {
    let onnx = file.with_extension("onnx");
    let printed = ok(&[
        "export",
        file.to_str().unwrap(),
        "--format",
        "onnx",
        "--out",
        onnx.to_str().unwrap(),
    ]);
    assert!(printed.contains("BatchNorm folded"), "{printed}");

    let model = load_model(file).unwrap();
    let spec = model.card.spec().unwrap();
    let splits = data::load("fashion-mnist", 0.1, 0).unwrap();
    let mut test = splits.test.clone();
    test.images.truncate(SAMPLES * spec.input_len());
    test.labels.truncate(SAMPLES);
    // As the dataset stores them: the loader divided by the pixel scale.
    let stored: Vec<f32> = test.images.iter().map(|v| v * splits.pixel_scale).collect();
    test.normalize_with(&model.card.normalization).unwrap();
    let mut net = Network::new(&spec, 1, SAMPLES).unwrap();
    let papa = net
        .evaluate(&model.params, Input::Shared(&test.images))
        .unwrap();
    let tract = Model::load(&onnx).unwrap().logits(&stored).unwrap();
    assert_eq!(papa.len(), tract.len());

    let max_diff = papa
        .iter()
        .zip(&tract)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let classes = spec.classes();
    let (mut differ, mut near_ties) = (0, 0);
    for (p, t) in papa.chunks_exact(classes).zip(tract.chunks_exact(classes)) {
        let mut sorted = p.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let tie = sorted[0] - sorted[1] < TOLERANCE;
        near_ties += usize::from(tie);
        if argmax(p) != argmax(t) {
            assert!(
                tie,
                "a prediction differs outside a near-tie: {p:?} vs {t:?}"
            );
            differ += 1;
        }
    }
    println!(
        "{}: max |logit difference| {max_diff:.2e} on {SAMPLES} test images; {differ} predictions differ, all near-ties ({near_ties} near-ties of margin < {TOLERANCE:e})",
        file.display()
    );
    assert!(max_diff <= TOLERANCE, "{max_diff}");

    // int8 (QDQ), calibrated on 256 training images: tract (fake quantisation) predicts
    // nearly as papa's f32 forward does.
    let int8 = file.with_extension("int8.onnx");
    let printed = ok(&[
        "export",
        file.to_str().unwrap(),
        "--format",
        "onnx-int8",
        "--calibration",
        "256",
        "--out",
        int8.to_str().unwrap(),
    ]);
    assert!(
        printed.contains("int8 QDQ calibrated on 256 training images"),
        "{printed}"
    );
    let quantised = Model::load(&int8).unwrap().logits(&stored).unwrap();
    let agree = papa
        .chunks_exact(classes)
        .zip(quantised.chunks_exact(classes))
        .filter(|(p, q)| argmax(p) == argmax(q))
        .count();
    println!(
        "{}: int8 predictions equal to papa's f32 ones on {agree} of {SAMPLES}",
        int8.display()
    );
    assert!(agree * 100 >= 95 * SAMPLES, "{agree} of {SAMPLES}");
    onnx
}

#[test]
fn exported_models_run_in_tract_with_papas_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = export_and_compare(&train(dir.path(), "mlp:32"));
    export_and_compare(&train(dir.path(), "cnn-s"));

    let report = ok(&["infer", mlp.to_str().unwrap(), "--data", "fashion-mnist"]);
    assert!(
        report.contains("test accuracy") && report.contains("on 10000 samples"),
        "{report}"
    );
    assert!(report.contains("latency at batch 1"), "{report}");
    assert!(report.contains("throughput at batch 64"), "{report}");
    let int8 = dir.path().join("mlp-32/none.int8.onnx");
    let report = ok(&["infer", int8.to_str().unwrap(), "--data", "fashion-mnist"]);
    assert!(report.contains("fake quantisation"), "{report}");

    // Bad input: errors that name the problem, no panic.
    let file = dir.path().join("mlp-32/none.safetensors");
    let out = papa(&[
        "export",
        file.to_str().unwrap(),
        "--format",
        "onnx",
        "--opset",
        "12",
        "--out",
        dir.path().join("x.onnx").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("opset 12"),
        "{stderr}"
    );

    let bytes = std::fs::read(&mlp).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = papa(&[
        "infer",
        truncated.to_str().unwrap(),
        "--data",
        "fashion-mnist",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("truncated or corrupt"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Data of another shape: three CSV features.
    let csv = dir.path().join("csv");
    std::fs::create_dir(&csv).unwrap();
    for name in ["train.csv", "test.csv"] {
        std::fs::write(csv.join(name), "a,b,c,label\n1,2,3,0\n4,5,6,1\n").unwrap();
    }
    let out = papa(&[
        "infer",
        mlp.to_str().unwrap(),
        "--data",
        csv.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("the model takes samples of [1, 28, 28]"),
        "{stderr}"
    );
}

/// The `accuracy: f32 A%, int8 B%` line of an int8 flash export, as (A, B).
fn flash_accuracies(printed: &str) -> (String, String) {
    let line = printed
        .lines()
        .find(|l| l.starts_with("accuracy: f32 "))
        .unwrap_or_else(|| panic!("no accuracy line in:\n{printed}"));
    let mut numbers = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.contains('.'));
    (
        numbers.next().unwrap().to_string(),
        numbers.next().unwrap().to_string(),
    )
}

#[test]
fn flash_export_compares_the_averaged_models_int8_loss_with_each_members() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&[
        "train",
        "--method",
        "papa",
        "--population",
        "3",
        "--epochs",
        "1",
        "--train-limit",
        "600",
        "--model",
        "mlp:32",
        "--out",
        run.to_str().unwrap(),
    ]);
    let export = |model: &Path, out: &Path| {
        ok(&[
            "export",
            model.to_str().unwrap(),
            "--format",
            "flash",
            "--calibration",
            "128",
            "--report-samples",
            "300",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let averaged = run.join("papa.safetensors");
    let printed = export(&averaged, &dir.path().join("papa.papa"));
    assert!(
        printed.contains("int8 loss of the averaged model and of each of its 3 members"),
        "{printed}"
    );
    assert!(printed.contains("(best on validation)"), "{printed}");
    assert!(
        printed.contains("the best member on validation (member "),
        "{printed}"
    );
    // The table's first row is the file's own report.
    let (f32_acc, int8_acc) = flash_accuracies(&printed);
    let row = |name: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap_or_else(|| panic!("no row {name} in:\n{printed}"))
            .to_string()
    };
    assert!(
        row("averaged").starts_with(&format!(
            "| averaged (this file) | {f32_acc} | {int8_acc} |"
        )),
        "{printed}"
    );

    // Member 1 of the checkpoint, saved as a model file of its own (no run beside it), gives
    // the same accuracies as its row, and says that it has no members to compare with.
    let state =
        papa_train::checkpoint::load_state(&run.join("checkpoints/papa.safetensors")).unwrap();
    let (shape, population) = &state.buffers["population"];
    let model = load_model(&averaged).unwrap();
    assert_eq!(shape, &[3, model.params.len()]);
    let n = model.params.len();
    let alone = dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    let member_file = alone.join("member1.safetensors");
    papa_train::checkpoint::save_model(&member_file, &model.card, &population[n..2 * n]).unwrap();
    let member_printed = export(&member_file, &alone.join("member1.papa"));
    let (f32_acc, int8_acc) = flash_accuracies(&member_printed);
    assert!(
        row("member 1").starts_with(&format!("| member 1 | {f32_acc} | {int8_acc} |"))
            || row("member 1").starts_with(&format!(
                "| member 1 (best on validation) | {f32_acc} | {int8_acc} |"
            )),
        "{printed}\n{member_printed}"
    );
    assert!(
        member_printed.contains("no population checkpoint beside"),
        "{member_printed}"
    );
}

#[test]
fn fpga_export_writes_the_rtl_files_and_refuses_f32() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path(), "mlp:16");
    let out = dir.path().join("fpga");
    let export = |extra: &[&str]| {
        let mut args = vec![
            "export",
            model.to_str().unwrap(),
            "--format",
            "fpga",
            "--golden-samples",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        papa(&args)
    };
    let refused = export(&["--precision", "f32"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("run int8 images"),
        "{stderr}"
    );
    assert!(!out.exists(), "a refused export wrote {}", out.display());

    let written = export(&[]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    for file in [
        "model.vh",
        "model.h",
        "weights.mem",
        "bias.mem",
        "golden/s0001_layer1.mem",
    ] {
        assert!(out.join(file).is_file(), "no {file}");
    }
    // One hex word per weight (784 x 16 + 16 x 10), after the header line $readmemh skips.
    let weights = std::fs::read_to_string(out.join("weights.mem")).unwrap();
    let words = weights.lines().filter(|l| !l.starts_with("//")).count();
    assert_eq!(
        words,
        784 * 16 + 16 * 10,
        "{}",
        &weights[..200.min(weights.len())]
    );
}
