//! The microcontroller runtime: a [`FlashModel`] run in place, `no_std`, no allocator, in a
//! caller-owned arena whose length the image states ([`FlashModel::arena_len`]).
//!
//! - int8 ([`FlashModel::infer_int8`]): int8 weights and activations, int32 accumulators and
//!   TFLM's requantisation ([`crate::quant`]); an input of stored bytes goes through the
//!   image's per-channel tables, so the path has no floating point at all.
//! - f32 ([`FlashModel::infer_f32`]): the folded model in f32.
//!
//! Layer `i` reads one end of the arena and writes the other (even layers read the front,
//! odd ones the back), so the arena is the largest input plus output of one layer; a conv's
//! ReLU and max-pool are fused into it (the pool keeps the largest requantised value of its
//! window, exactly what a separate pool after the conv gives).
//!
//! ```
//! use papa_edge::flash::{FlashModel, ImageError};
//! use papa_edge::runtime::Input;
//! fn classify(image: &[u8], pixels: &[u8], arena: &mut [i8]) -> Result<usize, Box<dyn core::error::Error>> {
//!     let model = FlashModel::parse(image)?;
//!     Ok(model.infer_int8(Input::Bytes(pixels), arena)?.class)
//! }
//! assert!(classify(b"not an image", &[0; 784], &mut [0; 16]).is_err());
//! ```

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod float;
mod int8;
mod kernel;

use crate::flash::{normalise, FlashModel, Layer, Precision, RunError};

/// One sample, as the dataset stores it (before the pixel scale and the normalisation).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// Stored bytes (8-bit pixels, or small integer features): the int8 path maps each
    /// through a table, without floating point.
    Bytes(&'a [u8]),
    /// Stored values as f32 (CSV features): the int8 path normalises and quantises them in
    /// f32 first.
    F32(&'a [f32]),
}

impl Input<'_> {
    fn len(&self) -> usize {
        match self {
            Input::Bytes(v) => v.len(),
            Input::F32(v) => v.len(),
        }
    }
}

/// What an inference gives: the class (the first largest logit) and the logits, which live
/// in the arena until the next inference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction<'r, T> {
    /// The predicted class.
    pub class: usize,
    /// The logits (int8 at the image's output quantisation, or f32).
    pub logits: &'r [T],
}

/// A fingerprint of logits (FNV-1a, 32 bits, over their bytes in order: an int8 logit as
/// its byte, an f32 one as its little-endian bits), so that a device's run can be held bit
/// for bit to the host's with one number over the serial line.
///
/// ```
/// use papa_edge::runtime::Digest;
/// let (mut a, mut b) = (Digest::new(), Digest::new());
/// a.add_i8(&[1, -2]);
/// b.add_i8(&[1, -3]);
/// assert_ne!(a.value(), b.value());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u32);

impl Digest {
    /// The digest of nothing.
    pub const fn new() -> Self {
        Digest(0x811c_9dc5)
    }

    fn add_byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }

    /// Adds int8 logits.
    pub fn add_i8(&mut self, logits: &[i8]) {
        logits.iter().for_each(|&v| self.add_byte(v as u8));
    }

    /// Adds f32 logits.
    pub fn add_f32(&mut self, logits: &[f32]) {
        for b in logits.iter().flat_map(|v| v.to_bits().to_le_bytes()) {
            self.add_byte(b);
        }
    }

    /// The digest so far.
    pub const fn value(&self) -> u32 {
        self.0
    }
}

