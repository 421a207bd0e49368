//! An exported model against papa's own forward, on a dataset's test split: agreement of
//! the logits and predictions, and latency (batch 1) and throughput (batch 64) of both.
//!
//! An f32 export must give papa's logits within 1e-4 and its predictions except near-ties;
//! an int8 export (`papa export --format onnx-int8`), which tract runs as f32 arithmetic on
//! the dequantised values (fake quantisation), must be within 1 point of papa's f32
//! accuracy. The exit status is 1 when the check fails.
//!
//! ```text
//! cargo run --release -p papa-edge --example onnx_compare -- MODEL.safetensors MODEL.onnx \
//!     [--data NAME] [--limit N] [--threads T] [--dump DIR] [--bench]
//! ```
//!
//! `--dump DIR` writes what `scripts/onnx-check.py` compares onnxruntime with:
//! `inputs.bin` (the samples as the dataset stores them, f32 little-endian, NCHW),
//! `papa-logits.bin` (papa's logits, f32, `samples x classes`), `tract-logits.bin` (tract's,
//! on the ONNX file) and `labels.bin` (u8).

use papa_edge::names::META_QUANTIZATION;
use papa_edge::tract::Model;
use papa_train::checkpoint::load_model;
use papa_train::data;
use papa_train::model::{argmax, Input, Network};
use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

/// Samples per forward for the comparison.
const BATCH: usize = 500;
/// Logits closer than this are a tie: their order may differ between runtimes.
const MARGIN: f32 = 1e-4;
/// Samples timed one by one for the latency.
const LATENCY_SAMPLES: usize = 200;
/// The largest accuracy drop (points) of an int8 export against papa's f32 forward.
const INT8_MAX_DROP: f64 = 1.0;

struct Args {
    model: PathBuf,
    onnx: PathBuf,
    data: Option<String>,
    limit: usize,
    threads: usize,
    dump: Option<PathBuf>,
    bench: bool,
}

