//! Classifies the embedded test samples with the embedded flash image on a Cortex-M4F and
//! prints, over semihosting, what the host's runtime must match: the correct count and the
//! logits' digest (every logit's bits), and the instructions per inference and the stack peak.
//!
//! Build (from this directory): `PAPA_MODEL=model.papa PAPA_SAMPLES=samples.u8
//! PAPA_LABELS=labels.u8 cargo run --release` (QEMU mps2-an386, see .cargo/config.toml);
//! `--features f32` for an f32 image. scripts/mcu-run.sh makes the files and runs it.
//!
//! Instructions: under `-icount shift=0` QEMU advances virtual time by 1 ns per
//! instruction, and the SysTick (core clock, mps2-an386's 25 MHz) ticks every 40 ns, so
//! instructions = 40 x ticks. A loop of known length checks that scale at start.

#![no_std]
#![no_main]

use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
#[cfg(feature = "report")]
use panic_semihosting as _;

/// The code-size build's panic handler: a panic prints nothing there (the runtime has no
/// panic path an image reaches; this keeps formatting code out of the measured size).
#[cfg(not(feature = "report"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    exit(false)
}
use papa_edge::flash::{arena_len_of, FlashModel};
use papa_edge::runtime::{Digest, Input};

/// Keeps the image's tensors at the alignment the writer gave them.
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

const IMAGE_BYTES: &[u8] = include_bytes!(env!("PAPA_MODEL"));
static IMAGE: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("PAPA_MODEL")));
static SAMPLES: &[u8] = include_bytes!(env!("PAPA_SAMPLES"));
static LABELS: &[u8] = include_bytes!(env!("PAPA_LABELS"));
/// The arena, sized at compile time from the image's header.
const ARENA_LEN: usize = arena_len_of(IMAGE_BYTES);

#[cfg(not(feature = "f32"))]
type Act = i8;
#[cfg(feature = "f32")]
type Act = f32;

/// Virtual nanoseconds (= instructions under -icount shift=0) per SysTick tick.
#[cfg(feature = "report")]
const NS_PER_TICK: u64 = 40;
/// The stack painting's pattern.
const PAINT: u32 = 0xDEAD_BEEF;

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        exit(false)
    };
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(0x00FF_FFFF);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();
    let painted = paint_stack();
    let model = match FlashModel::parse(&IMAGE.0) {
        Ok(m) => m,
        Err(_e) => {
            #[cfg(feature = "report")]
            cortex_m_semihosting::hprintln!("papa-mcu: the image is refused: {}", _e);
            exit(false)
        }
    };
    let mut arena = [0 as Act; ARENA_LEN];
    let n = model.input_len();
    let (mut correct, mut total, mut ticks) = (0usize, 0usize, 0u64);
    let mut digest = Digest::new();
    for (sample, &label) in SAMPLES.chunks_exact(n).zip(LABELS) {
        let start = SYST::get_current();
        let class = classify(&model, sample, &mut arena, &mut digest);
        let end = SYST::get_current();
        // A down-counter of 24 bits: one inference must stay under 2^24 ticks (671 M
        // instructions), which the zoo's models do by far.
        ticks += u64::from(start.wrapping_sub(end) & 0x00FF_FFFF);
        let Some(class) = class else { exit(false) };
        correct += usize::from(class == usize::from(label));
        total += 1;
        if !cfg!(feature = "report") {
            // The code-size build: one inference, its verdict as the exit status.
            exit(class == usize::from(label));
        }
    }
    #[cfg(feature = "report")]
    {
        use cortex_m_semihosting::hprintln;
        let loop_ticks = calibration_ticks();
        hprintln!(
            "papa-mcu: {} image, {} bytes, arena {} elements, {} samples of {} values",
            model.precision(),
            IMAGE.0.len(),
            ARENA_LEN,
            total,
            n
        );
        hprintln!("papa-mcu: correct {}/{}", correct, total);
        hprintln!("papa-mcu: logits {:08x}", digest.value());
        hprintln!(
            "papa-mcu: instructions per inference {}",
            ticks * NS_PER_TICK / (total.max(1) as u64)
        );
        hprintln!(
            "papa-mcu: scale check: a loop of 2000002 instructions counted as {}",
            loop_ticks * NS_PER_TICK
        );
        hprintln!("papa-mcu: stack peak {} bytes", stack_peak(painted));
    }
    let _ = (correct, ticks, painted, digest);
    exit(total > 0)
}

/// The class, the logits added to `digest`.
fn classify(
    model: &FlashModel<'_>,
    sample: &[u8],
    arena: &mut [Act],
    digest: &mut Digest,
) -> Option<usize> {
    #[cfg(not(feature = "f32"))]
    let p = model.infer_int8(Input::Bytes(sample), arena).ok()?;
    #[cfg(not(feature = "f32"))]
    digest.add_i8(p.logits);
    #[cfg(feature = "f32")]
    let p = model.infer_f32(Input::Bytes(sample), arena).ok()?;
    #[cfg(feature = "f32")]
    digest.add_f32(p.logits);
    Some(p.class)
}

fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

extern "C" {
    /// The end of the statics (cortex-m-rt): the stack grows down towards it.
    static __sheap: u32;
    /// The top of the stack (cortex-m-rt).
    static _stack_start: u32;
}

/// Fills the unused stack (from the end of the statics to a little below the current
/// stack pointer) with [`PAINT`]; returns where the painting starts.
fn paint_stack() -> usize {
    let bottom = core::ptr::addr_of!(__sheap) as usize;
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = bottom;
    while p + 256 < sp {
        // SAFETY: [bottom, sp - 256) is RAM no one uses yet: below this frame's stack,
        // above every static.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    bottom
}

/// Bytes of stack used so far: from the top down to the lowest word no longer painted.
#[cfg(feature = "report")]
fn stack_peak(bottom: usize) -> usize {
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut p = bottom;
    // SAFETY: [bottom, top) is RAM (the painted region then the live stack).
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}

/// SysTick ticks of a loop of 2,000,002 instructions (`movw` and `movt`, then 1,000,000 of
/// `subs` + `bne`): 50,000 at 40 ns per tick when the scale holds, give or take the
/// counter reads around it.
#[cfg(feature = "report")]
fn calibration_ticks() -> u64 {
    let start = SYST::get_current();
    // SAFETY: a counting loop on one scratch register.
    unsafe {
        core::arch::asm!(
            "movw {0}, #16960",
            "movt {0}, #15",
            "2:",
            "subs {0}, #1",
            "bne 2b",
            out(reg) _,
        );
    }
    let end = SYST::get_current();
    u64::from(start.wrapping_sub(end) & 0x00FF_FFFF)
}
