//! The firmware kit (`papa_edge::kit`) against embedded-hal-mock's scripted SPI device,
//! I2C bus, pins and delay: the pins show exactly the class the runtime gives on the
//! sensor's bytes (computed here with `FlashModel::infer_int8` directly), in the kit's
//! binary code; the delays are the period; every script is consumed (`done()`); what does
//! not fit the model, and every failure, is a typed error.

mod common;

use common::{moderate_batchnorm, quantised, random_model, stored_pixels, Card};
use embedded_hal_mock::eh1::delay::{CheckedDelay, NoopDelay, Transaction as DelayTransaction};
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTransaction};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTransaction};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as SpiTransaction};
use embedded_hal_mock::eh1::MockError;
use papa_edge::flash::{write, FlashModel, Precision};
use papa_edge::kit::{
    pins_for, Classifier, I2cSampleSource, KitError, SampleSource, SetupError, SpiSampleSource,
    DEFAULT_PERIOD_MS,
};
use papa_edge::runtime::Input;
use papa_model::file::ModelFile;
use papa_model::zoo;

const INPUT: [usize; 3] = [1, 4, 4];
const CLASSES: usize = 3;
const PINS: usize = 2; // pins_for(3)
const COMMAND: u8 = 0xA5;
const ADDRESS: u8 = 0x48;
const REGISTER: u8 = 0x10;

/// A random MLP (16 - 8 - 3) on 1 x 4 x 4, as tests/flash.rs makes its models.
fn model() -> ModelFile {
    let layers = zoo::mlp(&[8], CLASSES);
    let card = Card::pixels("kit-test", INPUT[0]);
    random_model(&layers, INPUT, CLASSES, 21, Some(moderate_batchnorm), card)
}

