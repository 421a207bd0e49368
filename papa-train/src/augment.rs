//! Per-member data augmentation and regularisation settings.
//!
//! PAPA's members differ in their regularisation as well as their seed: each takes one
//! combination of a grid of mixup, label smoothing, CutMix and random erasing strengths, on
//! top of the usual random crop and (where it makes sense) horizontal flip. All randomness
//! comes from the [`Rng`] the caller passes, so a member's batches are reproducible.

use papa_core::rng::Rng;
use papa_core::LengthMismatch;

/// Mixup strengths of the grid (Beta parameter; 0 = off).
pub const MIXUP_GRID: [f32; 3] = [0.0, 0.5, 1.0];
/// Label smoothing strengths of the grid.
pub const LABEL_SMOOTHING_GRID: [f32; 3] = [0.0, 0.05, 0.1];
/// CutMix strengths of the grid (Beta parameter; 0 = off).
pub const CUTMIX_GRID: [f32; 3] = [0.0, 0.5, 1.0];
/// Random erasing probabilities of the grid.
pub const ERASING_GRID: [f32; 3] = [0.0, 0.15, 0.35];
/// Smallest side (height and width) an image needs for the crop to apply: shifting tabular
/// features (a `1 x F` "image") or tiny images by a few pixels would destroy them.
pub const MIN_CROP_SIDE: usize = 8;

/// Stream of the recipe shuffle, so it never shares draws with other uses of the run seed.
const RECIPE_STREAM: u64 = 0x7265_6369_7065_7321;

/// One member's augmentation and regularisation settings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recipe {
    /// Mixup Beta parameter (0 = off).
    pub mixup: f32,
    /// Label smoothing in `[0, 1)`.
    pub label_smoothing: f32,
    /// CutMix Beta parameter (0 = off).
    pub cutmix: f32,
    /// Probability of random erasing per sample.
    pub erasing: f32,
    /// Zero padding of the random crop (0 = no crop); only applied to images with both
    /// sides at least [`MIN_CROP_SIDE`].
    pub crop_padding: usize,
    /// Random horizontal flips with probability 0.5.
    pub hflip: bool,
}

impl Recipe {
    /// No augmentation and no regularisation at all.
    pub fn plain() -> Recipe {
        Recipe {
            mixup: 0.0,
            label_smoothing: 0.0,
            cutmix: 0.0,
            erasing: 0.0,
            crop_padding: 0,
            hflip: false,
        }
    }

    /// Image augmentation only (random crop with `crop_padding`, 0 = none, and flips when
    /// `hflip`), no grid regularisation: the base every grid entry builds on.
    pub fn standard(crop_padding: usize, hflip: bool) -> Recipe {
        Recipe {
            crop_padding,
            hflip,
            ..Recipe::plain()
        }
    }

    /// The same recipe with its mixup, label smoothing, CutMix and erasing strengths
    /// multiplied by `strength` (its crop and flip unchanged).
    pub fn scaled(self, strength: f32) -> Recipe {
        Recipe {
            mixup: self.mixup * strength,
            label_smoothing: self.label_smoothing * strength,
            cutmix: self.cutmix * strength,
            erasing: self.erasing * strength,
            ..self
        }
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mixup {}, label smoothing {}, cutmix {}, erasing {}, crop padding {}, flip {}",
            self.mixup,
            self.label_smoothing,
            self.cutmix,
            self.erasing,
            self.crop_padding,
            if self.hflip { "on" } else { "off" }
        )
    }
}

/// The 81 combinations of the grid on top of `base`'s image augmentation, in a fixed order
/// (mixup slowest, erasing fastest).
pub fn grid(base: Recipe) -> Vec<Recipe> {
    let mut out = Vec::with_capacity(81);
    for mixup in MIXUP_GRID {
        for label_smoothing in LABEL_SMOOTHING_GRID {
            for cutmix in CUTMIX_GRID {
                for erasing in ERASING_GRID {
                    out.push(Recipe {
                        mixup,
                        label_smoothing,
                        cutmix,
                        erasing,
                        ..base
                    });
                }
            }
        }
    }
    out
}

/// The recipes of a population: the grid shuffled by `run_seed`, member `i` taking entry
/// `i mod 81`, so that up to 81 members all differ and the CPU and GPU trainers agree.
pub fn draw_recipes(run_seed: u64, population: usize, base: Recipe) -> Vec<Recipe> {
    let mut all = grid(base);
    Rng::new(run_seed).fork(RECIPE_STREAM).shuffle(&mut all);
    (0..population).map(|i| all[i % all.len()]).collect()
}

