//! End-to-end checks of the training loop: same bits on any thread count, resume to the same
//! bits, REPAIR reaching its goal statistics through the engine, and every method running.

use papa_core::repair::{accumulate, channel_stats, goal_stats, ChannelStats, Moments};
use papa_cpu::Isa;
use papa_train::config::{build_model, Augmentation, FromFirstEpoch, Method, TrainConfig};
use papa_train::data::{self, Dataset, Splits};
use papa_train::engine::Reference;
use papa_train::eval::repair;
use papa_train::model::{Input, ModelSpec, Network};
use papa_train::report::EpochRecord;
use papa_train::train::{train_method, train_on, Outcome, Progress, Silent, TrainError};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Bundled Fashion-MNIST with small validation and test splits, so that a test trains in
/// seconds.
fn small_splits() -> Splits {
    evaluated_on(400, 500)
}

/// Bundled Fashion-MNIST with `val` validation and `test` test samples.
fn evaluated_on(val: usize, test: usize) -> Splits {
    let mut splits = data::load("fashion-mnist", 0.1, 0).expect("bundled data");
    splits.normalize().unwrap();
    let keep = |d: &mut Dataset, n: usize| {
        let sl = d.sample_len();
        d.images.truncate(n * sl);
        d.labels.truncate(n);
    };
    keep(&mut splits.val, val);
    keep(&mut splits.test, test);
    splits
}

fn small_config(model: &str) -> TrainConfig {
    TrainConfig {
        model: model.into(),
        population: 3,
        epochs: 2,
        batch: 32,
        train_limit: 320,
        repair_batches: 2,
        papa_every_epochs: 1,
        // The regularisation grid and separate initialisations exercise the most machinery.
        augmentation: Augmentation::Grid,
        same_init: false,
        ..TrainConfig::default()
    }
}

fn run(
    cfg: &TrainConfig,
    splits: &Splits,
    method: Method,
    threads: usize,
    checkpoint: Option<&std::path::Path>,
) -> Outcome {
    let spec = spec_for(cfg, splits);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| train_method(cfg, splits, &spec, method, checkpoint, &Silent))
        .expect("training runs")
}

fn spec_for(cfg: &TrainConfig, splits: &Splits) -> ModelSpec {
    let d = &splits.train;
    build_model(&cfg.model, [d.channels, d.height, d.width], d.classes).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn same_bits_on_one_and_two_threads() {
    // Evaluation is most of a small cnn-s run (the soups are scored on both splits); the
    // bits of training and of the rules do not need many samples to be compared.
    let splits = evaluated_on(100, 100);
    let cfg = small_config("cnn-s");
    for method in [Method::Papa, Method::Papa2] {
        let one = run(&cfg, &splits, method, 1, None);
        let two = run(&cfg, &splits, method, 2, None);
        assert_eq!(
            bits(&one.model),
            bits(&two.model),
            "{method:?}: final model differs"
        );
        assert_eq!(one.result.members, two.result.members);
        assert_eq!(one.result.greedy_soup, two.result.greedy_soup);
    }
}

/// Interrupts a run (as a kill would) when it reaches a step.
struct StopAt(u64);

impl Progress for StopAt {
    fn step(&self, done: u64, _: u64) {
        assert!(done < self.0, "interrupted");
    }
    fn epoch(&self, _: &EpochRecord) {}
}

#[test]
fn resume_after_an_interruption_gives_the_same_bits() {
    let splits = small_splits();
    let cfg = small_config("mlp:64");
    let whole = run(&cfg, &splits, Method::PapaAll, 2, None);

    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("papa-all.safetensors");
    let spec = spec_for(&cfg, &splits);
    let steps_per_epoch = (cfg.train_limit / cfg.batch) as u64;
    // Stop in the middle of the second epoch, after the first epoch's checkpoint.
    let interrupted = catch_unwind(AssertUnwindSafe(|| {
        let stop = StopAt(steps_per_epoch + 3);
        train_method(
            &cfg,
            &splits,
            &spec,
            Method::PapaAll,
            Some(&checkpoint),
            &stop,
        )
    }));
    assert!(interrupted.is_err(), "the run was meant to be interrupted");
    assert!(checkpoint.exists(), "the first epoch left a checkpoint");
    // On another thread count, which a resumed run may change.
    let one_thread = TrainConfig {
        threads: 1,
        ..cfg.clone()
    };
    let resumed = run(&one_thread, &splits, Method::PapaAll, 1, Some(&checkpoint));
    assert_eq!(bits(&whole.model), bits(&resumed.model));
    assert_eq!(whole.result.history.len(), resumed.result.history.len());
    assert_eq!(whole.result.members, resumed.result.members);
    // The first epoch's record went through the checkpoint's JSON: it reads back exactly.
    for (a, b) in whole.result.history.iter().zip(&resumed.result.history) {
        let f64_bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(f64_bits(&a.distance_to_mean), f64_bits(&b.distance_to_mean));
        assert_eq!(
            a.mean_pairwise_cosine.to_bits(),
            b.mean_pairwise_cosine.to_bits()
        );
        assert_eq!(bits(&a.member_test_acc), bits(&b.member_test_acc));
        assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits());
    }

    // A checkpoint of other settings is refused rather than silently mixed in.
    let other = TrainConfig {
        seed: 9,
        ..cfg.clone()
    };
    let refused = train_method(
        &other,
        &splits,
        &spec,
        Method::PapaAll,
        Some(&checkpoint),
        &Silent,
    );
    assert!(refused.is_err());

    // So is a checkpoint written by an engine on another path: resuming it elsewhere would
    // not give an uninterrupted run's bits.
    let mut reference = Reference::new(&spec, cfg.population, cfg.batch).unwrap();
    let other_path = train_on(
        &mut reference,
        &cfg,
        &splits,
        Method::PapaAll,
        Some(&checkpoint),
        &Silent,
    );
    match other_path {
        Err(TrainError::OtherCpuPath { written, here, .. }) => {
            assert_eq!(here, "f64");
            assert_eq!(written, Isa::detect().name());
        }
        Err(e) => panic!("expected OtherCpuPath, got {e}"),
        Ok(_) => panic!("a checkpoint of another path was resumed"),
    }

    // And one trained on other data: a file of the identity changed.
    let mut changed = splits.clone();
    changed.identity.files[0].sha256.replace_range(0..1, "x");
    let other_data = train_method(
        &cfg,
        &changed,
        &spec,
        Method::PapaAll,
        Some(&checkpoint),
        &Silent,
    );
    match other_data {
        Err(e @ TrainError::OtherData { .. }) => {
            assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}")
        }
        Err(e) => panic!("expected OtherData, got {e}"),
        Ok(_) => panic!("a checkpoint of other data was resumed"),
    }
}

