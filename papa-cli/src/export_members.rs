//! Does the averaged model lose less to int8 than a single member would? `papa export
//! --format flash` (int8) quantises every member of the run beside the model file (the
//! method's last population checkpoint) exactly as it quantised the model, on the same
//! calibration images, and compares what each loses on the same test images.

use crate::error::CliError;
use papa_edge::flash::{self, FlashModel, QuantizationReport};
use papa_edge::onnx::{self, ExportError};
use papa_model::file::ModelFile;
use papa_train::checkpoint::load_state;
use papa_train::report::MethodResult;
use std::path::{Path, PathBuf};

/// The int8 image of `model`, calibrated on `images` (stored values) as `papa export` does.
pub fn int8_image(model: &ModelFile, images: &[f32]) -> Result<Vec<u8>, ExportError> {
    let calibration = onnx::calibrate(model, images)?;
    let quantized = onnx::quantize(model, &calibration)?;
    flash::write::int8(&quantized)
}

/// The per-layer report of `model`'s int8 image against its f32 image on `stored`.
fn member_report(
    member: &ModelFile,
    images: &[f32],
    stored: &[f32],
    labels: &[u8],
) -> Result<QuantizationReport, String> {
    let f32_bytes = flash::write::f32(member).map_err(|e| e.to_string())?;
    let int8_bytes = int8_image(member, images).map_err(|e| e.to_string())?;
    let f32_image = FlashModel::parse(&f32_bytes).map_err(|e| e.to_string())?;
    let int8_image = FlashModel::parse(&int8_bytes).map_err(|e| e.to_string())?;
    flash::quantization_report(&f32_image, &int8_image, stored, labels).map_err(|e| e.to_string())
}

/// Where a model file `<run>/<method>.safetensors` finds its population: the method's last
/// epoch checkpoint and its result (for the members' validation accuracies).
fn run_files(model_path: &Path) -> Option<(PathBuf, PathBuf)> {
    let method = model_path.file_stem()?.to_str()?;
    let checkpoints = model_path.parent()?.join("checkpoints");
    let state = checkpoints.join(format!("{method}.safetensors"));
    let result = checkpoints.join(format!("{method}.result.json"));
    (state.is_file() && result.is_file()).then_some((state, result))
}

/// Prints the averaged model's int8 loss beside each member's, and whether it loses less
/// than the member with the best validation accuracy. A model file without its run's
/// population beside it (a file copied elsewhere, a run before checkpoints) gets one line
/// saying so.
pub fn compare(
    model_path: &Path,
    model: &ModelFile,
    averaged: &QuantizationReport,
    images: &[f32],
    stored: &[f32],
    labels: &[u8],
) -> Result<(), CliError> {
    let Some((state_path, result_path)) = run_files(model_path) else {
        return out!(
            "members: no population checkpoint beside {} (checkpoints/<method>.safetensors): the comparison with single members is skipped",
            model_path.display()
        );
    };
    let result: MethodResult = serde_json::from_str(
        &std::fs::read_to_string(&result_path)
            .map_err(|e| result_error(&result_path, serde_json::Error::io(e)))?,
    )
    .map_err(|e| result_error(&result_path, e))?;
    let state = load_state(&state_path)?;
    let n = model.params.len();
    let population = match state.buffers.get("population") {
        Some((shape, values)) if shape.len() == 2 && shape[1] == n => values,
        _ => {
            return out!(
                "members: {} holds no population of this model's {n} parameters: the comparison with single members is skipped",
                state_path.display()
            )
        }
    };
    let best = best_on_validation(&result.validation.members);
    let mut rows = Vec::new();
    for (i, params) in population.chunks_exact(n).enumerate() {
        let member = ModelFile {
            card: model.card.clone(),
            params: params.to_vec(),
        };
        let report =
            member_report(&member, images, stored, labels).map_err(|message| CliError::Export {
                path: state_path.clone(),
                source: ExportError::Flash(format!("member {i}: {message}")),
            })?;
        rows.push(report);
    }
    out!(
        "int8 loss of the averaged model and of each of its {} members (from {}; same calibration and test images):",
        rows.len(),
        state_path.display()
    )?;
    out!("| model | f32 | int8 | points lost | logits' relative rms error |")?;
    out!("|---|---|---|---|---|")?;
    print_row("averaged (this file)", averaged)?;
    for (i, r) in rows.iter().enumerate() {
        let tag = if Some(i) == best {
            " (best on validation)"
        } else {
            ""
        };
        print_row(&format!("member {i}{tag}"), r)?;
    }
    let lost = |r: &QuantizationReport| r.f32_accuracy - r.int8_accuracy;
    let members_mean = rows.iter().map(lost).sum::<f64>() / rows.len().max(1) as f64;
    match best.and_then(|b| rows.get(b).map(|r| (b, r))) {
        Some((b, r)) => out!(
            "the averaged model loses {:.2} points to int8 (logits {:.2}%), the best member on validation (member {b}) {:.2} (logits {:.2}%), the members {members_mean:.2} on average: the averaged model loses {} the best member",
            lost(averaged),
            100.0 * logit_error(averaged),
            lost(r),
            100.0 * logit_error(r),
            verdict(lost(averaged), lost(r))
        ),
        None => out!(
            "the averaged model loses {:.2} points to int8, the members {members_mean:.2} on average ({} records no validation accuracies, so no best member)",
            lost(averaged),
            result_path.display()
        ),
    }
}

/// The member with the highest validation accuracy (the first of equals), as the trainer
/// picks its best member.
fn best_on_validation(validation: &[f32]) -> Option<usize> {
    validation
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

/// The last layer's (the logits') rms error relative to its f32 rms.
fn logit_error(r: &QuantizationReport) -> f64 {
    r.layers.last().map_or(0.0, |l| l.relative())
}

fn verdict(averaged: f64, best: f64) -> &'static str {
    if averaged < best {
        "less than"
    } else if averaged > best {
        "more than"
    } else {
        "as much as"
    }
}

fn print_row(name: &str, r: &QuantizationReport) -> Result<(), CliError> {
    out!(
        "| {name} | {:.2} | {:.2} | {:.2} | {:.2}% |",
        r.f32_accuracy,
        r.int8_accuracy,
        r.f32_accuracy - r.int8_accuracy,
        100.0 * logit_error(r)
    )
}

fn result_error(path: &Path, source: serde_json::Error) -> CliError {
    CliError::Result {
        path: path.to_path_buf(),
        source,
    }
}
