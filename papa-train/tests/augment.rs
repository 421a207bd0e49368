//! Augmentation: the recipe grid, soft targets, reproducibility, samplers, pixel moves.

use std::collections::HashSet;

use papa_core::rng::Rng;
use papa_core::LengthMismatch;
use papa_train::augment::{
    augment_batch, draw_recipes, grid, sample_beta, sample_gamma, sample_normal, AugmentError,
    BatchShape, Recipe, CUTMIX_GRID, ERASING_GRID, LABEL_SMOOTHING_GRID, MIXUP_GRID,
};

fn key(r: &Recipe) -> [u32; 4] {
    [r.mixup, r.label_smoothing, r.cutmix, r.erasing].map(f32::to_bits)
}

fn shape(side: usize, classes: usize) -> BatchShape {
    BatchShape {
        channels: 1,
        height: side,
        width: side,
        classes,
    }
}

/// A batch whose sample `i` is the constant image `i` with label `i`.
fn constant_batch(batch: usize, side: usize) -> (Vec<f32>, Vec<u8>) {
    let images = (0..batch)
        .flat_map(|i| std::iter::repeat_n(i as f32, side * side))
        .collect();
    (images, (0..batch as u8).collect())
}

/// A [`constant_batch`] of `batch` one-hot classes after `recipe`: (images, targets).
fn augmented_constant_batch(
    recipe: &Recipe,
    rng: &mut Rng,
    batch: usize,
    side: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (mut images, labels) = constant_batch(batch, side);
    let mut targets = vec![0.0; batch * batch];
    let s = shape(side, batch);
    augment_batch(recipe, rng, &mut images, &labels, s, 0.0, &mut targets).unwrap();
    (images, targets)
}

#[test]
fn grid_covers_81_combinations_once() {
    let recipes = draw_recipes(7, 81, Recipe::standard(4, true));
    let got: HashSet<[u32; 4]> = recipes.iter().map(key).collect();
    let mut expected = HashSet::new();
    for m in MIXUP_GRID {
        for l in LABEL_SMOOTHING_GRID {
            for c in CUTMIX_GRID {
                for e in ERASING_GRID {
                    expected.insert([m, l, c, e].map(f32::to_bits));
                }
            }
        }
    }
    assert_eq!(expected.len(), 81);
    assert_eq!(got, expected);
    assert!(recipes.iter().all(|r| r.hflip && r.crop_padding == 4));
    assert!(draw_recipes(7, 3, Recipe::standard(4, false))
        .iter()
        .all(|r| !r.hflip));
}

#[test]
fn members_wrap_around_and_seed_shuffles() {
    let long = draw_recipes(3, 200, Recipe::standard(4, true));
    for (i, r) in long.iter().enumerate() {
        assert_eq!(r, &long[i % 81]);
    }
    assert_eq!(draw_recipes(3, 10, Recipe::standard(4, true)), long[..10]);
    assert_ne!(
        draw_recipes(4, 81, Recipe::standard(4, true)),
        draw_recipes(3, 81, Recipe::standard(4, true))
    );
    assert_ne!(
        draw_recipes(3, 81, Recipe::standard(4, true)),
        grid(Recipe::standard(4, true)),
        "the grid must be shuffled"
    );
}