#[test]
fn the_trainer_runs_any_engine() {
    // The f64 reference engine through the same trainer: the same run to rounding (20 PAPA
    // steps of a small MLP), so accuracies agree closely; its path is recorded.
    let splits = small_splits();
    let cfg = small_config("mlp:32");
    let spec = spec_for(&cfg, &splits);
    let cpu = run(&cfg, &splits, Method::Papa, 2, None);
    let mut reference = Reference::new(&spec, cfg.population, cfg.batch).unwrap();
    let f64_run = train_on(&mut reference, &cfg, &splits, Method::Papa, None, &Silent).unwrap();
    assert_eq!(f64_run.result.cpu_path, "f64");
    assert_eq!(cpu.result.cpu_path, Isa::detect().name());
    for (a, b) in cpu.result.members.iter().zip(&f64_run.result.members) {
        assert!(
            (a - b).abs() <= 1.0,
            "member accuracy {a} (CPU) against {b} (f64)"
        );
    }
    let (a, b) = (cpu.result.final_model, f64_run.result.final_model);
    assert!(
        (a - b).abs() <= 1.0,
        "final model {a} (CPU) against {b} (f64)"
    );
}

#[test]
fn every_method_trains_and_reports() {
    let splits = small_splits();
    let cfg = small_config("mlp:64");
    for method in Method::ALL {
        let out = run(&cfg, &splits, method, 2, None);
        let r = &out.result;
        assert_eq!(r.history.len(), cfg.epochs);
        assert_eq!(r.members.len(), cfg.population);
        assert!(r.members_min <= r.members_mean && r.members_mean <= r.members_max);
        assert!((1..=cfg.population).contains(&r.greedy_soup_size));
        // Learning happened: far above chance (10%) even in this tiny run.
        assert!(
            r.final_model > 40.0,
            "{method:?}: final model at {}%",
            r.final_model
        );
        assert!(out.model.iter().all(|x| x.is_finite()));
    }
}

/// Per-channel statistics of repairable layer `layer` of every member of `params`.
fn layer_stats(
    spec: &ModelSpec,
    params: &[f32],
    layer: usize,
    calibration: &[f32],
    batch: usize,
) -> Vec<ChannelStats> {
    let p = params.len() / spec.len();
    let channels = spec.repairable().nth(layer).unwrap().channels;
    let mut net = Network::new(spec, p, batch).unwrap();
    let mut moments = vec![Moments::EMPTY; p * channels];
    for input in calibration.chunks_exact(batch * spec.input_len()) {
        net.evaluate(params, Input::Shared(input)).unwrap();
        let out = net.pre_activation(layer).unwrap();
        for m in 0..p {
            accumulate(
                &mut moments[m * channels..][..channels],
                out.member(m),
                channels,
                1,
            )
            .unwrap();
        }
    }
    let mut stats = vec![
        ChannelStats {
            mean: 0.0,
            std: 0.0
        };
        p * channels
    ];
    channel_stats(&moments, &mut stats).unwrap();
    stats
}

