//! The training kernels' arithmetic without a GPU: kernels/train.cu compiled for the host by a
//! C++ compiler (tests/emulate/train.cpp: CUDA's names mocked, every thread run in turn on a
//! grid smaller than the work, no FMA contraction), each kernel against a reference written
//! here in the CPU engine's operation order (same bits) or in f64 (the reductions, 1e-12).
//! SGD is checked against papa-train's own `Sgd::step`. `CXX` names the compiler (default
//! `c++`); without one: `SKIP:`.

use papa_core::rng::Rng;
use papa_train::optim::Sgd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

mod common;

/// The emulator, built once, or why not.
fn emulator() -> &'static Result<PathBuf, String> {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    EXE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("papa-cuda-train-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        common::compile("train", &dir)
    })
}

/// Runs `kernel` on the arrays; returns them as the kernel left them. `None`: no compiler.
fn run(kernel: &str, args: &[u64], f: &mut [Vec<f32>], d: &mut [Vec<f64>]) -> Option<()> {
    let exe = common::or_skip(emulator())?;
    // One directory per call: the tests run in parallel.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = exe.with_file_name(format!(
        "{kernel}-{}",
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let bytes = |v: &[u64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("args.bin"), bytes(args)).unwrap();
    for (i, v) in f.iter().enumerate() {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.join(format!("f{i}.bin")), b).unwrap();
    }
    for (i, v) in d.iter().enumerate() {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.join(format!("d{i}.bin")), b).unwrap();
    }
    let status = Command::new(exe).arg(kernel).arg(&dir).status().unwrap();
    assert!(status.success(), "the emulator failed on {kernel}");
    for (i, v) in f.iter_mut().enumerate() {
        let b = std::fs::read(dir.join(format!("f{i}.bin"))).unwrap();
        *v = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
    }
    for (i, v) in d.iter_mut().enumerate() {
        let b = std::fs::read(dir.join(format!("d{i}.bin"))).unwrap();
        *v = b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
    }
    Some(())
}

fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.uniform_f32() * 4.0 - 2.0).collect()
}

fn bits(x: f32) -> u64 {
    u64::from(x.to_bits())
}

#[track_caller]
fn same_bits(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}: entry {i}: {x} vs {y}");
    }
}