#[test]
fn targets_are_probability_rows_for_every_recipe() {
    let (batch, side, classes) = (16, 12, 10);
    let mut rng = Rng::new(1);
    for recipe in grid(Recipe::standard(4, true)) {
        let mut images: Vec<f32> = (0..batch * side * side)
            .map(|_| rng.uniform_f32())
            .collect();
        let labels: Vec<u8> = (0..batch)
            .map(|_| rng.below(classes as u64) as u8)
            .collect();
        let mut targets = vec![f32::NAN; batch * classes];
        augment_batch(
            &recipe,
            &mut rng,
            &mut images,
            &labels,
            shape(side, classes),
            -0.5,
            &mut targets,
        )
        .unwrap();
        for row in targets.chunks(classes) {
            let sum: f64 = row.iter().map(|&t| f64::from(t)).sum();
            assert!((sum - 1.0).abs() < 1e-6, "{recipe:?}: sum {sum}");
            assert!(row.iter().all(|&t| (0.0..=1.0).contains(&t)));
        }
        assert!(images.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn label_smoothing_values() {
    let recipe = Recipe {
        label_smoothing: 0.1,
        ..Recipe::plain()
    };
    let (mut images, labels) = (vec![0.0; 2 * 4], vec![3u8, 0]);
    let mut targets = vec![0.0; 2 * 5];
    let s = shape(2, 5);
    augment_batch(
        &recipe,
        &mut Rng::new(0),
        &mut images,
        &labels,
        s,
        0.0,
        &mut targets,
    )
    .unwrap();
    let (on, off) = (0.9 + 0.1 / 5.0, 0.1 / 5.0);
    let expected = [off, off, off, on, off, on, off, off, off, off];
    for (t, e) in targets.iter().zip(expected) {
        assert!((t - e).abs() < 1e-7, "{targets:?}");
    }
}

#[test]
fn same_seed_same_bytes() {
    let recipe = Recipe {
        mixup: 1.0,
        label_smoothing: 0.05,
        cutmix: 0.5,
        erasing: 0.35,
        crop_padding: 4,
        hflip: true,
    };
    let run = |seed: u64| {
        let mut data = Rng::new(99);
        let mut images: Vec<f32> = (0..32 * 784).map(|_| data.uniform_f32()).collect();
        let labels: Vec<u8> = (0..32).map(|_| data.below(10) as u8).collect();
        let mut targets = vec![0.0; 32 * 10];
        let mut rng = Rng::new(seed);
        for _ in 0..5 {
            let s = shape(28, 10);
            augment_batch(
                &recipe,
                &mut rng,
                &mut images,
                &labels,
                s,
                -0.8,
                &mut targets,
            )
            .unwrap();
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (bits(&images), bits(&targets))
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn beta_gamma_normal_moments() {
    let n = 20_000;
    let mut rng = Rng::new(2024);
    let moments = |xs: &[f64]| {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        (mean, var)
    };
    for (a, b) in [(0.5, 0.5), (1.0, 1.0), (2.0, 5.0), (0.3, 1.7)] {
        let xs: Vec<f64> = (0..n).map(|_| sample_beta(&mut rng, a, b)).collect();
        assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
        let (mean, var) = moments(&xs);
        let theory_mean = a / (a + b);
        let theory_var = a * b / ((a + b).powi(2) * (a + b + 1.0));
        // About 5 standard errors of each estimate.
        let se_mean = (theory_var / n as f64).sqrt();
        assert!(
            (mean - theory_mean).abs() < 5.0 * se_mean,
            "Beta({a},{b}) mean {mean}"
        );
        assert!(
            (var - theory_var).abs() < 0.06 * theory_var,
            "Beta({a},{b}) var {var} vs {theory_var}"
        );
    }
    for k in [0.5, 1.0, 3.0] {
        let xs: Vec<f64> = (0..n).map(|_| sample_gamma(&mut rng, k)).collect();
        let (mean, var) = moments(&xs);
        assert!(
            (mean - k).abs() < 5.0 * (k / n as f64).sqrt(),
            "Gamma({k}) mean {mean}"
        );
        assert!((var - k).abs() < 0.1 * k, "Gamma({k}) var {var}");
    }
    let xs: Vec<f64> = (0..n).map(|_| sample_normal(&mut rng)).collect();
    let (mean, var) = moments(&xs);
    assert!(mean.abs() < 0.04 && (var - 1.0).abs() < 0.05);
}

#[test]
fn crop_shifts_image_with_padding() {
    let side = 8;
    let recipe = Recipe {
        crop_padding: 4,
        ..Recipe::plain()
    };
    let batch = 400;
    let one: Vec<f32> = (1..=64).map(|v| v as f32).collect();
    let mut images: Vec<f32> = one.iter().copied().cycle().take(batch * 64).collect();
    let labels = vec![0u8; batch];
    let mut targets = vec![0.0; batch];
    let s = shape(side, 1);
    augment_batch(
        &recipe,
        &mut Rng::new(4),
        &mut images,
        &labels,
        s,
        -1.0,
        &mut targets,
    )
    .unwrap();
    let mut shifts = HashSet::new();
    for out in images.chunks(64) {
        // Any real pixel tells the shift; then every pixel must agree with it.
        let at = out
            .iter()
            .position(|&v| v > 0.0)
            .expect("a shift of <= 4 keeps pixels");
        let v = out[at] as usize - 1;
        let (dy, dx) = (
            (v / 8) as i64 - (at / 8) as i64,
            (v % 8) as i64 - (at % 8) as i64,
        );
        assert!(dy.abs() <= 4 && dx.abs() <= 4);
        for y in 0..8i64 {
            for x in 0..8i64 {
                let (sy, sx) = (y + dy, x + dx);
                let expected = if (0..8).contains(&sy) && (0..8).contains(&sx) {
                    (sy * 8 + sx + 1) as f32
                } else {
                    -1.0
                };
                assert_eq!(out[(y * 8 + x) as usize], expected);
            }
        }
        shifts.insert((dy, dx));
    }
    assert_eq!(shifts.len(), 81, "every offset in [0, 8]^2 should occur");
}

#[test]
fn flip_mirrors_half_the_samples() {
    let recipe = Recipe {
        hflip: true,
        ..Recipe::plain()
    };
    let batch = 2000;
    // Two channels of 2x3: a flip mirrors every row of every channel.
    let one = [
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0,
    ];
    let mirrored = [
        3.0, 2.0, 1.0, 6.0, 5.0, 4.0, 9.0, 8.0, 7.0, 12.0, 11.0, 10.0,
    ];
    let mut images: Vec<f32> = one.iter().copied().cycle().take(batch * 12).collect();
    let s = BatchShape {
        channels: 2,
        height: 2,
        width: 3,
        classes: 2,
    };
    let mut targets = vec![0.0; batch * 2];
    let labels = vec![1u8; batch];
    augment_batch(
        &recipe,
        &mut Rng::new(8),
        &mut images,
        &labels,
        s,
        0.0,
        &mut targets,
    )
    .unwrap();
    let flipped = images.chunks(12).filter(|c| *c == mirrored).count();
    let kept = images.chunks(12).filter(|c| *c == one).count();
    assert_eq!(flipped + kept, batch);
    assert!(
        (900..1100).contains(&flipped),
        "{flipped} of {batch} flipped"
    );
}

#[test]
fn crop_skips_tabular_features() {
    let recipe = Recipe::standard(4, false);
    let mut images: Vec<f32> = (0..4 * 20).map(|v| v as f32).collect();
    let before = images.clone();
    let s = BatchShape {
        channels: 1,
        height: 1,
        width: 20,
        classes: 3,
    };
    let mut targets = vec![0.0; 4 * 3];
    let labels = [0, 1, 2, 0];
    augment_batch(
        &recipe,
        &mut Rng::new(1),
        &mut images,
        &labels,
        s,
        -9.0,
        &mut targets,
    )
    .unwrap();
    assert_eq!(images, before);
}

#[test]
fn mixup_mixes_images_and_targets_alike() {
    let recipe = Recipe {
        mixup: 1.0,
        ..Recipe::plain()
    };
    let (batch, side) = (10, 4);
    let mut rng = Rng::new(12);
    for _ in 0..20 {
        let (images, targets) = augmented_constant_batch(&recipe, &mut rng, batch, side);
        let mut lambdas = Vec::new();
        for (img, row) in images.chunks(side * side).zip(targets.chunks(batch)) {
            // The image is the target-weighted mix of the constant images 0..batch.
            let expected: f32 = row.iter().enumerate().map(|(k, &t)| t * k as f32).sum();
            assert!(img.iter().all(|&v| (v - expected).abs() < 1e-4));
            let mut nonzero: Vec<f32> = row.iter().copied().filter(|&t| t > 0.0).collect();
            assert!(nonzero.len() <= 2);
            nonzero.sort_by(f32::total_cmp);
            if nonzero.len() == 2 {
                lambdas.push(nonzero);
            }
        }
        // One lambda per batch: every mixed row holds the same pair {lambda, 1 - lambda}.
        assert!(lambdas.windows(2).all(|w| (w[0][0] - w[1][0]).abs() < 1e-6));
    }
}

#[test]
fn cutmix_lambda_is_the_real_box_area() {
    let recipe = Recipe {
        cutmix: 1.0,
        ..Recipe::plain()
    };
    let (batch, side) = (10, 28);
    let mut rng = Rng::new(21);
    let mut mixed_rows = 0;
    for _ in 0..30 {
        let (images, targets) = augmented_constant_batch(&recipe, &mut rng, batch, side);
        for (i, (img, row)) in images
            .chunks(side * side)
            .zip(targets.chunks(batch))
            .enumerate()
        {
            for (k, &t) in row.iter().enumerate() {
                let share = img.iter().filter(|&&v| v == k as f32).count() as f32 / 784.0;
                if k != i || t < 1.0 {
                    assert!(
                        (share - t).abs() < 1e-6,
                        "class {k}: {share} of pixels, {t}"
                    );
                }
            }
            mixed_rows += usize::from(row[i] < 1.0);
        }
    }
    assert!(mixed_rows > 100, "CutMix should usually cut: {mixed_rows}");
}

#[test]
fn both_mixers_alternate() {
    let recipe = Recipe {
        mixup: 1.0,
        cutmix: 1.0,
        ..Recipe::plain()
    };
    let (batch, side) = (8, 8);
    let mut rng = Rng::new(5);
    let mut cut = 0;
    let rounds = 400;
    for _ in 0..rounds {
        let (images, _) = augmented_constant_batch(&recipe, &mut rng, batch, side);
        // CutMix only moves whole pixels; mixup blends them.
        cut += usize::from(images.iter().all(|v| v.fract() == 0.0));
    }
    assert!(
        (140..260).contains(&cut),
        "{cut} of {rounds} batches used CutMix"
    );
}

#[test]
fn erasing_probability_and_rectangles() {
    let side = 28;
    let batch = 2000;
    for p in [1.0f32, 0.35] {
        let recipe = Recipe {
            erasing: p,
            ..Recipe::plain()
        };
        let mut images = vec![1.0f32; batch * side * side];
        let labels = vec![0u8; batch];
        let mut targets = vec![0.0; batch];
        let s = shape(side, 1);
        augment_batch(
            &recipe,
            &mut Rng::new(3),
            &mut images,
            &labels,
            s,
            0.0,
            &mut targets,
        )
        .unwrap();
        let mut erased = 0;
        for img in images.chunks(side * side) {
            let zeros: Vec<usize> = (0..784).filter(|&k| img[k] == 0.0).collect();
            if zeros.is_empty() {
                continue;
            }
            erased += 1;
            // The zeros form exactly their bounding rectangle.
            let (ys, xs): (Vec<usize>, Vec<usize>) = zeros.iter().map(|k| (k / 28, k % 28)).unzip();
            let h = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
            let w = xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1;
            assert_eq!(zeros.len(), h * w);
            let fraction = zeros.len() as f64 / 784.0;
            assert!((0.014..0.36).contains(&fraction), "{h}x{w}");
        }
        let rate = erased as f64 / batch as f64;
        assert!((rate - f64::from(p)).abs() < 0.04, "p {p}: erased {rate}");
    }
}

#[test]
fn errors_for_bad_buffers() {
    let r = Recipe::plain();
    let mut rng = Rng::new(0);
    let s = shape(2, 3);
    let labels = [0u8, 1];
    let (mut images, mut targets) = (vec![0.0; 8], vec![0.0; 6]);
    assert_eq!(
        augment_batch(
            &r,
            &mut rng,
            &mut images[..7],
            &labels,
            s,
            0.0,
            &mut targets
        ),
        Err(AugmentError::Length(LengthMismatch {
            what: "images",
            expected: 8,
            found: 7
        }))
    );
    assert!(matches!(
        augment_batch(
            &r,
            &mut rng,
            &mut images,
            &labels,
            s,
            0.0,
            &mut targets[..5]
        ),
        Err(AugmentError::Length(LengthMismatch {
            what: "targets",
            ..
        }))
    ));
    assert_eq!(
        augment_batch(&r, &mut rng, &mut images, &[0, 3], s, 0.0, &mut targets),
        Err(AugmentError::Label {
            index: 1,
            label: 3,
            classes: 3
        })
    );
}

/// A table batch as CSV data loads (F x 1 x 1): sample `i`, feature `f` holds `100 i + f + 1`
/// (never 0, so an erased feature shows), label `i`.
fn table_batch(batch: usize, features: usize) -> (Vec<f32>, Vec<u8>, BatchShape) {
    let images = (0..batch)
        .flat_map(|i| (0..features).map(move |f| (100 * i + f + 1) as f32))
        .collect();
    let shape = BatchShape {
        channels: features,
        height: 1,
        width: 1,
        classes: batch,
    };
    (images, (0..batch as u8).collect(), shape)
}

#[test]
fn cutmix_on_a_table_swaps_one_subset_of_features_per_batch() {
    let (batch, features) = (6, 40);
    let recipe = Recipe {
        cutmix: 1.0,
        ..Recipe::plain()
    };
    let mut swapped_fractions = Vec::new();
    for seed in 0..200 {
        let (mut images, labels, s) = table_batch(batch, features);
        let mut targets = vec![0.0; batch * batch];
        let mut rng = Rng::new(seed);
        augment_batch(
            &recipe,
            &mut rng,
            &mut images,
            &labels,
            s,
            0.0,
            &mut targets,
        )
        .unwrap();
        // Each sample's features come from itself or from one partner, the same subset for all.
        let mut subset: Option<Vec<usize>> = None;
        for (i, row) in images.chunks_exact(features).enumerate() {
            let partner = row
                .iter()
                .enumerate()
                .find(|&(f, &v)| v != (100 * i + f + 1) as f32)
                .map(|(f, &v)| (v as usize - f - 1) / 100);
            let taken: Vec<usize> = (0..features)
                .filter(|&f| row[f] != (100 * i + f + 1) as f32)
                .collect();
            for (f, &v) in row.iter().enumerate() {
                let own = (100 * i + f + 1) as f32;
                let other = partner.map(|j| (100 * j + f + 1) as f32);
                assert!(
                    v == own || Some(v) == other,
                    "seed {seed}: sample {i} feature {f}"
                );
            }
            if partner.is_some_and(|j| j != i) {
                assert_eq!(subset.get_or_insert(taken.clone()), &taken, "seed {seed}");
            }
            // The targets mix by the fraction of features swapped.
            if let (Some(j), Some(sub)) = (partner, &subset) {
                let lambda = 1.0 - sub.len() as f32 / features as f32;
                let t = &targets[i * batch..][..batch];
                assert!((t[i] - lambda).abs() < 1e-6 && (t[j] - (1.0 - lambda)).abs() < 1e-6);
            }
        }
        if let Some(sub) = subset {
            swapped_fractions.push(sub.len() as f64 / features as f64);
        }
    }
    // Beta(1, 1): the swapped fraction 1 - lambda is uniform on [0, 1], mean 0.5; it is not
    // the empty box that a 1 x 1 plane gives CutMix.
    let mean = swapped_fractions.iter().sum::<f64>() / swapped_fractions.len() as f64;
    assert!(
        swapped_fractions.len() > 150 && (mean - 0.5).abs() < 0.08,
        "{mean}"
    );
}

#[test]
fn erasing_on_a_table_masks_a_fraction_of_features_to_the_mean() {
    let (batch, features) = (8, 60);
    let recipe = Recipe {
        erasing: 0.5,
        ..Recipe::plain()
    };
    let (mut erased, mut fractions) = (0, Vec::new());
    for seed in 0..100 {
        let (mut images, labels, s) = table_batch(batch, features);
        let mut targets = vec![0.0; batch * batch];
        let mut rng = Rng::new(seed);
        augment_batch(
            &recipe,
            &mut rng,
            &mut images,
            &labels,
            s,
            0.0,
            &mut targets,
        )
        .unwrap();
        for (i, row) in images.chunks_exact(features).enumerate() {
            let zeros = row.iter().filter(|&&v| v == 0.0).count();
            // What is not erased is untouched.
            for (f, &v) in row.iter().enumerate() {
                assert!(v == 0.0 || v == (100 * i + f + 1) as f32);
            }
            if zeros > 0 {
                erased += 1;
                fractions.push(zeros as f64 / features as f64);
                assert!(zeros <= (0.33 * features as f64).round() as usize + 1);
            }
        }
    }
    // Half the samples, each with a fraction uniform on [0.02, 0.33) (mean 0.175).
    let share = erased as f64 / 800.0;
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    assert!((share - 0.5).abs() < 0.06, "{share}");
    assert!((mean - 0.175).abs() < 0.02, "{mean}");
}

#[test]
fn grid_strength_scales_every_members_regularisation_and_zero_is_standard() {
    use papa_train::config::{Augmentation, TrainConfig};
    use papa_train::train::member_recipes;
    let with = |grid_strength| TrainConfig {
        population: 9,
        grid_strength,
        augmentation: Augmentation::Grid,
        ..TrainConfig::default()
    };
    let full = member_recipes(&with(1.0), true);
    let quarter = member_recipes(&with(0.25), true);
    assert!(full.iter().any(|r| r.mixup > 0.0 && r.erasing > 0.0));
    for (f, q) in full.iter().zip(&quarter) {
        let scaled = [f.mixup, f.label_smoothing, f.cutmix, f.erasing].map(|x| x * 0.25);
        assert_eq!([q.mixup, q.label_smoothing, q.cutmix, q.erasing], scaled);
        assert_eq!((q.crop_padding, q.hflip), (f.crop_padding, f.hflip));
    }
    let standard = TrainConfig {
        augmentation: Augmentation::Standard,
        ..with(1.0)
    };
    assert_eq!(
        member_recipes(&with(0.0), true),
        member_recipes(&standard, true)
    );
}
