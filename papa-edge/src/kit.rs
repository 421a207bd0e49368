//! A firmware kit (feature `hal`): the usual microcontroller loop on embedded-hal 1.0
//! traits. Take a sample from a [`SampleSource`], classify it with an int8
//! [`FlashModel`], show the class on [`OutputPin`]s, sleep with [`DelayNs`], again.
//!
//! - [`SampleSource`]: where a sample's stored bytes come from. embedded-hal 1.0 has no
//!   ADC trait, so the kit defines this one and implements it for a sensor on an SPI
//!   device ([`SpiSampleSource`]) and on an I2C bus ([`I2cSampleSource`]); a firmware
//!   implements it for anything else (an ADC driver, a camera, a UART).
//! - [`Classifier`]: the model, the source, the class pins, the delay and two caller-owned
//!   buffers (the sample and the arena), checked once at construction
//!   ([`Classifier::new`], a [`SetupError`] when they do not fit the model, never a
//!   panic); [`Classifier::step`] does one read-infer-show and
//!   [`Classifier::run`]/[`Classifier::run_forever`] loop it with a period.
//!
//! **The class on the pins** is a binary code, least significant bit first: pin `i` is
//! driven high exactly when bit `i` of the class is set, so a model of `classes` classes
//! takes [`pins_for`]`(classes)` = ceil(log2(classes)) pins (4 for Fashion-MNIST's 10, 0
//! for a single class). Every pin is driven on every step (no state is remembered), so a
//! glitch on one pin lasts one period at most.
//!
//! With the feature `defmt`, each inference is logged with `defmt::info!` (its class) and
//! each error with `defmt::warn!`.
//!
//! The kit is `no_std` without an allocator, and like the runtime it has no path that
//! panics: every slice access is checked and every failure is a typed error.
//!
//! ```
//! use core::convert::Infallible;
//! use embedded_hal::delay::DelayNs;
//! use embedded_hal::digital::{ErrorType, OutputPin};
//! use papa_edge::flash::FlashModel;
//! use papa_edge::kit::{pins_for, Classifier, SampleSource};
//! # use papa_model::card::{ModelCard, Normalization};
//! # use papa_model::file::ModelFile;
//! # use papa_model::{zoo, ModelSpec};
//! # // A tiny int8 image (a firmware embeds one: `include_bytes!("model.papa")`).
//! # let spec = ModelSpec::new(&zoo::mlp(&[8], 3), [1, 4, 4], 3)?;
//! # let card = ModelCard::new("mlp:8", &spec, 255.0, Normalization::identity(1), vec![]);
//! # let params: Vec<f32> = (0..spec.len()).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
//! # let model = ModelFile { card, params };
//! # let stored: Vec<f32> = (0..16 * 8).map(|i| (i * 37 % 256) as f32).collect();
//! # let q = papa_edge::onnx::quantize(&model, &papa_edge::onnx::calibrate(&model, &stored)?)?;
//! # let image: &[u8] = &papa_edge::flash::write::int8(&q)?;
//!
//! // What a HAL provides: a sensor, two LEDs, a timer (here small fakes).
//! struct Sensor(u8);
//! impl SampleSource for Sensor {
//!     type Error = Infallible;
//!     fn read_sample(&mut self, into: &mut [u8]) -> Result<(), Infallible> {
//!         for b in into.iter_mut() {
//!             self.0 = self.0.wrapping_mul(5).wrapping_add(3);
//!             *b = self.0;
//!         }
//!         Ok(())
//!     }
//! }
//! #[derive(Default)]
//! struct Led(bool);
//! impl ErrorType for Led {
//!     type Error = Infallible;
//! }
//! impl OutputPin for Led {
//!     fn set_low(&mut self) -> Result<(), Infallible> {
//!         self.0 = false;
//!         Ok(())
//!     }
//!     fn set_high(&mut self) -> Result<(), Infallible> {
//!         self.0 = true;
//!         Ok(())
//!     }
//! }
//! struct Timer(u64);
//! impl DelayNs for Timer {
//!     fn delay_ns(&mut self, ns: u32) {
//!         self.0 += u64::from(ns);
//!     }
//! }
//!
//! let model = FlashModel::parse(image)?;
//! const PINS: usize = pins_for(3); // classes 0, 1, 2 on two pins
//! let mut sample = [0u8; 16]; // 1 x 4 x 4 stored bytes
//! let mut arena = [0i8; 64]; // at least model.arena_len()
//! let leds: [Led; PINS] = Default::default();
//! let mut kit = Classifier::new(model, Sensor(7), leds, Timer(0), &mut sample, &mut arena)?
//!     .with_period_ms(250);
//!
//! let class = kit.step()?;
//! let (_, leds, _) = kit.release();
//! assert_eq!([leds[0].0, leds[1].0], [class & 1 == 1, class & 2 == 2]);
//!
//! let mut kit = Classifier::new(model, Sensor(7), leds, Timer(0), &mut sample, &mut arena)?;
//! kit.run(4)?; // four samples, 100 ms (the default period) after each
//! assert_eq!(kit.delay().0, 4 * 100_000_000);
//! // A firmware's `main` ends in `match kit.run_forever() { Err(e) => ..., Ok(never) => match never {} }`.
//!
//! // Two pins for three classes: a third pin is refused, not ignored.
//! let three: [Led; 3] = Default::default();
//! assert!(Classifier::new(model, Sensor(7), three, Timer(0), &mut sample, &mut arena).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::flash::{FlashModel, Precision, RunError};
use crate::runtime::Input;
use core::convert::Infallible;
use core::fmt;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::i2c::I2c;
use embedded_hal::spi::{Operation, SpiDevice};