fn parse() -> Result<Args, Box<dyn Error>> {
    let mut positional = Vec::new();
    let mut args = Args {
        model: PathBuf::new(),
        onnx: PathBuf::new(),
        data: None,
        limit: 0,
        threads: 1,
        dump: None,
        bench: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--data" => args.data = Some(value()?),
            "--limit" => args.limit = value()?.parse()?,
            "--threads" => args.threads = value()?.parse()?,
            "--dump" => args.dump = Some(value()?.into()),
            "--bench" => args.bench = true,
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [model, onnx] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|_| "usage: onnx_compare MODEL.safetensors MODEL.onnx [--data NAME] [--limit N] [--threads T] [--dump DIR] [--bench]")?;
    (args.model, args.onnx) = (model, onnx);
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse()?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()?;
    let file = load_model(&args.model)?;
    let card = &file.card;
    let spec = card.spec()?;
    let provenance = card.provenance.as_ref();
    let source = match (&args.data, provenance) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => p.dataset.clone(),
        (None, None) => return Err("the model records no dataset: give --data".into()),
    };
    let splits = data::load(&source, 0.1, 0)?;
    let mut test = splits.test.clone();
    let n = if args.limit == 0 {
        test.len()
    } else {
        args.limit.min(test.len())
    };
    let (sample, classes) = (spec.input_len(), spec.classes());
    test.images.truncate(n * sample);
    test.labels.truncate(n);
    // The loader divides by the pixel scale (v / 255 * 255 is v again in f32).
    let stored: Vec<f32> = test.images.iter().map(|v| v * splits.pixel_scale).collect();
    test.normalize_with(&card.normalization)?;

    let onnx = Model::load(&args.onnx)?;
    let mut net = Network::new(&spec, 1, BATCH)?;
    let (mut papa, mut tract) = (Vec::with_capacity(n * classes), Vec::new());
    for (normalised, raw) in test
        .images
        .chunks(BATCH * sample)
        .zip(stored.chunks(BATCH * sample))
    {
        papa.extend_from_slice(net.evaluate(&file.params, Input::Shared(normalised))?);
        tract.extend(onnx.logits(raw)?);
    }
    let max_diff = papa
        .iter()
        .zip(&tract)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let (mut differ, mut excused, mut near_ties) = (0, 0, 0);
    let (mut papa_correct, mut tract_correct) = (0, 0);
    for ((p, t), &label) in papa
        .chunks_exact(classes)
        .zip(tract.chunks_exact(classes))
        .zip(&test.labels)
    {
        let (pc, tc) = (argmax(p), argmax(t));
        let tie = top2_margin(p) < MARGIN;
        near_ties += usize::from(tie);
        if pc != tc {
            differ += 1;
            excused += usize::from(tie);
        }
        papa_correct += usize::from(pc == usize::from(label));
        tract_correct += usize::from(tc == usize::from(label));
    }
    let pct = |c: usize| 100.0 * c as f64 / n.max(1) as f64;
    let int8 = onnx.metadata(META_QUANTIZATION).is_some();
    let runtime = if int8 {
        "tract (int8 QDQ, run as f32: fake quantisation)"
    } else {
        "tract"
    };
    println!(
        "{} vs {} on {n} test samples of {source}: max |logit difference| {max_diff:.3e}; predictions differ on {differ} ({excused} of them where papa's top-2 margin < {MARGIN:e}; {near_ties} such near-ties in all); accuracy papa {:.2}%, {runtime} {:.2}%",
        args.model.display(),
        args.onnx.display(),
        pct(papa_correct),
        pct(tract_correct)
    );
    let failure = if int8 {
        let drop = pct(papa_correct) - pct(tract_correct);
        println!(
            "int8: {:.2}% of predictions equal to papa's f32 ones; accuracy {drop:+.2} points below f32 (at most {INT8_MAX_DROP} allowed)",
            pct(n - differ)
        );
        (drop > INT8_MAX_DROP).then(|| format!("int8 accuracy {drop:.2} points below f32"))
    } else {
        (max_diff > MARGIN || differ > excused).then(|| {
            format!("logits differ by {max_diff:e} (> {MARGIN:e}) or {} predictions differ outside near-ties", differ - excused)
        })
    };
    if let Some(dir) = &args.dump {
        std::fs::create_dir_all(dir)?;
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        std::fs::write(dir.join("inputs.bin"), bytes(&stored))?;
        std::fs::write(dir.join("papa-logits.bin"), bytes(&papa))?;
        std::fs::write(dir.join("tract-logits.bin"), bytes(&tract))?;
        std::fs::write(dir.join("labels.bin"), &test.labels)?;
        println!(
            "wrote inputs.bin, papa-logits.bin, tract-logits.bin, labels.bin in {}",
            dir.display()
        );
    }
    if args.bench {
        println!("| runtime | threads | latency at batch 1 (us, median of {LATENCY_SAMPLES}) | throughput at batch 64 (samples/s) |");
        println!("|---|---|---|---|");
        let mut one = Network::new(&spec, 1, 1)?;
        let mut sixty_four = Network::new(&spec, 1, 64)?;
        let papa_latency = latency(&test.images, sample, |x| {
            one.evaluate(&file.params, Input::Shared(x)).map(drop)
        })?;
        let papa_throughput = throughput(&test.images, sample, |x| {
            sixty_four
                .evaluate(&file.params, Input::Shared(x))
                .map(drop)
        })?;
        let row = |name: &str, l: f64, t: f64| {
            println!("| {name} | {} | {:.1} | {:.0} |", args.threads, l * 1e6, t)
        };
        row("papa (Network, f32)", papa_latency, papa_throughput);
        let tract_latency = latency(&stored, sample, |x| onnx.logits(x).map(drop))?;
        let tract_throughput = throughput(&stored, sample, |x| onnx.logits(x).map(drop))?;
        let name = if int8 {
            "tract 0.23 (int8 QDQ as f32 arithmetic: fake quantisation)"
        } else {
            "tract 0.23 (f32)"
        };
        row(name, tract_latency, tract_throughput);
    }
    match failure {
        Some(why) => Err(format!("FAIL: {why}").into()),
        None => Ok(()),
    }
}

/// The largest logit less the second largest.
fn top2_margin(logits: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in logits {
        if v > first {
            (first, second) = (v, first);
        } else if v > second {
            second = v;
        }
    }
    first - second
}

/// Median seconds of `run` on one sample, over the first samples (one untimed run first).
fn latency<E: Error + 'static>(
    inputs: &[f32],
    sample: usize,
    mut run: impl FnMut(&[f32]) -> Result<(), E>,
) -> Result<f64, Box<dyn Error>> {
    let samples: Vec<&[f32]> = inputs.chunks_exact(sample).take(LATENCY_SAMPLES).collect();
    if let Some(first) = samples.first() {
        run(first)?;
    }
    let mut times = Vec::with_capacity(samples.len());
    for x in samples {
        let t = Instant::now();
        run(x)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(0.0))
}

/// Samples per second of `run` over all of `inputs` in batches of 64 (the last may be
/// shorter), after one untimed batch.
fn throughput<E: Error + 'static>(
    inputs: &[f32],
    sample: usize,
    mut run: impl FnMut(&[f32]) -> Result<(), E>,
) -> Result<f64, Box<dyn Error>> {
    let batches: Vec<&[f32]> = inputs.chunks(64 * sample).collect();
    if let Some(first) = batches.first() {
        run(first)?;
    }
    let t = Instant::now();
    for x in &batches {
        run(x)?;
    }
    Ok((inputs.len() / sample) as f64 / t.elapsed().as_secs_f64())
}