/// Whom each sample of a batch is mixed with under mixup and CutMix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixPartner {
    /// A random permutation of the batch (papa's default).
    #[default]
    Shuffled,
    /// The batch in reversed order: sample `i` with sample `B - 1 - i` (the PyTorch
    /// replica's `flip(0)`).
    Reversed,
}

/// How the random-erasing box is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErasingBox {
    /// torchvision's `RandomErasing`: up to 10 tries of an area in `[0.02, 0.33)` and an
    /// aspect ratio in `[0.3, 3.3)`, nothing erased when no try fits (papa's default).
    #[default]
    Torchvision,
    /// One try of an area in `[0.02, 1/3]` and an aspect ratio in `[0.3, 1/0.3]`, its sides
    /// clamped to the image (the PyTorch replica's).
    OneClamped,
}

/// How [`augment_batch_with`] fills and draws what the [`Recipe`] leaves open: settings of a
/// run, the same for every member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentStyle {
    /// The value of the crop's padding.
    pub pad_value: f32,
    /// Mixup and CutMix partners.
    pub mix_partner: MixPartner,
    /// Random-erasing boxes.
    pub erasing_box: ErasingBox,
}

/// Why a batch could not be augmented.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugmentError {
    /// A buffer's length disagrees with the batch shape.
    #[error(transparent)]
    Length(#[from] LengthMismatch),
    /// A label is not below the number of classes.
    #[error("label {label} of sample {index} out of range [0, {classes})")]
    Label {
        /// Sample.
        index: usize,
        /// Its label.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
    /// The number of classes is 0.
    #[error("zero classes")]
    NoClasses,
}

/// The shape of one sample and of its target row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    /// Channels per image.
    pub channels: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Number of classes (values per target row).
    pub classes: usize,
}

/// Augments a batch in place and writes its soft targets.
///
/// `images` is `B x C x H x W` (B = `labels.len()`), `targets` is `B x classes`. In order:
/// random crop (padding filled with `pad_value`, the normalised value of a black pixel) and
/// horizontal flip with probability 0.5, per sample; label smoothing
/// (`(1 - ls) * onehot + ls / classes`); then mixup or CutMix over the whole batch (one of
/// them with probability 0.5 when both are on), mixing targets like images; finally random
/// erasing per sample, as torchvision's `RandomErasing(p, scale (0.02, 0.33),
/// ratio (0.3, 3.3), value 0)`. Mixup and CutMix partners are a random permutation of the
/// batch. [`augment_batch_with`] chooses the partners and the erasing boxes.
///
/// Tables (CSV data: every channel a 1 x 1 plane, one feature) have no boxes, so that no
/// recipe silently does nothing there: CutMix swaps a random subset of `round((1 - lambda) F)`
/// features, one subset per batch (SAINT's input-space CutMix, Somepalli et al. 2021), and
/// erasing sets a random fraction of a sample's features, drawn like the erased area, to 0,
/// their mean once standardised (feature masking as in VIME, Yoon et al. 2020, with the
/// mean in place of a draw from the marginal).
pub fn augment_batch(
    recipe: &Recipe,
    rng: &mut Rng,
    images: &mut [f32],
    labels: &[u8],
    shape: BatchShape,
    pad_value: f32,
    targets: &mut [f32],
) -> Result<(), AugmentError> {
    let style = AugmentStyle {
        pad_value,
        mix_partner: MixPartner::Shuffled,
        erasing_box: ErasingBox::Torchvision,
    };
    augment_batch_with(recipe, rng, images, labels, shape, &style, targets)
}