/// The period [`Classifier::run`] sleeps after each step unless told otherwise
/// ([`Classifier::with_period_ms`]).
pub const DEFAULT_PERIOD_MS: u32 = 100;

/// The pins a model of `classes` classes shows its class on: ceil(log2(classes)), the
/// bits of the largest class (0 for one class); a `const fn`, so that a firmware sizes
/// its pin array at compile time.
pub const fn pins_for(classes: usize) -> usize {
    (usize::BITS - classes.saturating_sub(1).leading_zeros()) as usize
}

/// Where the samples come from: fills `into` with one sample's stored bytes (as the
/// dataset stores them: 8-bit pixels or small integer features, channel by channel, row
/// by row), `into.len()` being the model's [`input_len`](FlashModel::input_len).
pub trait SampleSource {
    /// Why a read failed.
    type Error;

    /// Reads one sample into `into`, all of it.
    fn read_sample(&mut self, into: &mut [u8]) -> Result<(), Self::Error>;
}

impl<S: SampleSource + ?Sized> SampleSource for &mut S {
    type Error = S::Error;

    fn read_sample(&mut self, into: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read_sample(into)
    }
}

/// A sensor on an SPI device that answers a command byte with a sample.
///
/// The protocol: one [`SpiDevice::transaction`] (chip select asserted throughout) of two
/// operations, a write of the one command byte (configurable: [`SpiSampleSource::new`]),
/// then a read of the sample's bytes (the model's input length). The bus's words are
/// bytes; the SPI mode and clock are the device's, configured by the HAL.
#[derive(Debug)]
pub struct SpiSampleSource<D> {
    device: D,
    command: u8,
}

impl<D: SpiDevice> SpiSampleSource<D> {
    /// A sensor on `device` that sends a sample after receiving `command`.
    pub fn new(device: D, command: u8) -> Self {
        SpiSampleSource { device, command }
    }

    /// The command byte.
    pub fn command(&self) -> u8 {
        self.command
    }

    /// Gives the device back.
    pub fn release(self) -> D {
        self.device
    }
}

impl<D: SpiDevice> SampleSource for SpiSampleSource<D> {
    type Error = D::Error;

    fn read_sample(&mut self, into: &mut [u8]) -> Result<(), Self::Error> {
        let command = [self.command];
        self.device
            .transaction(&mut [Operation::Write(&command), Operation::Read(into)])
    }
}

/// A sensor on an I2C bus (7-bit address) whose sample is read from a register: one
/// [`I2c::write_read`] of the register's byte, then the sample's bytes (the sensor
/// auto-increments through them).
#[derive(Debug)]
pub struct I2cSampleSource<I> {
    i2c: I,
    address: u8,
    register: u8,
}

impl<I: I2c> I2cSampleSource<I> {
    /// A sensor at 7-bit `address` on `i2c` whose sample starts at `register`.
    pub fn new(i2c: I, address: u8, register: u8) -> Self {
        I2cSampleSource {
            i2c,
            address,
            register,
        }
    }

    /// The sensor's address.
    pub fn address(&self) -> u8 {
        self.address
    }

    /// The register the sample starts at.
    pub fn register(&self) -> u8 {
        self.register
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }
}

impl<I: I2c> SampleSource for I2cSampleSource<I> {
    type Error = I::Error;

    fn read_sample(&mut self, into: &mut [u8]) -> Result<(), Self::Error> {
        self.i2c.write_read(self.address, &[self.register], into)
    }
}

