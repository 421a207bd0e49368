//! The config keys that give the PyTorch replica's recipe (configs/replica.toml), each checked
//! against an independent computation, and their defaults against papa's behaviour before
//! them.

use papa_core::repair::{Correction, Moments};
use papa_core::rng::Rng;
use papa_core::rules::Weights;
use papa_train::augment::{
    augment_batch, augment_batch_with, draw_recipes, AugmentStyle, BatchShape, ErasingBox,
    MixPartner, Recipe,
};
use papa_train::config::{
    build_model, AfterAveraging, CropFill, Method, MinLrAt, StepPhase, TrainConfig,
};
use papa_train::data::{self, DataError, Dataset, LoadOptions, NormalizeOver, Splits};
use papa_train::engine::{CpuEngine, Diversity, Engine, EngineError, Rule};
use papa_train::model::{Input, Mode, ModelSpec};
use papa_train::optim::Sgd;
use papa_train::train::{train_on, Silent, TrainError};
use std::cell::RefCell;
use std::path::Path;

const SHAPE: BatchShape = BatchShape {
    channels: 1,
    height: 8,
    width: 8,
    classes: 10,
};

/// A batch of `b` 1 x 8 x 8 images whose every value is distinct (sample `i`, pixel `k`:
/// `i + k / 100`), labels `0..b`.
fn distinct_batch(b: usize) -> (Vec<f32>, Vec<u8>) {
    let images = (0..b * 64)
        .map(|v| (v / 64) as f32 + (v % 64) as f32 / 100.0)
        .collect();
    (images, (0..b as u8).collect())
}

fn style(mix_partner: MixPartner, erasing_box: ErasingBox) -> AugmentStyle {
    AugmentStyle {
        pad_value: -1.5,
        mix_partner,
        erasing_box,
    }
}

#[test]
fn default_style_gives_augment_batchs_bits() {
    let shape = BatchShape {
        height: 28,
        width: 28,
        ..SHAPE
    };
    let base = Recipe::standard(2, true);
    for (k, recipe) in draw_recipes(7, 81, base).iter().enumerate() {
        let images: Vec<f32> = (0..6 * 784).map(|v| (v % 97) as f32 / 97.0).collect();
        let labels = [0, 3, 9, 1, 1, 5];
        let run = |styled: bool| {
            let (mut img, mut t) = (images.clone(), vec![0.0; 60]);
            let mut rng = Rng::new(k as u64);
            if styled {
                let s = style(MixPartner::Shuffled, ErasingBox::Torchvision);
                augment_batch_with(recipe, &mut rng, &mut img, &labels, shape, &s, &mut t)
            } else {
                augment_batch(recipe, &mut rng, &mut img, &labels, shape, -1.5, &mut t)
            }
            .unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            (bits(&img), bits(&t))
        };
        assert_eq!(run(false), run(true), "recipe {k}: {recipe}");
    }
}

#[test]
fn reversed_mixup_mixes_sample_i_with_b_minus_1_minus_i() {
    let b = 6;
    let recipe = Recipe {
        mixup: 1.0,
        ..Recipe::plain()
    };
    for seed in 0..20 {
        let (orig, labels) = distinct_batch(b);
        let (mut images, mut targets) = (orig.clone(), vec![0.0; b * 10]);
        let s = style(MixPartner::Reversed, ErasingBox::Torchvision);
        let mut rng = Rng::new(seed);
        augment_batch_with(
            &recipe,
            &mut rng,
            &mut images,
            &labels,
            SHAPE,
            &s,
            &mut targets,
        )
        .unwrap();
        // One lambda for the whole batch, read off sample 0's target.
        let lambda = f64::from(targets[0]);
        for i in 0..b {
            let j = b - 1 - i;
            let row = &targets[i * 10..][..10];
            assert!(
                (f64::from(row[i]) - lambda).abs() < 1e-6,
                "seed {seed}: {row:?}"
            );
            assert!((f64::from(row[j]) - (1.0 - lambda)).abs() < 1e-6);
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            for k in 0..64 {
                let want = lambda * f64::from(orig[i * 64 + k])
                    + (1.0 - lambda) * f64::from(orig[j * 64 + k]);
                let got = f64::from(images[i * 64 + k]);
                assert!(
                    (got - want).abs() < 1e-5,
                    "seed {seed}, sample {i}, pixel {k}"
                );
            }
        }
    }
}

