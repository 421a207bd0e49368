//! Runs every PAPA rule on a tiny population held on the stack, then plans, initialises and
//! views a small CNN from a constant layer table: no allocator, no std.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;
use papa_core::population::Contiguous;
use papa_core::rng::Rng;
use papa_core::rules::{average, draw_pairs, gradual, papa2, papa2_scratch_len, papa_all, Options, Weights};

use papa_model::init::init_ops;
use papa_model::layer::{Layer, Shape};
use papa_model::view::ModelView;

const MEMBERS: usize = 4;
const LEN: usize = 6;

fn run() -> Result<f32, papa_core::Error> {
    let mut buf = [0.0f32; MEMBERS * LEN];
    let mut rng = Rng::new(black_box(3));
    for x in buf.iter_mut() {
        *x = rng.uniform_f32();
    }
    let opts = Options::default();
    let mut pop = Contiguous::new(&mut buf[..], MEMBERS)?;
    gradual(&mut pop, Weights::Uniform, 0.99, &opts)?;
    let mut pairs = [(0, 0); MEMBERS];
    draw_pairs(&mut rng, MEMBERS, &mut pairs)?;
    let mut scratch = [0.0f32; papa2_scratch_len(MEMBERS, LEN)];
    papa2(&mut pop, &pairs, &mut scratch, &opts)?;
    papa_all(&mut pop, Weights::Given(&[0.25; MEMBERS]), &opts)?;
    let mut out = [0.0f32; LEN];
    average(&pop, Weights::Uniform, &mut out, &opts)?;
    Ok(out[0])
}

/// A small CNN as firmware would hold it: a layer table in flash.
const LAYERS: [Layer; 7] = [
    Layer::conv3x3(2),
    Layer::BatchNorm,
    Layer::Relu,
    Layer::max_pool2(),
    Layer::Flatten,
    Layer::Linear { out_features: 3 },
    Layer::Relu,
];
const INPUT: Shape = Shape::Spatial { channels: 1, height: 4, width: 4 };
/// conv 2 x 9 + 2, BatchNorm 4 x 2 + 1, linear 3 x 8 + 3.
const PARAMS: usize = 20 + 9 + 27;

fn model() -> Result<usize, papa_model::ModelError> {
    let mut params = [0.0f32; PARAMS];
    let view = ModelView::<8>::new(&LAYERS, INPUT, 3, &[0.0; PARAMS])?;
    init_ops(view.ops(), &mut Rng::new(black_box(5)), &mut params)?;
    let view = ModelView::<8>::new(&LAYERS, INPUT, 3, &params)?;
    Ok(view.ops().len())
}

/// The reset entry point of a bare-metal image.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    let _ = black_box(run());
    let _ = black_box(model());
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