/// Why a [`Classifier`] cannot be built from what it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupError {
    /// The image is not int8 (the kit runs int8 images only: no floating point on the
    /// path, a quarter of the flash).
    Precision {
        /// The image's precision.
        image: Precision,
    },
    /// Not [`pins_for`]`(classes)` output pins.
    Pins {
        /// Pins the model's classes take.
        expected: usize,
        /// Pins given.
        found: usize,
        /// The model's classes.
        classes: usize,
    },
    /// A sample buffer shorter than the model's input.
    Sample {
        /// Bytes needed ([`FlashModel::input_len`]).
        needed: usize,
        /// Bytes given.
        found: usize,
    },
    /// An arena shorter than the image needs.
    Arena {
        /// Elements needed ([`FlashModel::arena_len`]).
        needed: usize,
        /// Elements given.
        found: usize,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SetupError::Precision { image } => {
                write!(f, "the image is {image}; the kit runs int8 images")
            }
            SetupError::Pins {
                expected,
                found,
                classes,
            } => write!(
                f,
                "{found} output pins; the {classes} classes take {expected} (a binary code)"
            ),
            SetupError::Sample { needed, found } => write!(
                f,
                "the sample buffer holds {found} bytes; the model reads {needed}"
            ),
            SetupError::Arena { needed, found } => write!(
                f,
                "the arena holds {found} elements; the model needs {needed}"
            ),
        }
    }
}

impl core::error::Error for SetupError {}

#[cfg(feature = "defmt")]
impl defmt::Format for SetupError {
    fn format(&self, f: defmt::Formatter<'_>) {
        match *self {
            SetupError::Precision { .. } => defmt::write!(f, "the kit runs int8 images only"),
            SetupError::Pins {
                expected, found, ..
            } => defmt::write!(f, "{=usize} output pins, {=usize} needed", found, expected),
            SetupError::Sample { needed, found } => {
                defmt::write!(
                    f,
                    "sample buffer {=usize} bytes, {=usize} needed",
                    found,
                    needed
                )
            }
            SetupError::Arena { needed, found } => {
                defmt::write!(f, "arena {=usize} elements, {=usize} needed", found, needed)
            }
        }
    }
}

/// Why a step of a [`Classifier`] failed: its sample source's error `SE`, its pins' error
/// `PE`, the runtime's, or (through `?` in a firmware's setup) a [`SetupError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KitError<SE, PE> {
    /// The sample source failed.
    Source(SE),
    /// Driving an output pin failed.
    Pin {
        /// The pin (its bit of the class).
        index: usize,
        /// The pin's error.
        error: PE,
    },
    /// The runtime refused the inference.
    Run(RunError),
    /// The classifier could not be built.
    Setup(SetupError),
}

impl<SE, PE> From<RunError> for KitError<SE, PE> {
    fn from(e: RunError) -> Self {
        KitError::Run(e)
    }
}

impl<SE, PE> From<SetupError> for KitError<SE, PE> {
    fn from(e: SetupError) -> Self {
        KitError::Setup(e)
    }
}

impl<SE: fmt::Debug, PE: fmt::Debug> fmt::Display for KitError<SE, PE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KitError::Source(e) => write!(f, "the sample source failed: {e:?}"),
            KitError::Pin { index, error } => {
                write!(f, "driving class pin {index} failed: {error:?}")
            }
            KitError::Run(e) => write!(f, "inference failed: {e}"),
            KitError::Setup(e) => write!(f, "{e}"),
        }
    }
}

impl<SE: fmt::Debug, PE: fmt::Debug> core::error::Error for KitError<SE, PE> {}

/// Without bounds on `SE` and `PE`: the source's and the pins' own errors are not shown.
#[cfg(feature = "defmt")]
impl<SE, PE> defmt::Format for KitError<SE, PE> {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            KitError::Source(_) => defmt::write!(f, "the sample source failed"),
            KitError::Pin { index, .. } => {
                defmt::write!(f, "driving class pin {=usize} failed", index)
            }
            KitError::Run(e) => match *e {
                RunError::Input { expected, found } => defmt::write!(
                    f,
                    "inference failed: input {=usize} values, {=usize} expected",
                    found,
                    expected
                ),
                RunError::Arena { needed, found } => defmt::write!(
                    f,
                    "inference failed: arena {=usize} elements, {=usize} needed",
                    found,
                    needed
                ),
                _ => defmt::write!(f, "inference failed: the image or its precision"),
            },
            KitError::Setup(e) => defmt::write!(f, "{}", e),
        }
    }
}

/// The firmware loop: an int8 [`FlashModel`], a [`SampleSource`] `S`, `N` class pins `P`
/// (a binary code, least significant bit first: see the [module](self) documentation), a
/// delay `D`, and the caller's sample buffer and arena (statics or the stack of `main`).
pub struct Classifier<'m, S, P, D, const N: usize> {
    model: FlashModel<'m>,
    source: S,
    pins: [P; N],
    delay: D,
    sample: &'m mut [u8],
    arena: &'m mut [i8],
    period_ms: u32,
}