#[test]
fn layout_kernels_match_the_cpu_engine_bit_for_bit() {
    let mut rng = Rng::new(1);
    // Transpose: 3 members of a shared batch of 2 samples, C x HW = 3 x 5 to channel-last.
    let (rows, src, a, b) = (6, 2, 3, 5);
    let x = random(&mut rng, src * a * b);
    let mut f = vec![x.clone(), vec![0.0; rows * a * b]];
    if run(
        "transpose",
        &[rows as u64, src as u64, a as u64, b as u64],
        &mut f,
        &mut [],
    )
    .is_none()
    {
        return;
    }
    let want: Vec<f32> = (0..rows * a * b)
        .map(|o| {
            let (r, k) = (o / (a * b), o % (a * b));
            x[(r % src) * a * b + (k % a) * b + k / a]
        })
        .collect();
    same_bits("transpose", &f[1], &want);

    // im2col and col2im of 2 images of 4 x 5 x 3 (odd sizes: the borders).
    let (imgs, h, w, c) = (2usize, 4usize, 5usize, 3usize);
    let x = random(&mut rng, imgs * h * w * c);
    let mut f = vec![x.clone(), vec![0.0; imgs * h * w * c * 9]];
    let dims = [imgs as u64, h as u64, w as u64, c as u64];
    run("im2col", &dims, &mut f, &mut []).unwrap();
    let tap = |y: usize, xx: usize, t: usize| -> Option<(usize, usize)> {
        let (py, px) = ((y + t / 3).checked_sub(1)?, (xx + t % 3).checked_sub(1)?);
        (py < h && px < w).then_some((py, px))
    };
    let mut want = vec![0.0; imgs * h * w * c * 9];
    for img in 0..imgs {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    for t in 0..9 {
                        if let Some((py, px)) = tap(y, xx, t) {
                            want[((img * h + y) * w + xx) * c * 9 + ch * 9 + t] =
                                x[((img * h + py) * w + px) * c + ch];
                        }
                    }
                }
            }
        }
    }
    same_bits("im2col", &f[1], &want);
    let g = random(&mut rng, imgs * h * w * c * 9);
    let mut f = vec![g.clone(), vec![0.0; imgs * h * w * c]];
    run("col2im", &dims, &mut f, &mut []).unwrap();
    // The adjoint of im2col, summed over the taps in (ky, kx) order.
    let mut want = vec![0.0f32; imgs * h * w * c];
    for img in 0..imgs {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    for t in 0..9 {
                        let (oy, ox) = (y + 1, xx + 1);
                        let (Some(oy), Some(ox)) = (oy.checked_sub(t / 3), ox.checked_sub(t % 3))
                        else {
                            continue;
                        };
                        if oy < h && ox < w {
                            want[((img * h + y) * w + xx) * c + ch] +=
                                g[((img * h + oy) * w + ox) * c * 9 + ch * 9 + t];
                        }
                    }
                }
            }
        }
    }
    same_bits("col2im", &f[1], &want);

    // Max-pool of 5 x 7 images (a row and a column no window covers), ties and a NaN.
    let (h, w) = (5usize, 7usize);
    let mut x = random(&mut rng, imgs * h * w * c);
    x[3] = x[0];
    x[w * c] = f32::NAN;
    let (oh, ow) = (h / 2, w / 2);
    let mut f = vec![x.clone(), vec![0.0; imgs * oh * ow * c]];
    let dims = [imgs as u64, h as u64, w as u64, c as u64];
    run("maxpool", &dims, &mut f, &mut []).unwrap();
    let winner = |img: usize, oy: usize, ox: usize, ch: usize| {
        let at = |dy: usize, dx: usize| x[((img * h + 2 * oy + dy) * w + 2 * ox + dx) * c + ch];
        let v = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
        let (mut best, mut k) = (v[0], 0);
        for (i, &e) in v.iter().enumerate().skip(1) {
            if e > best || e.is_nan() {
                (best, k) = (e, i);
            }
        }
        (best, k)
    };
    let mut want = vec![0.0; imgs * oh * ow * c];
    for (o, v) in want.iter_mut().enumerate() {
        let (ch, pos) = (o % c, o / c);
        *v = winner(pos / (oh * ow), (pos / ow) % oh, pos % ow, ch).0;
    }
    same_bits("maxpool", &f[1], &want);
    let dy = random(&mut rng, imgs * oh * ow * c);
    for relu in [0u64, 1] {
        let mut f = vec![x.clone(), dy.clone(), vec![1.0; imgs * h * w * c]];
        run(
            "maxpool_backward",
            &[dims[0], dims[1], dims[2], dims[3], relu],
            &mut f,
            &mut [],
        )
        .unwrap();
        let mut want = vec![0.0f32; imgs * h * w * c];
        for (o, v) in want.iter_mut().enumerate() {
            let (ch, pos) = (o % c, o / c);
            let (px, py, img) = (pos % w, (pos / w) % h, pos / (h * w));
            if py / 2 < oh && px / 2 < ow {
                let (best, k) = winner(img, py / 2, px / 2, ch);
                if k == (py % 2) * 2 + px % 2 && (relu == 0 || best > 0.0) {
                    *v = dy[((img * oh + py / 2) * ow + px / 2) * c + ch];
                }
            }
        }
        same_bits("maxpool_backward", &f[2], &want);
    }

    // ReLU and its gradient.
    let x = random(&mut rng, 100);
    let mut f = vec![x.clone(), vec![0.0; 100]];
    run("relu", &[100], &mut f, &mut []).unwrap();
    let y: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    same_bits("relu", &f[1], &y);
    let g = random(&mut rng, 100);
    let mut f = vec![g.clone(), y.clone()];
    run("relu_backward", &[100], &mut f, &mut []).unwrap();
    let want: Vec<f32> = g
        .iter()
        .zip(&y)
        .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
        .collect();
    same_bits("relu_backward", &f[0], &want);

    // A bias broadcast to 3 members x 4 rows x 5 channels from members of 11 floats.
    let (p, rows, c, n, off) = (3usize, 4usize, 5usize, 11usize, 6usize);
    let params = random(&mut rng, p * n);
    let mut f = vec![vec![0.0; p * rows * c], params.clone()];
    run(
        "bias_fill",
        &[n, off, p, rows, c].map(|v| v as u64),
        &mut f,
        &mut [],
    )
    .unwrap();
    let want: Vec<f32> = (0..p * rows * c)
        .map(|o| params[o / (rows * c) * n + off + o % c])
        .collect();
    same_bits("bias_fill", &f[0], &want);
}

