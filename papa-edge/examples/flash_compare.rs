//! Flash images (`papa export --format flash`) against papa's own forward on a dataset's
//! test split, with papa-edge's microcontroller runtime compiled for the host:
//! - the f32 image's logits within 1e-4 of papa's forward on every test sample;
//! - the int8 image's accuracy within 1 point of the f32 image's;
//! - `--dump DIR --samples K`: the first K test samples (`samples.u8`, `labels.u8`) for the
//!   firmware, and `host.txt`, the `correct C/K` line and the logits' digest the firmware
//!   must print for each image.
//!
//! The exit status is 1 when a check fails.
//!
//! ```text
//! cargo run --release -p papa-edge --example flash_compare -- MODEL.safetensors \
//!     INT8.papa F32.papa [--limit N] [--dump DIR --samples K]
//! ```

use papa_edge::flash::FlashModel;
use papa_edge::runtime::{Digest, Input};
use papa_train::checkpoint::load_model;
use papa_train::data;
use papa_train::model::{Input as NetInput, Network};
use std::error::Error;
use std::path::PathBuf;

/// The f32 image's largest logit difference from papa's forward.
const F32_TOLERANCE: f32 = 1e-4;
/// The largest accuracy drop (points) of the int8 image against the f32 one.
const INT8_MAX_DROP: f64 = 1.0;
const BATCH: usize = 500;

fn main() -> Result<(), Box<dyn Error>> {
    let mut positional = Vec::new();
    let (mut limit, mut dump, mut samples) = (0usize, None::<PathBuf>, 300usize);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--limit" => limit = value()?.parse()?,
            "--dump" => dump = Some(value()?.into()),
            "--samples" => samples = value()?.parse()?,
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [model, int8, f32] = <[PathBuf; 3]>::try_from(positional).map_err(|_| {
        "usage: flash_compare MODEL.safetensors INT8.papa F32.papa [--limit N] [--dump DIR --samples K]"
    })?;
    let file = load_model(&model)?;
    let spec = file.card.spec()?;
    let source = file
        .card
        .provenance
        .as_ref()
        .map(|p| p.dataset.clone())
        .ok_or("the model records no dataset")?;
    let splits = data::load(&source, 0.1, 0)?;
    let mut test = splits.test.clone();
    let n = if limit == 0 {
        test.len()
    } else {
        limit.min(test.len())
    };
    let (sample, classes) = (spec.input_len(), spec.classes());
    test.images.truncate(n * sample);
    test.labels.truncate(n);
    let stored: Vec<f32> = test.images.iter().map(|v| v * splits.pixel_scale).collect();
    test.normalize_with(&file.card.normalization)?;

    let (int8_bytes, f32_bytes) = (std::fs::read(&int8)?, std::fs::read(&f32)?);
    let (qm, fm) = (
        FlashModel::parse(&int8_bytes)?,
        FlashModel::parse(&f32_bytes)?,
    );
    let (mut qa, mut fa) = (vec![0i8; qm.arena_len()], vec![0f32; fm.arena_len()]);
    let mut net = Network::new(&spec, 1, BATCH)?;
    let (mut max_diff, mut f32_correct, mut int8_correct) = (0f32, Vec::new(), Vec::new());
    for (normalised, (raw, labels)) in test
        .images
        .chunks(BATCH * sample)
        .zip(stored.chunks(BATCH * sample).zip(test.labels.chunks(BATCH)))
    {
        let papa = net.evaluate(&file.params, NetInput::Shared(normalised))?;
        for ((x, expected), &label) in raw.chunks(sample).zip(papa.chunks(classes)).zip(labels) {
            let f = fm.infer_f32(Input::F32(x), &mut fa)?;
            for (a, b) in f.logits.iter().zip(expected) {
                max_diff = max_diff.max((a - b).abs());
            }
            f32_correct.push(f.class == usize::from(label));
            int8_correct.push(qm.infer_int8(Input::F32(x), &mut qa)?.class == usize::from(label));
        }
    }
    let pct = |v: &[bool]| 100.0 * v.iter().filter(|&&c| c).count() as f64 / v.len().max(1) as f64;
    let (fa_pct, qa_pct) = (pct(&f32_correct), pct(&int8_correct));
    println!(
        "flash runtime (host) on {n} test samples of {source}: f32 image max |logit - papa's| {max_diff:.3e}, accuracy f32 {fa_pct:.2}%, int8 {qa_pct:.2}% ({:+.2} points)",
        qa_pct - fa_pct
    );
    if let Some(dir) = dump {
        std::fs::create_dir_all(&dir)?;
        let k = samples.min(n);
        let bytes: Vec<u8> = stored[..k * sample]
            .iter()
            .map(|&v| u8::try_from(v as i64).ok().filter(|&b| f32::from(b) == v))
            .collect::<Option<_>>()
            .ok_or(
                "the firmware takes stored bytes: this dataset's values are not 0..=255 integers",
            )?;
        std::fs::write(dir.join("samples.u8"), &bytes)?;
        std::fs::write(dir.join("labels.u8"), &test.labels[..k])?;
        let count = |v: &[bool]| v[..k].iter().filter(|&&c| c).count();
        // The logits of the firmware's own inputs (the stored bytes), fingerprinted as the
        // firmware does: the device must give the same bits.
        let (mut int8_digest, mut f32_digest) = (Digest::new(), Digest::new());
        for x in bytes.chunks(sample) {
            int8_digest.add_i8(qm.infer_int8(Input::Bytes(x), &mut qa)?.logits);
            f32_digest.add_f32(fm.infer_f32(Input::Bytes(x), &mut fa)?.logits);
        }
        let host = format!(
            "int8 correct {}/{k}\nf32 correct {}/{k}\nint8 logits {:08x}\nf32 logits {:08x}\n",
            count(&int8_correct),
            count(&f32_correct),
            int8_digest.value(),
            f32_digest.value()
        );
        std::fs::write(dir.join("host.txt"), host)?;
    }
    let mut ok = true;
    if max_diff > F32_TOLERANCE {
        eprintln!(
            "FAIL: the f32 image's logits differ from papa's by {max_diff:e} (> {F32_TOLERANCE:e})"
        );
        ok = false;
    }
    if qa_pct < fa_pct - INT8_MAX_DROP {
        eprintln!("FAIL: the int8 image loses more than {INT8_MAX_DROP} point against the f32 one");
        ok = false;
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