/// `n` random samples of 16 stored bytes, one vector each.
fn samples(n: usize, seed: u64) -> Vec<Vec<u8>> {
    stored_pixels(&model(), n, seed)
        .chunks(INPUT.iter().product())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The int8 image (calibrated on 64 random samples) and the f32 one.
fn images() -> (Vec<u8>, Vec<u8>) {
    let model = model();
    let q = quantised(&model, &samples(64, 1).concat());
    (write::int8(&q).unwrap(), write::f32(&model).unwrap())
}

/// The class the runtime itself gives on `sample`, independently of the kit.
fn runtime_class(model: &FlashModel<'_>, sample: &[u8]) -> usize {
    let mut arena = vec![0i8; model.arena_len()];
    model
        .infer_int8(Input::Bytes(sample), &mut arena)
        .unwrap()
        .class
}

/// Samples whose classes (by the runtime) cover every class the model gives on 256
/// random samples, one per class, in class order; with their classes.
fn one_sample_per_class(model: &FlashModel<'_>) -> Vec<(Vec<u8>, usize)> {
    let mut found: Vec<Option<Vec<u8>>> = vec![None; CLASSES];
    for s in samples(256, 2) {
        let c = runtime_class(model, &s);
        if found[c].is_none() {
            found[c] = Some(s);
        }
    }
    let out: Vec<_> = found
        .into_iter()
        .enumerate()
        .filter_map(|(c, s)| s.map(|s| (s, c)))
        .collect();
    assert!(
        out.len() >= 2,
        "the random model gives a single class: the pin test would be weak"
    );
    out
}

/// The pin scripts that show `classes` one after another: pin `i` high iff bit `i`.
fn pin_scripts(classes: &[usize]) -> [Vec<PinTransaction>; PINS] {
    let bit = |c: usize, i: usize| {
        PinTransaction::set(if c >> i & 1 == 1 {
            State::High
        } else {
            State::Low
        })
    };
    [
        classes.iter().map(|&c| bit(c, 0)).collect(),
        classes.iter().map(|&c| bit(c, 1)).collect(),
    ]
}

fn pins(scripts: &[Vec<PinTransaction>; PINS]) -> [PinMock; PINS] {
    [PinMock::new(&scripts[0]), PinMock::new(&scripts[1])]
}

fn spi_script(samples: &[Vec<u8>]) -> Vec<SpiTransaction<u8>> {
    samples
        .iter()
        .flat_map(|s| {
            [
                SpiTransaction::transaction_start(),
                SpiTransaction::write(COMMAND),
                SpiTransaction::read_vec(s.clone()),
                SpiTransaction::transaction_end(),
            ]
        })
        .collect()
}

#[test]
fn pins_for_is_the_bits_of_the_largest_class() {
    let cases = [
        (0, 0),
        (1, 0),
        (2, 1),
        (3, 2),
        (4, 2),
        (5, 3),
        (10, 4),
        (256, 8),
        (257, 9),
    ];
    for (classes, pins) in cases {
        assert_eq!(pins_for(classes), pins, "{classes} classes");
    }
    assert_eq!(pins_for(CLASSES), PINS);
}

#[test]
fn an_spi_sensor_s_samples_drive_the_pins_to_the_runtime_s_class() {
    let (image, _) = images();
    let model = FlashModel::parse(&image).unwrap();
    assert_eq!(model.classes(), CLASSES);
    let cases = one_sample_per_class(&model);
    let (bytes, classes): (Vec<Vec<u8>>, Vec<usize>) = cases.into_iter().unzip();

    let mut spi = SpiMock::new(&spi_script(&bytes));
    let scripts = pin_scripts(&classes);
    let [mut p0, mut p1] = pins(&scripts);
    let source = SpiSampleSource::new(spi.clone(), COMMAND);
    assert_eq!(source.command(), COMMAND);
    let mut sample = [0u8; 16];
    let mut arena = vec![0i8; model.arena_len()];
    let mut kit = Classifier::new(
        model,
        source,
        [p0.clone(), p1.clone()],
        NoopDelay::new(),
        &mut sample,
        &mut arena,
    )
    .unwrap();
    for (bytes, &class) in bytes.iter().zip(&classes) {
        assert_eq!(kit.step().unwrap(), class);
        assert_eq!(kit.sample(), &bytes[..]);
    }
    let (source, _, _) = kit.release();
    drop(source.release());
    spi.done();
    p0.done();
    p1.done();
}

#[test]
fn run_sleeps_the_period_after_each_i2c_sample() {
    let (image, _) = images();
    let model = FlashModel::parse(&image).unwrap();
    let bytes = samples(5, 3);
    let classes: Vec<usize> = bytes.iter().map(|s| runtime_class(&model, s)).collect();

    let script: Vec<_> = bytes
        .iter()
        .map(|s| I2cTransaction::write_read(ADDRESS, vec![REGISTER], s.clone()))
        .collect();
    let mut i2c = I2cMock::new(&script);
    let scripts = pin_scripts(&classes);
    let [mut p0, mut p1] = pins(&scripts);
    let period = 250;
    let delays = vec![DelayTransaction::delay_ms(period); bytes.len()];
    let mut delay = CheckedDelay::new(&delays);
    let source = I2cSampleSource::new(i2c.clone(), ADDRESS, REGISTER);
    assert_eq!((source.address(), source.register()), (ADDRESS, REGISTER));
    let mut sample = [0u8; 32]; // longer than the input: the front is used
    let mut arena = vec![0i8; model.arena_len() + 7];
    let kit = Classifier::new(
        model,
        source,
        [p0.clone(), p1.clone()],
        delay.clone(),
        &mut sample,
        &mut arena,
    )
    .unwrap();
    assert_eq!(kit.period_ms(), DEFAULT_PERIOD_MS);
    let mut kit = kit.with_period_ms(period);
    assert_eq!(kit.period_ms(), period);
    assert_eq!(kit.run(bytes.len()).unwrap(), classes.last().copied());
    assert_eq!(kit.run(0).unwrap(), None);
    drop(kit);
    i2c.done();
    p0.done();
    p1.done();
    delay.done();
}

#[test]
fn what_does_not_fit_the_model_is_a_setup_error() {
    let (image, f32_image) = images();
    let model = FlashModel::parse(&image).unwrap();
    let float = FlashModel::parse(&f32_image).unwrap();
    assert_eq!(float.precision(), Precision::F32);
    let needed = model.arena_len();
    let mut i2c = I2cMock::new(&[]);
    let mut pin = PinMock::new(&[]);
    let source = || I2cSampleSource::new(i2c.clone(), ADDRESS, REGISTER);
    let (mut sample, mut short_sample) = ([0u8; 16], [0u8; 15]);
    let (mut arena, mut short_arena) = (vec![0i8; needed], vec![0i8; needed - 1]);

    let error = |r: Result<_, SetupError>| r.err().unwrap();
    let e = error(
        Classifier::new(
            model,
            source(),
            [pin.clone()],
            NoopDelay,
            &mut sample,
            &mut arena,
        )
        .map(drop),
    );
    assert_eq!(
        e,
        SetupError::Pins {
            expected: 2,
            found: 1,
            classes: 3
        }
    );
    assert!(e.to_string().contains("1 output pins"), "{e}");
    let e = error(
        Classifier::new(
            model,
            source(),
            [pin.clone(), pin.clone(), pin.clone()],
            NoopDelay,
            &mut sample,
            &mut arena,
        )
        .map(drop),
    );
    assert_eq!(
        e,
        SetupError::Pins {
            expected: 2,
            found: 3,
            classes: 3
        }
    );
    let e = error(
        Classifier::new(
            float,
            source(),
            [pin.clone(), pin.clone()],
            NoopDelay,
            &mut sample,
            &mut arena,
        )
        .map(drop),
    );
    assert_eq!(
        e,
        SetupError::Precision {
            image: Precision::F32
        }
    );
    assert!(e.to_string().contains("f32"), "{e}");
    let e = error(
        Classifier::new(
            model,
            source(),
            [pin.clone(), pin.clone()],
            NoopDelay,
            &mut short_sample,
            &mut arena,
        )
        .map(drop),
    );
    assert_eq!(
        e,
        SetupError::Sample {
            needed: 16,
            found: 15
        }
    );
    let e = error(
        Classifier::new(
            model,
            source(),
            [pin.clone(), pin.clone()],
            NoopDelay,
            &mut sample,
            &mut short_arena,
        )
        .map(drop),
    );
    assert_eq!(
        e,
        SetupError::Arena {
            needed,
            found: needed - 1
        }
    );
    // Through `?` in a firmware's setup, a setup error is a KitError too.
    let kit: KitError<(), ()> = e.into();
    assert_eq!(kit, KitError::Setup(e));
    assert_eq!(kit.to_string(), e.to_string());
    // Nothing was touched.
    i2c.done();
    pin.done();
}

#[test]
fn a_source_error_stops_the_loop_as_a_kit_error() {
    let (image, _) = images();
    let model = FlashModel::parse(&image).unwrap();
    let bytes = samples(2, 4);
    let classes: Vec<usize> = bytes.iter().map(|s| runtime_class(&model, s)).collect();
    let nack = embedded_hal::i2c::ErrorKind::NoAcknowledge(
        embedded_hal::i2c::NoAcknowledgeSource::Address,
    );
    let mut script: Vec<_> = bytes
        .iter()
        .map(|s| I2cTransaction::write_read(ADDRESS, vec![REGISTER], s.clone()))
        .collect();
    script.push(I2cTransaction::write_read(ADDRESS, vec![REGISTER], vec![0; 16]).with_error(nack));
    script.push(I2cTransaction::write_read(ADDRESS, vec![REGISTER], vec![0; 16]).with_error(nack));
    let mut i2c = I2cMock::new(&script);
    let scripts = pin_scripts(&classes);
    let [mut p0, mut p1] = pins(&scripts);
    // Two good steps, each followed by the period; none after the error.
    let delays = vec![DelayTransaction::delay_ms(5); 2];
    let mut delay = CheckedDelay::new(&delays);
    let mut sample = [0u8; 16];
    let mut arena = vec![0i8; model.arena_len()];
    let mut kit = Classifier::new(
        model,
        I2cSampleSource::new(i2c.clone(), ADDRESS, REGISTER),
        [p0.clone(), p1.clone()],
        delay.clone(),
        &mut sample,
        &mut arena,
    )
    .unwrap()
    .with_period_ms(5);
    let e = kit.run_forever().unwrap_err();
    assert_eq!(e, KitError::Source(nack));
    assert!(e.to_string().contains("sample source"), "{e}");
    assert_eq!(kit.step().unwrap_err(), KitError::Source(nack));
    drop(kit);
    i2c.done();
    p0.done();
    p1.done();
    delay.done();
}

#[test]
fn a_pin_error_is_a_kit_error_naming_the_pin() {
    let (image, _) = images();
    let model = FlashModel::parse(&image).unwrap();
    let bytes = samples(1, 5).remove(0);
    let class = runtime_class(&model, &bytes);
    let broken = MockError::Io(std::io::ErrorKind::NotConnected);
    let scripts = pin_scripts(&[class]);
    let mut p0 = PinMock::new(&scripts[0]);
    let failing = [scripts[1][0].clone().with_error(broken.clone())];
    let mut p1 = PinMock::new(&failing);
    let mut spi = SpiMock::new(&spi_script(std::slice::from_ref(&bytes)));
    let mut sample = [0u8; 16];
    let mut arena = vec![0i8; model.arena_len()];
    let mut kit = Classifier::new(
        model,
        SpiSampleSource::new(spi.clone(), COMMAND),
        [p0.clone(), p1.clone()],
        NoopDelay,
        &mut sample,
        &mut arena,
    )
    .unwrap();
    let e = kit.step().unwrap_err();
    assert_eq!(
        e,
        KitError::Pin {
            index: 1,
            error: broken
        }
    );
    assert!(e.to_string().contains("pin 1"), "{e}");
    drop(kit);
    spi.done();
    p0.done();
    p1.done();
}

/// A hand-written source: the trait is the kit's own, and `&mut S` is a source too.
#[test]
fn any_sample_source_and_a_borrowed_one_drive_the_kit() {
    struct Counter(u8);
    impl SampleSource for Counter {
        type Error = core::convert::Infallible;
        fn read_sample(&mut self, into: &mut [u8]) -> Result<(), Self::Error> {
            for b in into {
                *b = self.0;
                self.0 = self.0.wrapping_add(17);
            }
            Ok(())
        }
    }
    let (image, _) = images();
    let model = FlashModel::parse(&image).unwrap();
    let mut counter = Counter(3);
    let mut expected = [0u8; 16];
    Counter(3).read_sample(&mut expected).unwrap();
    let class = runtime_class(&model, &expected);
    let scripts = pin_scripts(&[class]);
    let [mut p0, mut p1] = pins(&scripts);
    let mut sample = [0u8; 16];
    let mut arena = vec![0i8; model.arena_len()];
    let mut kit = Classifier::new(
        model,
        &mut counter,
        [p0.clone(), p1.clone()],
        NoopDelay,
        &mut sample,
        &mut arena,
    )
    .unwrap();
    assert_eq!(kit.step().unwrap(), class);
    assert_eq!(kit.sample(), &expected[..]);
    drop(kit);
    assert_eq!(counter.0, (0..16).fold(3u8, |b, _| b.wrapping_add(17)));
    p0.done();
    p1.done();
}