/// A BatchNorm of `c` channels over `rows` values per member, train and eval, forward and
/// backward, as papa-train's `Network` computes it (its statistics in f64).
#[test]
fn batchnorm_and_reductions_match_the_cpu_engines_arithmetic() {
    let mut rng = Rng::new(2);
    let (p, rows, c, chunk) = (3usize, 37usize, 4usize, 8usize);
    let chunks = rows.div_ceil(chunk);
    // A member: scale, shift, running mean, running var, counter, then 2 more floats.
    let n = 4 * c + 3;
    let (scale, shift, mean, var, count) = (0, c, 2 * c, 3 * c, 4 * c);
    let mut params = random(&mut rng, p * n);
    for m in 0..p {
        params[m * n + count] = (m * 3) as f32;
        for ch in 0..c {
            params[m * n + var + ch] = 0.5 + rng.uniform_f32();
        }
    }
    let x: Vec<f32> = random(&mut rng, p * rows * c)
        .iter()
        .map(|v| v * 3.0 + 1.0)
        .collect();
    let dy = random(&mut rng, p * rows * c);
    let eps = 1e-5f32;

    // The statistics: partial sums, then the chunks in order.
    let mut d = vec![vec![0.0f64; p * chunks * 2 * c]];
    let mut f = vec![x.clone(), vec![], vec![], vec![]];
    let args = [p, rows, c, chunk, chunks, 0].map(|v| v as u64);
    if run("channel_partials", &args, &mut f, &mut d).is_none() {
        return;
    }
    let mut d = vec![d.remove(0), vec![0.0; p * 2 * c]];
    run(
        "reduce_partials",
        &[p, chunks, 2 * c].map(|v| v as u64),
        &mut [],
        &mut d,
    )
    .unwrap();
    let sums = d[1].clone();
    for m in 0..p {
        for ch in 0..c {
            let vals = (0..rows).map(|r| x[(m * rows + r) * c + ch] as f64);
            let (s, q) = vals.fold((0.0, 0.0), |(s, q), v| (s + v, q + v * v));
            let (gs, gq) = (sums[m * 2 * c + ch], sums[m * 2 * c + c + ch]);
            assert!(
                (gs - s).abs() <= 1e-12 * s.abs().max(1.0),
                "sum {gs} vs {s}"
            );
            assert!((gq - q).abs() <= 1e-12 * q.abs(), "squares {gq} vs {q}");
        }
    }

    for momentum in [0.1f32, -1.0] {
        let mut f = vec![params.clone(), vec![0.0; p * c], vec![0.0; p * c]];
        let mut d = vec![sums.clone()];
        let args = [
            n as u64,
            p as u64,
            c as u64,
            mean as u64,
            var as u64,
            count as u64,
            (rows as f64).to_bits(),
            bits(momentum),
            bits(eps),
        ];
        run("bn_train_stats", &args, &mut f, &mut d).unwrap();
        run(
            "bn_count",
            &[n, p, count].map(|v| v as u64),
            &mut f[..1],
            &mut [],
        )
        .unwrap();
        // papa-train's Network::update_running_stats and its train-mode normalisation.
        let mut want = params.clone();
        let (mut nmean, mut ninv) = (vec![0.0f32; p * c], vec![0.0f32; p * c]);
        let values = rows as f64;
        for m in 0..p {
            let member = &mut want[m * n..][..n];
            member[count] += 1.0;
            let mom = if momentum < 0.0 {
                1.0 / member[count] as f64
            } else {
                momentum as f64
            };
            for ch in 0..c {
                let bm = sums[m * 2 * c + ch] / values;
                let bv = (sums[m * 2 * c + c + ch] / values - bm * bm).max(0.0);
                nmean[m * c + ch] = bm as f32;
                ninv[m * c + ch] = (1.0 / (bv + eps as f64).sqrt()) as f32;
                let rm = &mut member[mean + ch];
                *rm = ((1.0 - mom) * *rm as f64 + mom * bm) as f32;
                let rv = &mut member[var + ch];
                *rv = ((1.0 - mom) * *rv as f64 + mom * bv * values / (values - 1.0)) as f32;
            }
        }
        same_bits("running statistics", &f[0], &want);
        same_bits("batch mean", &f[1], &nmean);
        same_bits("batch 1/std", &f[2], &ninv);
    }

    // Eval-mode normalisation, then apply and backward in both modes.
    let mut f = vec![params.clone(), vec![0.0; p * c], vec![0.0; p * c]];
    let args = [
        n as u64,
        p as u64,
        c as u64,
        mean as u64,
        var as u64,
        bits(eps),
    ];
    run("bn_eval_stats", &args, &mut f, &mut []).unwrap();
    let emean: Vec<f32> = (0..p * c)
        .map(|s| params[s / c * n + mean + s % c])
        .collect();
    let einv: Vec<f32> = (0..p * c)
        .map(|s| 1.0 / (params[s / c * n + var + s % c] + eps).sqrt())
        .collect();
    same_bits("eval mean", &f[1], &emean);
    same_bits("eval 1/std", &f[2], &einv);

    let (nmean, ninv) = (emean, einv);
    for relu in [0u64, 1] {
        let mut f = vec![
            x.clone(),
            vec![0.0; x.len()],
            nmean.clone(),
            ninv.clone(),
            params.clone(),
        ];
        let args = [
            n as u64,
            scale as u64,
            shift as u64,
            p as u64,
            rows as u64,
            c as u64,
            relu,
        ];
        run("bn_apply", &args, &mut f, &mut []).unwrap();
        let want: Vec<f32> = (0..x.len())
            .map(|o| {
                let (ch, m) = (o % c, o / (rows * c));
                let s = m * c + ch;
                let v = (x[o] - nmean[s]) * ninv[s] * params[m * n + scale + ch]
                    + params[m * n + shift + ch];
                if relu == 1 {
                    v.max(0.0)
                } else {
                    v
                }
            })
            .collect();
        same_bits("bn_apply", &f[1], &want);
    }

    // Shift and scale gradients: partial sums of dy and dy * xhat, reduced, scattered.
    let mut d = vec![vec![0.0f64; p * chunks * 2 * c]];
    let mut f = vec![x.clone(), dy.clone(), nmean.clone(), ninv.clone()];
    run(
        "channel_partials",
        &[p, rows, c, chunk, chunks, 2].map(|v| v as u64),
        &mut f,
        &mut d,
    )
    .unwrap();
    let mut d = vec![d.remove(0), vec![0.0; p * 2 * c]];
    run(
        "reduce_partials",
        &[p, chunks, 2 * c].map(|v| v as u64),
        &mut [],
        &mut d,
    )
    .unwrap();
    let mut grads = vec![0.0f32; p * n];
    let mut f = vec![grads.clone()];
    let mut dd = vec![d[1].clone()];
    run(
        "scatter_sums",
        &[2 * c, 0, c, n, shift, p].map(|v| v as u64),
        &mut f,
        &mut dd,
    )
    .unwrap();
    run(
        "scatter_sums",
        &[2 * c, c, c, n, scale, p].map(|v| v as u64),
        &mut f,
        &mut dd,
    )
    .unwrap();
    for m in 0..p {
        for ch in 0..c {
            let (mut sb, mut sg) = (0.0f64, 0.0f64);
            for r in 0..rows {
                let o = (m * rows + r) * c + ch;
                let xhat = (x[o] - nmean[m * c + ch]) * ninv[m * c + ch];
                sb += dy[o] as f64;
                sg += (dy[o] * xhat) as f64;
            }
            grads[m * n + shift + ch] = sb as f32;
            grads[m * n + scale + ch] = sg as f32;
        }
    }
    for (i, (a, b)) in f[0].iter().zip(&grads).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
            "BN gradient {i}: {a} vs {b}"
        );
    }
    // The input gradient on those shift and scale gradients, both modes.
    let grads = f[0].clone();
    for train in [0u64, 1] {
        let mut f = vec![
            x.clone(),
            dy.clone(),
            vec![0.0; x.len()],
            nmean.clone(),
            ninv.clone(),
            params.clone(),
            grads.clone(),
        ];
        let args = [
            n as u64,
            scale as u64,
            shift as u64,
            p as u64,
            rows as u64,
            c as u64,
            train,
        ];
        run("bn_backward", &args, &mut f, &mut []).unwrap();
        let frows = rows as f32;
        let want: Vec<f32> = (0..x.len())
            .map(|o| {
                let (ch, m) = (o % c, o / (rows * c));
                let s = m * c + ch;
                let k = params[m * n + scale + ch] * ninv[s];
                if train == 1 {
                    let xhat = (x[o] - nmean[s]) * ninv[s];
                    let (db, dg) = (grads[m * n + shift + ch], grads[m * n + scale + ch]);
                    k * (dy[o] - db / frows - xhat * dg / frows)
                } else {
                    k * dy[o]
                }
            })
            .collect();
        same_bits("bn_backward", &f[2], &want);
    }

    // A bias gradient: the column sums of dy.
    let mut d = vec![vec![0.0f64; p * chunks * c]];
    let mut f = vec![vec![], dy.clone(), vec![], vec![]];
    run(
        "channel_partials",
        &[p, rows, c, chunk, chunks, 1].map(|v| v as u64),
        &mut f,
        &mut d,
    )
    .unwrap();
    let mut d = vec![d.remove(0), vec![0.0; p * c]];
    run(
        "reduce_partials",
        &[p, chunks, c].map(|v| v as u64),
        &mut [],
        &mut d,
    )
    .unwrap();
    for (s, got) in d[1].iter().enumerate() {
        let (m, ch) = (s / c, s % c);
        let want: f64 = (0..rows).map(|r| dy[(m * rows + r) * c + ch] as f64).sum();
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "bias {got} vs {want}"
        );
    }
}