#[test]
fn reversed_cutmix_pastes_one_box_from_b_minus_1_minus_i() {
    let b = 5;
    let recipe = Recipe {
        cutmix: 1.0,
        ..Recipe::plain()
    };
    let mut pasted_some = false;
    for seed in 0..20 {
        let (orig, labels) = distinct_batch(b);
        let (mut images, mut targets) = (orig.clone(), vec![0.0; b * 10]);
        let s = style(MixPartner::Reversed, ErasingBox::Torchvision);
        let mut rng = Rng::new(seed);
        augment_batch_with(
            &recipe,
            &mut rng,
            &mut images,
            &labels,
            SHAPE,
            &s,
            &mut targets,
        )
        .unwrap();
        // The pixels taken from the partner: the same set for every sample.
        let from_partner = |i: usize| -> Vec<usize> {
            let j = b - 1 - i;
            (0..64)
                .filter(|&k| images[i * 64 + k] != orig[i * 64 + k])
                .inspect(|&k| assert_eq!(images[i * 64 + k], orig[j * 64 + k]))
                .collect()
        };
        let boxed = from_partner(0);
        // The middle sample is its own partner: nothing it could show changes.
        for i in (0..b).filter(|&i| i != b / 2) {
            assert_eq!(from_partner(i), boxed, "seed {seed}, sample {i}");
        }
        pasted_some |= !boxed.is_empty();
        // The targets mix by the pasted area.
        let lambda = 1.0 - boxed.len() as f32 / 64.0;
        for i in (0..b).filter(|&i| i != b / 2) {
            let row = &targets[i * 10..][..10];
            assert!((row[i] - lambda).abs() < 1e-6, "seed {seed}: {row:?}");
            assert!((row[b - 1 - i] - (1.0 - lambda)).abs() < 1e-6);
        }
    }
    assert!(pasted_some);
}

/// The erased box of each sample of an all-ones batch after erasing with probability
/// `p`: `(y0, height, x0, width)`, or `None` where nothing was erased (the zeros must form
/// one rectangle).
fn erased_boxes(
    p: f32,
    erasing_box: ErasingBox,
    (h, w): (usize, usize),
    batches: u64,
) -> Vec<Option<(usize, usize, usize, usize)>> {
    let b = 50;
    let shape = BatchShape {
        height: h,
        width: w,
        ..SHAPE
    };
    let recipe = Recipe {
        erasing: p,
        ..Recipe::plain()
    };
    let mut out = Vec::new();
    for seed in 0..batches {
        let (mut images, mut targets) = (vec![1.0f32; b * h * w], vec![0.0; b * 10]);
        let s = style(MixPartner::Shuffled, erasing_box);
        let mut rng = Rng::new(seed);
        augment_batch_with(
            &recipe,
            &mut rng,
            &mut images,
            &[0; 50],
            shape,
            &s,
            &mut targets,
        )
        .unwrap();
        for img in images.chunks_exact(h * w) {
            let zeros: Vec<(usize, usize)> = (0..h * w)
                .filter(|&k| img[k] == 0.0)
                .map(|k| (k / w, k % w))
                .collect();
            if zeros.is_empty() {
                out.push(None);
                continue;
            }
            let (y0, x0) = (zeros[0].0, zeros.iter().map(|z| z.1).min().unwrap());
            let y1 = zeros.iter().map(|z| z.0).max().unwrap() + 1;
            let x1 = zeros.iter().map(|z| z.1).max().unwrap() + 1;
            assert_eq!(zeros.len(), (y1 - y0) * (x1 - x0), "not one rectangle");
            out.push(Some((y0, y1 - y0, x0, x1 - x0)));
        }
    }
    out
}

