//! Batch loading: each member's shuffled order, gathered and augmented by its recipe.

use super::{TrainError, AUGMENT_STREAM};
use crate::augment::{augment_batch_with, AugmentStyle, BatchShape, Recipe};
use crate::data::{batches, epoch_order, DataError, Dataset};
use papa_core::rng::Rng;
use rayon::prelude::*;

/// Fills one `P x B` batch of images and soft targets per step. Every draw is a fork of the
/// run seed by member, epoch and step: the same bits on any thread count and on resume.
pub(super) struct BatchLoader<'a> {
    train: &'a Dataset,
    recipes: &'a [Recipe],
    seed: u64,
    batch: usize,
    train_len: usize,
    style: AugmentStyle,
    /// Each member's sample order for the current epoch.
    orders: Vec<Vec<u32>>,
    images: Vec<f32>,
    targets: Vec<f32>,
}

impl<'a> BatchLoader<'a> {
    pub(super) fn new(
        train: &'a Dataset,
        recipes: &'a [Recipe],
        (seed, batch, train_len): (u64, usize, usize),
        style: AugmentStyle,
    ) -> Self {
        let p = recipes.len();
        Self {
            train,
            recipes,
            seed,
            batch,
            train_len,
            style,
            orders: vec![],
            images: vec![0.0; p * batch * train.sample_len()],
            targets: vec![0.0; p * batch * train.classes],
        }
    }

    /// Draws every member's order for `epoch`.
    pub(super) fn start_epoch(&mut self, epoch: usize) {
        self.orders = (0..self.recipes.len())
            .map(|j| epoch_order(self.seed, j as u64, epoch as u64, self.train_len as u32))
            .collect();
    }

    /// The images and targets of batch `s` of the epoch, the run's step `step`.
    pub(super) fn load(&mut self, s: usize, step: u64) -> Result<(&[f32], &[f32]), TrainError> {
        let (b, train) = (self.batch, self.train);
        let (sl, classes) = (train.sample_len(), train.classes);
        let shape = BatchShape {
            channels: train.channels,
            height: train.height,
            width: train.width,
            classes,
        };
        let (orders, recipes, seed, style) = (&self.orders, self.recipes, self.seed, &self.style);
        self.images
            .par_chunks_mut(b * sl)
            .zip(self.targets.par_chunks_mut(b * classes))
            .enumerate()
            .try_for_each(|(j, (img, tgt))| -> Result<(), TrainError> {
                let order = orders.get(j).ok_or(DataError::Index {
                    index: j,
                    len: orders.len(),
                })?;
                let idx = batches(order, b)?.nth(s).ok_or(DataError::Index {
                    index: (s + 1) * b - 1,
                    len: order.len(),
                })?;
                let mut labels = vec![0u8; b];
                train.gather(idx, img, &mut labels)?;
                let mut rng = Rng::new(seed)
                    .fork(AUGMENT_STREAM)
                    .fork(j as u64)
                    .fork(step);
                Ok(augment_batch_with(
                    &recipes[j],
                    &mut rng,
                    img,
                    &labels,
                    shape,
                    style,
                    tgt,
                )?)
            })?;
        Ok((&self.images, &self.targets))
    }
}