#[test]
fn sgd_kernel_gives_papa_trains_bits() {
    let mut rng = Rng::new(3);
    let (p, n) = (4usize, 29usize);
    let trainable = [0..7, 9..20, 25..29];
    for (sgd, lr) in [
        (Sgd::default(), 0.1f32),
        (
            Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: true,
            },
            0.05,
        ),
        (
            Sgd {
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: false,
            },
            0.3,
        ),
    ] {
        let params = random(&mut rng, p * n);
        let grads = random(&mut rng, p * n);
        let velocity = random(&mut rng, p * n);
        let mut args = vec![
            n as u64,
            p as u64,
            bits(lr),
            bits(sgd.momentum),
            bits(sgd.weight_decay),
            u64::from(sgd.nesterov),
        ];
        args.extend(
            trainable
                .iter()
                .flat_map(|r| [r.start as u64, r.end as u64]),
        );
        let mut f = vec![params.clone(), grads.clone(), velocity.clone()];
        if run("sgd", &args, &mut f, &mut []).is_none() {
            return;
        }
        let (mut wp, mut wv) = (params, velocity);
        sgd.step(&mut wp, &grads, &mut wv, n, &trainable, lr)
            .unwrap();
        same_bits("sgd params", &f[0], &wp);
        same_bits("sgd velocity", &f[2], &wv);
    }
    println!("every training kernel, run on the host, matches the CPU engine's arithmetic");
}