#[test]
fn one_clamped_erasing_draws_one_box_of_the_replicas_area_and_ratio() {
    let (h, w) = (28, 28);
    let boxes: Vec<_> = erased_boxes(1.0, ErasingBox::OneClamped, (h, w), 40)
        .into_iter()
        .map(|b| b.expect("every sample gets a box at p = 1"))
        .collect();
    let area = (h * w) as f64;
    let fractions: Vec<f64> = boxes
        .iter()
        .map(|&(y0, eh, x0, ew)| {
            assert!(y0 + eh <= h && x0 + ew <= w);
            // Each side is rounded to whole pixels (and clamped): up to half a pixel each way.
            let ratio = eh as f64 / ew as f64;
            assert!(
                (0.3 * 0.75..(1.0 / 0.3) / 0.75).contains(&ratio),
                "{eh}x{ew}"
            );
            (eh * ew) as f64 / area
        })
        .collect();
    let n = fractions.len() as f64;
    assert!(fractions.iter().all(|f| (0.015..0.36).contains(f)));
    // The area fraction is uniform on [0.02, 1/3]: mean 0.1767 (clamping the few boxes
    // taller than the image takes a little off), a quarter of it below 0.098.
    let mean = fractions.iter().sum::<f64>() / n;
    assert!((mean - 0.1767).abs() < 0.008, "mean erased fraction {mean}");
    let below = fractions
        .iter()
        .filter(|&&f| f < 0.02 + 0.25 / 3.0 * 0.94)
        .count() as f64;
    assert!(
        (below / n - 0.25).abs() < 0.04,
        "{below} of {n} below the first quartile"
    );
}

#[test]
fn one_clamped_erasing_clamps_instead_of_retrying() {
    // On 8 x 8 images torchvision's boxes must fit inside (sides < 8), so tall boxes are
    // retried and some images keep no box; the replica clamps tall boxes to the image.
    let clamped = erased_boxes(1.0, ErasingBox::OneClamped, (8, 8), 20);
    assert!(clamped.iter().all(Option::is_some));
    assert!(clamped
        .iter()
        .flatten()
        .any(|&(_, eh, _, ew)| eh == 8 || ew == 8));
    let torchvision = erased_boxes(1.0, ErasingBox::Torchvision, (8, 8), 20);
    assert!(torchvision
        .iter()
        .flatten()
        .all(|&(_, eh, _, ew)| eh < 8 && ew < 8));
    // One box per image with probability p.
    let half = erased_boxes(0.5, ErasingBox::OneClamped, (28, 28), 40);
    let erased = half.iter().flatten().count() as f64 / half.len() as f64;
    assert!((erased - 0.5).abs() < 0.04, "{erased}");
}

#[test]
fn label_smoothing_is_the_replicas() {
    let recipe = Recipe {
        label_smoothing: 0.1,
        ..Recipe::plain()
    };
    let (mut images, labels) = distinct_batch(3);
    let mut targets = vec![0.0; 30];
    augment_batch(
        &recipe,
        &mut Rng::new(0),
        &mut images,
        &labels,
        SHAPE,
        0.0,
        &mut targets,
    )
    .unwrap();
    for (i, row) in targets.chunks_exact(10).enumerate() {
        for (k, &t) in row.iter().enumerate() {
            let want = if k == i { 1.0 - 0.1 + 0.01 } else { 0.01 };
            assert!((t - want).abs() < 1e-7, "{row:?}");
        }
    }
}

/// `n` samples of 1 x 4 x 4 values (sample `i` of the training file holds `i` in its first
/// value), two classes.
fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let images = (0..n * 16)
        .map(|v| {
            if v % 16 == 0 {
                (v / 16) as f32
            } else {
                rng.uniform_f32() * 3.0 + 1.0
            }
        })
        .collect();
    Dataset {
        images,
        labels: (0..n).map(|i| (i % 2) as u8).collect(),
        channels: 1,
        height: 4,
        width: 4,
        classes: 2,
        hflip_ok: false,
    }
}