impl Default for Digest {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> FlashModel<'a> {
    /// Classifies `input` with an int8 image, in `arena` (at least
    /// [`arena_len`](FlashModel::arena_len) elements).
    pub fn infer_int8<'r>(
        &self,
        input: Input<'_>,
        arena: &'r mut [i8],
    ) -> Result<Prediction<'r, i8>, RunError> {
        self.infer_int8_traced(input, arena, |_, _| {})
    }

    /// [`infer_int8`](FlashModel::infer_int8), showing `observe` each layer's output (its
    /// index, its values) as it is computed: the per-layer checks and reports use it.
    pub fn infer_int8_traced<'r>(
        &self,
        input: Input<'_>,
        arena: &'r mut [i8],
        observe: impl FnMut(usize, &[i8]),
    ) -> Result<Prediction<'r, i8>, RunError> {
        self.expect(Precision::Int8)?;
        let params = self.input_params();
        let fill = |x: &mut [i8]| match input {
            Input::Bytes(v) => self.each_channel(x, v, |c, out, stored| {
                let table = self.input_table(c);
                for (q, &b) in out.iter_mut().zip(stored) {
                    *q = table.get(usize::from(b)).map_or(0, |&t| t as i8);
                }
            }),
            Input::F32(v) => self.each_channel(x, v, |c, out, stored| {
                let (mean, std) = self.normalization(c);
                let scale = self.pixel_scale();
                for (q, &s) in out.iter_mut().zip(stored) {
                    *q = params.map_or(0, |p| p.quantize(normalise(s, scale, mean, std)));
                }
            }),
        };
        self.run(
            input.len(),
            arena,
            fill,
            kernel::layer::<int8::Int8>,
            observe,
        )
    }

    /// Classifies `input` with an f32 image, in `arena` (at least
    /// [`arena_len`](FlashModel::arena_len) elements).
    pub fn infer_f32<'r>(
        &self,
        input: Input<'_>,
        arena: &'r mut [f32],
    ) -> Result<Prediction<'r, f32>, RunError> {
        self.infer_f32_traced(input, arena, |_, _| {})
    }

    /// [`infer_f32`](FlashModel::infer_f32), showing `observe` each layer's output.
    pub fn infer_f32_traced<'r>(
        &self,
        input: Input<'_>,
        arena: &'r mut [f32],
        observe: impl FnMut(usize, &[f32]),
    ) -> Result<Prediction<'r, f32>, RunError> {
        self.expect(Precision::F32)?;
        let scale = self.pixel_scale();
        let fill = |x: &mut [f32]| match input {
            Input::Bytes(v) => self.each_channel(x, v, |c, out, stored| {
                let (mean, std) = self.normalization(c);
                for (x, &b) in out.iter_mut().zip(stored) {
                    *x = normalise(f32::from(b), scale, mean, std);
                }
            }),
            Input::F32(v) => self.each_channel(x, v, |c, out, stored| {
                let (mean, std) = self.normalization(c);
                for (x, &s) in out.iter_mut().zip(stored) {
                    *x = normalise(s, scale, mean, std);
                }
            }),
        };
        self.run(
            input.len(),
            arena,
            fill,
            kernel::layer::<float::F32>,
            observe,
        )
    }

    fn expect(&self, precision: Precision) -> Result<(), RunError> {
        if self.precision() == precision {
            Ok(())
        } else {
            Err(RunError::Precision {
                image: self.precision(),
            })
        }
    }

    /// Calls `f(channel, out, stored)` on each channel's plane of `x` and of `stored`.
    fn each_channel<S, T>(
        &self,
        x: &mut [T],
        stored: &[S],
        mut f: impl FnMut(usize, &mut [T], &[S]),
    ) {
        let plane = self.input_len() / self.input_shape()[0];
        for (c, (out, stored)) in x.chunks_mut(plane).zip(stored.chunks(plane)).enumerate() {
            f(c, out, stored);
        }
    }

    /// The driver both precisions share: checks the input and arena, fills the input at
    /// the front of the arena, runs each layer from one end of the arena into the other.
    fn run<'r, T: Copy + PartialOrd>(
        &self,
        input_len: usize,
        arena: &'r mut [T],
        fill: impl FnOnce(&mut [T]),
        mut layer: impl FnMut(&Layer<'_>, &[T], &mut [T]) -> Result<(), RunError>,
        mut observe: impl FnMut(usize, &[T]),
    ) -> Result<Prediction<'r, T>, RunError> {
        let expected = self.input_len();
        if input_len != expected {
            return Err(RunError::Input {
                expected,
                found: input_len,
            });
        }
        let needed = self.arena_len();
        let found = arena.len();
        let arena = arena
            .get_mut(..needed)
            .ok_or(RunError::Arena { needed, found })?;
        fill(arena.get_mut(..expected).unwrap_or_default());
        let mut front = true;
        let mut out_len = expected;
        for index in 0..self.layer_count() {
            let l = self.layer(index)?;
            let (inp, out) = ends(arena, front, l.input_len(), l.output_len());
            layer(&l, inp, out)?;
            observe(index, out);
            out_len = l.output_len();
            front = !front;
        }
        // The last layer wrote the back when it read the front.
        let start = if front {
            0
        } else {
            needed.saturating_sub(out_len)
        };
        let logits: &'r [T] = arena.get(start..start + out_len).unwrap_or_default();
        Ok(Prediction {
            class: argmax(logits),
            logits,
        })
    }
}

/// The input (`inp` values at one end) and output (`out` values at the other) of a layer
/// that reads the front of `arena` when `front`, the back otherwise.
fn ends<T>(arena: &mut [T], front: bool, inp: usize, out: usize) -> (&[T], &mut [T]) {
    let n = arena.len();
    if front {
        let (lo, hi) = arena.split_at_mut(n.saturating_sub(out));
        (lo.get(..inp).unwrap_or_default(), hi)
    } else {
        let (lo, hi) = arena.split_at_mut(out);
        (
            hi.get(hi.len().saturating_sub(inp)..).unwrap_or_default(),
            lo,
        )
    }
}

/// The index of the first largest value (0 for an empty slice).
fn argmax<T: Copy + PartialOrd>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if values.get(best).is_some_and(|b| v > b) {
            best = i;
        }
    }
    best
}