/// [`augment_batch`] with the crop's padding value, the mixing partners and the erasing
/// boxes of `style`.
pub fn augment_batch_with(
    recipe: &Recipe,
    rng: &mut Rng,
    images: &mut [f32],
    labels: &[u8],
    shape: BatchShape,
    style: &AugmentStyle,
    targets: &mut [f32],
) -> Result<(), AugmentError> {
    let pad_value = style.pad_value;
    let BatchShape {
        channels,
        height,
        width,
        classes,
    } = shape;
    let batch = labels.len();
    let sample_len = channels * height * width;
    check_len("images", batch * sample_len, images.len())?;
    check_len("targets", batch * classes, targets.len())?;
    if classes == 0 {
        return Err(AugmentError::NoClasses);
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= classes)
    {
        return Err(AugmentError::Label {
            index,
            label,
            classes,
        });
    }
    if batch == 0 || sample_len == 0 {
        return Ok(());
    }

    let plane = height * width;
    let crop = recipe.crop_padding > 0 && height >= MIN_CROP_SIDE && width >= MIN_CROP_SIDE;
    let mut scratch = vec![0.0f32; plane];
    for sample in images.chunks_exact_mut(sample_len) {
        if crop {
            let span = 2 * recipe.crop_padding as u64 + 1;
            let dy = rng.below(span) as usize;
            let dx = rng.below(span) as usize;
            for p in sample.chunks_exact_mut(plane) {
                let shift = (dy, dx, recipe.crop_padding);
                crop_plane(p, &mut scratch, height, width, shift, pad_value);
            }
        }
        if recipe.hflip && rng.uniform_f32() < 0.5 {
            sample.chunks_exact_mut(width).for_each(<[f32]>::reverse);
        }
    }

    let ls = f64::from(recipe.label_smoothing);
    let off = (ls / classes as f64) as f32;
    let on = (1.0 - ls + ls / classes as f64) as f32;
    for (row, &label) in targets.chunks_exact_mut(classes).zip(labels) {
        row.fill(off);
        row[usize::from(label)] = on;
    }

    let use_mixup = match (recipe.mixup > 0.0, recipe.cutmix > 0.0) {
        (false, false) => None,
        (true, false) => Some(true),
        (false, true) => Some(false),
        (true, true) => Some(rng.uniform_f32() < 0.5),
    };
    if let Some(use_mixup) = use_mixup {
        let alpha = f64::from(if use_mixup {
            recipe.mixup
        } else {
            recipe.cutmix
        });
        let mut lambda = sample_beta(rng, alpha, alpha);
        let mut partner: Vec<usize> = (0..batch).collect();
        match style.mix_partner {
            MixPartner::Shuffled => rng.shuffle(&mut partner),
            MixPartner::Reversed => partner.reverse(),
        }
        let original = images.to_vec();
        if use_mixup {
            let (l, r) = (lambda as f32, (1.0 - lambda) as f32);
            for (i, sample) in images.chunks_exact_mut(sample_len).enumerate() {
                let other = &original[partner[i] * sample_len..][..sample_len];
                for (v, &o) in sample.iter_mut().zip(other) {
                    *v = l * *v + r * o;
                }
            }
        } else if plane == 1 {
            // A table has no boxes: CutMix swaps a random subset of features instead (the
            // input-space CutMix of SAINT, Somepalli et al. 2021), one subset per batch as
            // an image batch has one box.
            let swapped = random_features(rng, channels, 1.0 - lambda);
            for (i, sample) in images.chunks_exact_mut(sample_len).enumerate() {
                let other = &original[partner[i] * sample_len..][..sample_len];
                for &f in &swapped {
                    sample[f] = other[f];
                }
            }
            lambda = 1.0 - swapped.len() as f64 / channels as f64;
        } else {
            let (y0, y1, x0, x1) = cutmix_box(rng, height, width, lambda);
            for (i, sample) in images.chunks_exact_mut(sample_len).enumerate() {
                let other = &original[partner[i] * sample_len..][..sample_len];
                for c in 0..channels {
                    for y in y0..y1 {
                        let at = c * plane + y * width;
                        sample[at + x0..at + x1].copy_from_slice(&other[at + x0..at + x1]);
                    }
                }
            }
            // The clipped box may be smaller than asked: mix the targets by the real area.
            lambda = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / plane as f64;
        }
        let original = targets.to_vec();
        for (i, row) in targets.chunks_exact_mut(classes).enumerate() {
            let other = &original[partner[i] * classes..][..classes];
            for (t, &o) in row.iter_mut().zip(other) {
                *t = (lambda * f64::from(*t) + (1.0 - lambda) * f64::from(o)) as f32;
            }
        }
    }

    if recipe.erasing > 0.0 {
        for sample in images.chunks_exact_mut(sample_len) {
            if rng.uniform_f32() >= recipe.erasing {
                continue;
            }
            if plane == 1 {
                // A table's erasing masks features to their mean (0 once standardised): a
                // fraction drawn like the erased area of an image, at least one feature.
                let fraction = ERASE_AREA.0 + (ERASE_AREA.1 - ERASE_AREA.0) * rng.uniform_f64();
                let fraction = fraction.max(1.0 / channels as f64);
                for f in random_features(rng, channels, fraction) {
                    sample[f] = 0.0;
                }
                continue;
            }
            let drawn = match style.erasing_box {
                ErasingBox::Torchvision => erasing_box(rng, height, width),
                ErasingBox::OneClamped => Some(one_clamped_box(rng, height, width)),
            };
            if let Some((y0, h, x0, w)) = drawn {
                for p in sample.chunks_exact_mut(plane) {
                    for y in y0..y0 + h {
                        p[y * width + x0..y * width + x0 + w].fill(0.0);
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), AugmentError> {
    Ok(LengthMismatch::check(what, expected, found)?)
}

/// Crops `plane` (`h x w`) out of its copy padded by `pad` on each side, at offset
/// `(dy, dx)` in `[0, 2 pad]`: output pixel `(y, x)` is input `(y + dy - pad, x + dx - pad)`
/// or `pad_value` outside the image.
fn crop_plane(
    plane: &mut [f32],
    scratch: &mut [f32],
    h: usize,
    w: usize,
    (dy, dx, pad): (usize, usize, usize),
    pad_value: f32,
) {
    scratch.copy_from_slice(plane);
    for y in 0..h {
        let sy = (y + dy).wrapping_sub(pad);
        for x in 0..w {
            let sx = (x + dx).wrapping_sub(pad);
            // Negative source coordinates wrap to huge values, so one bound check suffices.
            plane[y * w + x] = if sy < h && sx < w {
                scratch[sy * w + sx]
            } else {
                pad_value
            };
        }
    }
}

/// The area fraction of an erased region: torchvision's `scale` (0.02, 0.33).
const ERASE_AREA: (f64, f64) = (0.02, 0.33);

/// `round(fraction * n)` distinct indices in `0..n`, uniformly at random.
fn random_features(rng: &mut Rng, n: usize, fraction: f64) -> Vec<usize> {
    let count = ((fraction.clamp(0.0, 1.0) * n as f64).round() as usize).min(n);
    let mut all: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut all);
    all.truncate(count);
    all
}

/// The CutMix box `(y0, y1, x0, x1)` for `lambda`, as in the CutMix paper: sides
/// `H sqrt(1 - lambda)` and `W sqrt(1 - lambda)` around a uniform centre, clipped.
fn cutmix_box(rng: &mut Rng, h: usize, w: usize, lambda: f64) -> (usize, usize, usize, usize) {
    let ratio = (1.0 - lambda).max(0.0).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
    let cx = rng.below(w as u64) as usize;
    let cy = rng.below(h as u64) as usize;
    (
        cy.saturating_sub(cut_h / 2),
        (cy + cut_h / 2).min(h),
        cx.saturating_sub(cut_w / 2),
        (cx + cut_w / 2).min(w),
    )
}

/// A random-erasing box `(y0, height, x0, width)` following torchvision: up to 10 tries of
/// an area fraction in `[0.02, 0.33)` and a log-uniform aspect ratio in `[0.3, 3.3)`;
/// `None` when no try fits.
fn erasing_box(rng: &mut Rng, h: usize, w: usize) -> Option<(usize, usize, usize, usize)> {
    let area = (h * w) as f64;
    let (log_lo, log_hi) = (0.3f64.ln(), 3.3f64.ln());
    for _ in 0..10 {
        let target = area * (0.02 + 0.31 * rng.uniform_f64());
        let aspect = (log_lo + (log_hi - log_lo) * rng.uniform_f64()).exp();
        let eh = (target * aspect).sqrt().round() as usize;
        let ew = (target / aspect).sqrt().round() as usize;
        if eh < h && ew < w {
            let y0 = rng.below((h - eh + 1) as u64) as usize;
            let x0 = rng.below((w - ew + 1) as u64) as usize;
            return Some((y0, eh, x0, ew));
        }
    }
    None
}

/// The PyTorch replica's erasing box `(y0, height, x0, width)`: one try of an area fraction
/// uniform in `[0.02, 1/3]` and a log-uniform aspect ratio in `[0.3, 1/0.3]`, each side
/// rounded and clamped to the image, so that a box is always drawn (possibly a smaller one).
fn one_clamped_box(rng: &mut Rng, h: usize, w: usize) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let log_hi = (1.0f64 / 0.3).ln();
    let target = area * (0.02 + (1.0 / 3.0 - 0.02) * rng.uniform_f64());
    let aspect = (-log_hi + 2.0 * log_hi * rng.uniform_f64()).exp();
    let eh = ((target * aspect).sqrt().round() as usize).min(h);
    let ew = ((target / aspect).sqrt().round() as usize).min(w);
    let y0 = rng.below((h - eh + 1) as u64) as usize;
    let x0 = rng.below((w - ew + 1) as u64) as usize;
    (y0, eh, x0, ew)
}

/// A standard normal draw (Box-Muller, one of the pair).
pub fn sample_normal(rng: &mut Rng) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.uniform_f64();
    let u2 = rng.uniform_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Gamma(`shape`, 1) draw by Marsaglia and Tsang's method; shapes below 1 use the
/// boost `Gamma(a) = Gamma(a + 1) * U^(1/a)`. Returns 0 for a non-positive shape.
pub fn sample_gamma(rng: &mut Rng, shape: f64) -> f64 {
    if shape <= 0.0 || shape.is_nan() {
        return 0.0;
    }
    if shape < 1.0 {
        let u = 1.0 - rng.uniform_f64();
        return sample_gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = sample_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.uniform_f64();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// A Beta(`a`, `b`) draw as `X / (X + Y)` with `X ~ Gamma(a)`, `Y ~ Gamma(b)`; 0.5 in the
/// (underflow) case where both are 0.
pub fn sample_beta(rng: &mut Rng, a: f64, b: f64) -> f64 {
    let x = sample_gamma(rng, a);
    let y = sample_gamma(rng, b);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_plane_shifts_by_hand() {
        // 3x3 image 1..9, pad 1, offset (0, 2): output (y, x) = input (y - 1, x + 1).
        let mut p: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut s = vec![0.0; 9];
        crop_plane(&mut p, &mut s, 3, 3, (0, 2, 1), -1.0);
        #[rustfmt::skip]
        let expected = [
            -1.0, -1.0, -1.0,
             2.0,  3.0, -1.0,
             5.0,  6.0, -1.0,
        ];
        assert_eq!(p, expected);
    }

    #[test]
    fn crop_plane_centre_offset_is_identity() {
        let orig: Vec<f32> = (0..20).map(|v| v as f32).collect();
        let mut p = orig.clone();
        let mut s = vec![0.0; 20];
        crop_plane(&mut p, &mut s, 4, 5, (2, 2, 2), 9.0);
        assert_eq!(p, orig);
    }

    #[test]
    fn cutmix_box_is_clipped_and_sized() {
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let lambda = rng.uniform_f64();
            let (y0, y1, x0, x1) = cutmix_box(&mut rng, 28, 28, lambda);
            assert!(y0 <= y1 && y1 <= 28 && x0 <= x1 && x1 <= 28);
            let side = (28.0 * (1.0 - lambda).sqrt()) as usize;
            assert!(y1 - y0 <= side && x1 - x0 <= side);
        }
    }

    #[test]
    fn erasing_box_within_torchvision_bounds() {
        let mut rng = Rng::new(11);
        let (h, w) = (28usize, 28usize);
        let (mut hits, mut total_fraction) = (0, 0.0);
        for _ in 0..5000 {
            if let Some((y0, eh, x0, ew)) = erasing_box(&mut rng, h, w) {
                hits += 1;
                assert!(y0 + eh <= h && x0 + ew <= w);
                // Area fraction in [0.02, 0.33) and ratio in [0.3, 3.3), up to the rounding
                // of each side to an integer (at most half a pixel each).
                let fraction = (eh * ew) as f64 / (h * w) as f64;
                assert!((0.014..0.36).contains(&fraction), "{eh}x{ew}");
                let ratio = eh as f64 / ew as f64;
                assert!((0.3 * 0.6..3.3 / 0.6).contains(&ratio), "{eh}x{ew}");
                total_fraction += fraction;
            }
        }
        assert!(hits > 4900, "28x28 should nearly always fit: {hits}");
        // The area fraction is uniform on [0.02, 0.33): mean 0.175.
        let mean = total_fraction / f64::from(hits);
        assert!((mean - 0.175).abs() < 0.01, "mean erased fraction {mean}");
    }
}