#[test]
fn zero_crop_fill_pads_with_zero_after_normalisation() {
    let mut splits = Splits::new(synthetic(40, 1), synthetic(10, 2), 0.25, 0).unwrap();
    splits.normalize().unwrap();
    let black = CropFill::Black.pad_value(&splits);
    assert_eq!(black, splits.pad_value(0));
    assert!(black < -0.5, "black is far below the mean: {black}");
    assert_eq!(CropFill::Zero.pad_value(&splits), 0.0);
    // A crop of a constant image shows the image or the fill, nothing else.
    let recipe = Recipe::standard(3, false);
    let shape = BatchShape {
        height: 8,
        width: 8,
        ..SHAPE
    };
    let mut images = vec![5.0f32; 20 * 64];
    let s = AugmentStyle {
        pad_value: CropFill::Zero.pad_value(&splits),
        ..style(MixPartner::Shuffled, ErasingBox::Torchvision)
    };
    let mut targets = vec![0.0; 200];
    let mut rng = Rng::new(3);
    augment_batch_with(
        &recipe,
        &mut rng,
        &mut images,
        &[0; 20],
        shape,
        &s,
        &mut targets,
    )
    .unwrap();
    assert!(images.iter().all(|&v| v == 5.0 || v == 0.0));
    assert!(images.contains(&0.0));
}

/// Mean and population std of `values`, in f64.
fn mean_std(values: impl Iterator<Item = f32> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().map(f64::from).sum::<f64>() / n;
    let var = values.map(|v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn normalising_over_the_train_file_uses_every_training_image() {
    let file = synthetic(300, 5);
    let (mean, std) = mean_std(file.images.iter().copied());
    let split = Splits::new(file, synthetic(20, 6), 0.2, 9).unwrap();
    assert_eq!(split.val.len(), 60);

    let mut over_file = split.clone();
    over_file.normalize_over(NormalizeOver::TrainFile).unwrap();
    let n = &over_file.normalization;
    assert!(
        (f64::from(n.mean[0]) - mean).abs() < 1e-5 * mean,
        "{n:?} vs {mean}"
    );
    assert!(
        (f64::from(n.std[0]) - std).abs() < 1e-5 * std,
        "{n:?} vs {std}"
    );
    // Training and validation splits together are standardised.
    let both = over_file.train.images.iter().chain(&over_file.val.images);
    let (m, s) = mean_std(both.copied());
    assert!(m.abs() < 1e-5 && (s - 1.0).abs() < 1e-5, "{m} {s}");

    // The default is the training split alone, bit for bit what normalize() gives.
    let mut default = split.clone();
    default.normalize().unwrap();
    let mut over_split = split;
    over_split
        .normalize_over(NormalizeOver::TrainSplit)
        .unwrap();
    assert_eq!(default, over_split);
    let (m, _) = mean_std(default.train.images.iter().copied());
    assert!(m.abs() < 1e-5);
    assert_ne!(default.normalization, over_file.normalization);
}

/// A CSV source of `n` training rows (row `i`'s features `i, i`, label `i mod 2`) and a
/// validation-indices file holding `indices`.
fn csv_source(n: usize, indices: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rows = |n: usize| -> String { (0..n).map(|i| format!("{i},{i},{}\n", i % 2)).collect() };
    std::fs::write(dir.path().join("train.csv"), rows(n)).unwrap();
    std::fs::write(dir.path().join("test.csv"), rows(4)).unwrap();
    std::fs::write(dir.path().join("val.txt"), indices).unwrap();
    dir
}

fn load_with_indices(dir: &Path) -> Result<Splits, DataError> {
    let options = LoadOptions {
        val_indices: Some(dir.join("val.txt")),
        ..LoadOptions::default()
    };
    data::load_with(dir.to_str().unwrap(), &options)
}

#[test]
fn val_indices_are_honoured_exactly() {
    let dir = csv_source(20, "7 3\n\n15\t0\n  12  \n");
    let splits = load_with_indices(dir.path()).unwrap();
    let first = |d: &Dataset| -> Vec<f32> { d.images.iter().step_by(2).copied().collect() };
    assert_eq!(first(&splits.val), [7.0, 3.0, 15.0, 0.0, 12.0]);
    let rest: Vec<f32> = (0..20)
        .filter(|i| ![7, 3, 15, 0, 12].contains(i))
        .map(|i| i as f32)
        .collect();
    assert_eq!(first(&splits.train), rest);
    assert_eq!(splits.val.labels, [1, 1, 1, 0, 0]);
    // The split is part of what the run's data is.
    let names: Vec<&str> = splits
        .identity
        .files
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["train.csv", "test.csv", "val.txt"]);
    // Through the config: the key reaches the loader.
    let cfg = TrainConfig {
        val_indices: Some(dir.path().join("val.txt")),
        ..TrainConfig::default()
    };
    let via_config = data::load_with(dir.path().to_str().unwrap(), &cfg.load_options()).unwrap();
    assert_eq!(via_config, splits);
}

#[test]
fn val_index_errors_name_the_file_and_line() {
    let message = |indices: &str| -> String {
        let dir = csv_source(20, indices);
        let err = load_with_indices(dir.path())
            .expect_err(indices)
            .to_string();
        assert!(err.contains("val.txt"), "{err}");
        err
    };
    let err = message("1 2\n3\n20\n");
    assert!(
        err.contains("line 3") && err.contains("20 is out of range"),
        "{err}"
    );
    let err = message("4\n5 6\n\n5\n");
    assert!(
        err.contains("line 4") && err.contains("repeats the one on line 2"),
        "{err}"
    );
    let err = message("4\n-1\n");
    assert!(err.contains("line 2") && err.contains("`-1`"), "{err}");
    let err = message("4 x\n");
    assert!(err.contains("line 1") && err.contains("`x`"), "{err}");
    assert!(message("\n \n").contains("no indices"));
    let all: String = (0..20).map(|i| format!("{i}\n")).collect();
    assert!(message(&all).contains("no training data is left"));
    // A missing file is named too.
    let dir = csv_source(20, "1");
    std::fs::remove_file(dir.path().join("val.txt")).unwrap();
    let err = load_with_indices(dir.path()).unwrap_err().to_string();
    assert!(err.contains("val.txt"), "{err}");
}

#[test]
fn the_committed_replica_indices_are_numpys_5000() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/replica-val-indices.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let indices: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(indices.len(), 5000);
    // numpy.random.default_rng(666).permutation(60000)[:5000] starts so.
    assert_eq!(indices[..4], [34670, 24541, 16609, 10792]);
    let mut sorted = indices.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 5000);
    assert!(sorted.last().is_some_and(|&i| i < 60_000));
}