/// After REPAIR through the engine, the averaged child's hidden layers have the goal mean and
/// std per channel on the calibration data (an MLP: every hidden layer is corrected).
#[test]
fn repair_gives_children_the_goal_statistics() {
    let splits = small_splits();
    let spec = spec_for(&small_config("mlp:48,32"), &splits);
    let (p, n, batch) = (3, spec.len(), 40);
    // Parents: three independently initialised members.
    let mut population = vec![0.0; p * n];
    let rng = papa_core::rng::Rng::new(3);
    for (j, m) in population.chunks_exact_mut(n).enumerate() {
        spec.init_member(&mut rng.fork(j as u64), m).unwrap();
    }
    let calibration = &splits.train.images[..3 * batch * splits.train.sample_len()];
    let weights = [0.5f32, 0.3, 0.2];
    let mut child = vec![0.0; n];
    for (i, c) in child.iter_mut().enumerate() {
        *c = (0..p).map(|j| weights[j] * population[j * n + i]).sum();
    }
    repair(
        &spec,
        &mut child,
        &population,
        &[weights.to_vec()],
        calibration,
        batch,
    )
    .unwrap();
    for layer in 0..spec.repairable().len() {
        let channels = spec.repairable().nth(layer).unwrap().channels;
        let parents_stats = layer_stats(&spec, &population, layer, calibration, batch);
        let mut goal = vec![
            ChannelStats {
                mean: 0.0,
                std: 0.0
            };
            channels
        ];
        goal_stats(&parents_stats, &weights, &mut goal).unwrap();
        let got = layer_stats(&spec, &child, layer, calibration, batch);
        for c in 0..channels {
            let (g, h) = (goal[c], got[c]);
            assert!(
                (g.mean - h.mean).abs() <= 1e-3 * g.std.max(1e-3),
                "layer {layer} channel {c}: mean {} vs goal {}",
                h.mean,
                g.mean
            );
            assert!(
                (g.std - h.std).abs() <= 1e-3 * g.std,
                "layer {layer} channel {c}: std {} vs goal {}",
                h.std,
                g.std
            );
        }
    }
}

#[test]
fn a_library_caller_gets_its_bad_settings_refused() {
    let splits = small_splits();
    let mut cfg = small_config("mlp:8");
    cfg.papa_every_epochs = 0;
    let spec = spec_for(&cfg, &splits);
    let err = train_method(&cfg, &splits, &spec, Method::PapaAll, None, &Silent)
        .err()
        .expect("a zero schedule is refused, not run as independent training");
    assert!(matches!(err, TrainError::Config(_)), "{err}");
    assert!(err.to_string().contains("papa_every_epochs"), "{err}");
}

#[test]
fn papa_all_on_the_papers_schedule_averages_after_the_first_epoch() {
    let splits = small_splits();
    let cfg = |from_first| TrainConfig {
        epochs: 3,
        papa_every_epochs: 2,
        papa_from_first_epoch: from_first,
        ..small_config("mlp:16")
    };
    // Each epoch's record is taken after that epoch's averaging: a PAPA-all leaves every
    // member at the mean (REPAIR moves them alike), so their distance to it is zero.
    let merged = |r: &EpochRecord| r.distance_to_mean.iter().all(|&d| d < 1e-6);
    let merged_after = |from_first| {
        run(&cfg(from_first), &splits, Method::PapaAll, 1, None)
            .result
            .history
            .iter()
            .map(merged)
            .collect::<Vec<_>>()
    };
    // The paper's: after epoch 1 (then 3, which is the last: never).
    let paper = [true, false, false];
    // papa's own schedule: after epoch 2 only.
    let papas = [false, true, false];
    assert_eq!(merged_after(FromFirstEpoch::Both(true)), paper);
    assert_eq!(merged_after(FromFirstEpoch::Both(false)), papas);
    // Set per method: PAPA-all follows its own entry only (the default lists PAPA-2 alone).
    let listed = |m| FromFirstEpoch::Methods(vec![m]);
    assert_eq!(merged_after(listed(Method::PapaAll)), paper);
    assert_eq!(merged_after(listed(Method::Papa2)), papas);
    assert_eq!(merged_after(FromFirstEpoch::default()), papas);
}

#[test]
fn same_init_starts_every_member_from_one_point() {
    let splits = small_splits();
    // A rate so small that one epoch leaves the members where they started (no BatchNorm in
    // an MLP, so nothing else moves them).
    let cfg = |same_init| TrainConfig {
        epochs: 1,
        lr: 1e-12,
        same_init,
        ..small_config("mlp:16")
    };
    let spread = |same_init| {
        let result = run(&cfg(same_init), &splits, Method::None, 1, None).result;
        result.history[0]
            .distance_to_mean
            .iter()
            .fold(0.0f64, |a, &d| a.max(d))
    };
    assert!(spread(true) < 1e-6, "{}", spread(true));
    assert!(spread(false) > 1.0, "{}", spread(false));
}