impl<'m, S, P, D, const N: usize> Classifier<'m, S, P, D, N>
where
    S: SampleSource,
    P: OutputPin,
    D: DelayNs,
{
    /// Checks that `model` is int8, that `N` is [`pins_for`]`(model.classes())`, that
    /// `sample` holds at least [`input_len`](FlashModel::input_len) bytes and `arena` at
    /// least [`arena_len`](FlashModel::arena_len) elements (longer ones are fine: the
    /// front is used). The period is [`DEFAULT_PERIOD_MS`].
    pub fn new(
        model: FlashModel<'m>,
        source: S,
        pins: [P; N],
        delay: D,
        sample: &'m mut [u8],
        arena: &'m mut [i8],
    ) -> Result<Self, SetupError> {
        if model.precision() != Precision::Int8 {
            return Err(SetupError::Precision {
                image: model.precision(),
            });
        }
        let expected = pins_for(model.classes());
        if N != expected {
            return Err(SetupError::Pins {
                expected,
                found: N,
                classes: model.classes(),
            });
        }
        if sample.len() < model.input_len() {
            return Err(SetupError::Sample {
                needed: model.input_len(),
                found: sample.len(),
            });
        }
        if arena.len() < model.arena_len() {
            return Err(SetupError::Arena {
                needed: model.arena_len(),
                found: arena.len(),
            });
        }
        Ok(Classifier {
            model,
            source,
            pins,
            delay,
            sample,
            arena,
            period_ms: DEFAULT_PERIOD_MS,
        })
    }

    /// The same classifier sleeping `period_ms` milliseconds after each step of
    /// [`run`](Classifier::run) and [`run_forever`](Classifier::run_forever).
    pub fn with_period_ms(mut self, period_ms: u32) -> Self {
        self.period_ms = period_ms;
        self
    }

    /// The pause after each step, in milliseconds. It does not count the step's own time
    /// (a `DelayNs` measures none): a step every period plus the inference.
    pub fn period_ms(&self) -> u32 {
        self.period_ms
    }

    /// The model.
    pub fn model(&self) -> &FlashModel<'m> {
        &self.model
    }

    /// The sample the last step read (the model's input length).
    pub fn sample(&self) -> &[u8] {
        self.sample
            .get(..self.model.input_len())
            .unwrap_or_default()
    }

    /// The delay (a timer a firmware may want between steps).
    pub fn delay(&mut self) -> &mut D {
        &mut self.delay
    }

    /// Reads a sample, classifies it, drives the pins to its class; returns the class.
    /// When a pin fails, the pins before it show the new class and the rest the old one.
    pub fn step(&mut self) -> Result<usize, KitError<S::Error, P::Error>> {
        let result = self.classify();
        #[cfg(feature = "defmt")]
        match &result {
            Ok(class) => defmt::info!("papa-edge kit: class {=usize}", class),
            Err(e) => defmt::warn!("papa-edge kit: {}", e),
        }
        result
    }

    fn classify(&mut self) -> Result<usize, KitError<S::Error, P::Error>> {
        let len = self.model.input_len();
        let sample = self.sample.get_mut(..len).unwrap_or_default();
        self.source.read_sample(sample).map_err(KitError::Source)?;
        let class = self
            .model
            .infer_int8(Input::Bytes(sample), self.arena)?
            .class;
        for (index, pin) in self.pins.iter_mut().enumerate() {
            let bit = u32::try_from(index)
                .ok()
                .and_then(|i| class.checked_shr(i))
                .unwrap_or(0);
            let driven = if bit & 1 == 1 {
                pin.set_high()
            } else {
                pin.set_low()
            };
            driven.map_err(|error| KitError::Pin { index, error })?;
        }
        Ok(class)
    }

    /// `steps` times: a [`step`](Classifier::step), then a sleep of the period; stops at
    /// the first error. Returns the last class (`None` for no steps).
    pub fn run(&mut self, steps: usize) -> Result<Option<usize>, KitError<S::Error, P::Error>> {
        let mut last = None;
        for _ in 0..steps {
            last = Some(self.step()?);
            self.delay.delay_ms(self.period_ms);
        }
        Ok(last)
    }

    /// [`run`](Classifier::run) without end: returns only with the first error (a
    /// firmware that rides over a sensor's glitches loops on [`step`](Classifier::step)
    /// itself and decides per error).
    pub fn run_forever(&mut self) -> Result<Infallible, KitError<S::Error, P::Error>> {
        loop {
            self.step()?;
            self.delay.delay_ms(self.period_ms);
        }
    }

    /// Gives the source, the pins and the delay back (the buffers are the caller's).
    pub fn release(self) -> (S, [P; N], D) {
        (self.source, self.pins, self.delay)
    }
}