#[test]
fn step_phase_fires_at_the_right_steps() {
    let (k, spe, epochs) = (10u32, 429u64, 3u64);
    let fired = |phase: StepPhase| -> Vec<u64> {
        (0..spe * epochs)
            .filter(|&s| phase.due(s, k, spe))
            .collect()
    };
    // The replica: `for i, batch in enumerate(loader): ...; if i % 10 == 0: papa()`.
    let mut epoch = Vec::new();
    for e in 0..epochs {
        for i in 0..spe {
            if i % 10 == 0 {
                epoch.push(e * spe + i);
            }
        }
    }
    assert_eq!(fired(StepPhase::Epoch), epoch);
    // papa: after steps 10, 20, ... of the run (1-based).
    let run: Vec<u64> = (1..=spe * epochs)
        .filter(|n| n % 10 == 0)
        .map(|n| n - 1)
        .collect();
    assert_eq!(fired(StepPhase::Run), run);
}

/// What the trainer asked of an engine: PAPA gradual applications (steps done, alpha),
/// learning rates per step, calibration calls (steps done, what, samples per batch, batches).
#[derive(Default, Debug)]
struct Log {
    gradual: Vec<(usize, f32)>,
    lrs: Vec<f32>,
    calibration: Vec<(usize, &'static str, usize, usize)>,
}

/// A CPU engine that logs what it is asked.
struct Spy {
    inner: CpuEngine,
    log: RefCell<Log>,
}

impl Spy {
    fn calibrated(&self, what: &'static str, calibration: &[f32], batch: usize) {
        let len = self.inner.spec().input_len() * batch;
        let mut log = self.log.borrow_mut();
        let steps = log.lrs.len();
        log.calibration
            .push((steps, what, batch, calibration.len() / len.max(1)));
    }
}

impl Engine for Spy {
    fn spec(&self) -> &ModelSpec {
        self.inner.spec()
    }
    fn population(&self) -> usize {
        self.inner.population()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn path(&self) -> String {
        self.inner.path()
    }
    fn upload(&mut self, params: &[f32], velocity: &[f32]) -> Result<(), EngineError> {
        self.inner.upload(params, velocity)
    }
    fn download(&self, params: &mut [f32], velocity: &mut [f32]) -> Result<(), EngineError> {
        self.inner.download(params, velocity)
    }
    fn forward(&mut self, input: Input<'_>, mode: Mode) -> Result<&[f32], EngineError> {
        self.inner.forward(input, mode)
    }
    fn backward(&mut self, dlogits: &[f32]) -> Result<&[f32], EngineError> {
        self.inner.backward(dlogits)
    }
    fn backward_for_sgd(&mut self, dlogits: &[f32]) -> Result<(), EngineError> {
        self.inner.backward_for_sgd(dlogits)
    }
    fn sgd_step(&mut self, sgd: &Sgd, lr: f32) -> Result<(), EngineError> {
        self.log.borrow_mut().lrs.push(lr);
        self.inner.sgd_step(sgd, lr)
    }
    fn apply(&mut self, rule: Rule<'_>, momentum: bool) -> Result<(), EngineError> {
        if let Rule::Gradual { alpha, .. } = rule {
            let mut log = self.log.borrow_mut();
            let steps = log.lrs.len();
            log.gradual.push((steps, alpha));
        }
        self.inner.apply(rule, momentum)
    }
    fn average(&self, weights: Weights<'_>) -> Result<Vec<f32>, EngineError> {
        self.inner.average(weights)
    }
    fn diversity(&self) -> Result<Diversity, EngineError> {
        self.inner.diversity()
    }
    fn reestimate_batchnorm(
        &mut self,
        calibration: &[f32],
        batch: usize,
    ) -> Result<(), EngineError> {
        self.calibrated("batchnorm", calibration, batch);
        self.inner.reestimate_batchnorm(calibration, batch)
    }
    fn layer_moments(
        &mut self,
        layer: usize,
        calibration: &[f32],
        batch: usize,
    ) -> Result<Vec<Moments>, EngineError> {
        self.calibrated("moments", calibration, batch);
        self.inner.layer_moments(layer, calibration, batch)
    }
    fn fold(&mut self, layer: usize, corrections: &[Correction]) -> Result<(), EngineError> {
        self.inner.fold(layer, corrections)
    }
}

fn spy_splits() -> Splits {
    let mut splits = Splits::new(synthetic(260, 11), synthetic(30, 12), 0.1, 0).unwrap();
    splits.normalize().unwrap();
    splits
}

/// 2 members of an MLP on the synthetic data, 2 epochs of 7 batches of 16.
fn spy_config(method: Method) -> TrainConfig {
    TrainConfig {
        model: "mlp:8".into(),
        methods: vec![method],
        population: 2,
        epochs: 2,
        batch: 16,
        train_limit: 7 * 16,
        papa_every_steps: 3,
        papa_every_epochs: 1,
        repair_batches: 2,
        augmentation: papa_train::config::Augmentation::Grid,
        same_init: false,
        ..TrainConfig::default()
    }
}

fn spy_run(cfg: &TrainConfig, splits: &Splits, capacity: usize) -> Result<Log, TrainError> {
    let d = &splits.train;
    let spec = build_model(&cfg.model, [d.channels, d.height, d.width], d.classes).unwrap();
    let mut spy = Spy {
        inner: CpuEngine::new(&spec, cfg.population, capacity).unwrap(),
        log: RefCell::default(),
    };
    train_on(&mut spy, cfg, splits, cfg.methods[0], None, &Silent)?;
    Ok(spy.log.into_inner())
}

#[test]
fn papa_step_phase_and_the_replicas_alpha_reach_the_engine() {
    let splits = spy_splits();
    let run = TrainConfig {
        papa_alpha: Some(0.99),
        ..spy_config(Method::Papa)
    };
    let log = spy_run(&run, &splits, run.batch).unwrap();
    let steps: Vec<usize> = log.gradual.iter().map(|g| g.0).collect();
    // Steps done when it fired: 3, 6, ... of the run's 14.
    assert_eq!(steps, [3, 6, 9, 12]);
    let epoch = TrainConfig {
        papa_step_phase: StepPhase::Epoch,
        ..run
    };
    let log = spy_run(&epoch, &splits, epoch.batch).unwrap();
    let steps: Vec<usize> = log.gradual.iter().map(|g| g.0).collect();
    // After steps 0, 3, 6 of each epoch of 7: 1, 4, 7, then 8, 11, 14 done.
    assert_eq!(steps, [1, 4, 7, 8, 11, 14]);
    // a = 1 - 0.01 lr / 0.1 at the rate of the step just taken.
    for &(done, alpha) in &log.gradual {
        let lr = f64::from(log.lrs[done - 1]);
        let want = 1.0 - 0.01 * lr / 0.1;
        assert!((f64::from(alpha) - want).abs() < 1e-6, "{alpha} vs {want}");
    }
}

#[test]
fn min_lr_at_moves_the_cosine_end_past_the_last_step() {
    let splits = spy_splits();
    let total = 14.0;
    let cosine = |step: usize, span: f64| {
        1e-4 + 0.5 * (0.1 - 1e-4) * (1.0 + (std::f64::consts::PI * step as f64 / span).cos())
    };
    for (at, span) in [
        (MinLrAt::LastStep, total - 1.0),
        (MinLrAt::AfterLastStep, total),
    ] {
        let cfg = TrainConfig {
            min_lr_at: at,
            ..spy_config(Method::None)
        };
        let lrs = spy_run(&cfg, &splits, cfg.batch).unwrap().lrs;
        assert_eq!(lrs.len(), 14);
        for (step, &lr) in lrs.iter().enumerate() {
            let want = cosine(step, span);
            assert!(
                (f64::from(lr) - want).abs() < 1e-8,
                "{at:?} step {step}: {lr} vs {want}"
            );
        }
    }
}

#[test]
fn calibration_batch_and_after_averaging_reach_the_engine() {
    let splits = spy_splits();
    let cfg = TrainConfig {
        calibration_batch: 40,
        ..spy_config(Method::PapaAll)
    };
    assert_eq!(cfg.engine_capacity(), 40);
    // An engine sized for the training batch alone cannot take the calibration batches.
    assert!(spy_run(&cfg, &splits, cfg.batch).is_err());
    let log = spy_run(&cfg, &splits, cfg.engine_capacity()).unwrap();
    // PAPA-all after epoch 0 (7 steps done), then REPAIR: its moments and BatchNorm
    // statistics over 2 batches of 40.
    assert!(!log.calibration.is_empty());
    assert!(log
        .calibration
        .iter()
        .all(|c| (c.0, c.2, c.3) == (7, 40, 2)));
    assert!(log.calibration.iter().any(|c| c.1 == "moments"));
    // The replica re-estimates BatchNorm statistics only.
    let reset = TrainConfig {
        after_averaging: AfterAveraging::ResetBatchnorm,
        ..cfg.clone()
    };
    let log = spy_run(&reset, &splits, reset.engine_capacity()).unwrap();
    assert_eq!(log.calibration, [(7, "batchnorm", 40, 2)]);
    // The default: batches of `batch`.
    let default = spy_config(Method::PapaAll);
    let log = spy_run(&default, &splits, default.batch).unwrap();
    assert!(log
        .calibration
        .iter()
        .all(|c| (c.0, c.2, c.3) == (7, 16, 2)));
}

#[test]
fn new_keys_default_to_papas_behaviour_and_round_trip() {
    let cfg = TrainConfig::default();
    assert_eq!(cfg.calibration_batch_size(), cfg.batch);
    assert_eq!(cfg.engine_capacity(), cfg.batch);
    assert_eq!(cfg.load_options(), LoadOptions::default());
    // A file without the new keys reads as the defaults; one with them reads back.
    assert_eq!(toml::from_str::<TrainConfig>("").unwrap(), cfg);
    let text = "crop_fill = \"zero\"\nmix_partner = \"reversed\"\nerasing_box = \"one-clamped\"\n\
                normalize_over = \"train-file\"\nval_indices = \"v.txt\"\npapa_step_phase = \"epoch\"\n\
                min_lr_at = \"after-last-step\"\nafter_averaging = \"reset-batchnorm\"\n\
                calibration_batch = 500\n";
    let set: TrainConfig = toml::from_str(text).unwrap();
    assert_eq!(
        toml::from_str::<TrainConfig>(&set.to_toml().unwrap()).unwrap(),
        set
    );
    assert!(toml::from_str::<TrainConfig>("crop_fill = \"white\"").is_err());
    let bad = TrainConfig {
        calibration_batch: 1,
        ..TrainConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("calibration_batch"));
}
