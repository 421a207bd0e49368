// papa-cuda's training kernels (the GPU engine, issue 18): everything of a population-batched
// forward and backward that is not a matrix product. The products (convolution through im2col,
// linear layers, their weight and input gradients) are strided-batched GEMMs over the members.
//
// Layouts are papa-train's CPU engine's: a population of P members is one P x N member-major
// buffer; activations are P x B samples, channel-last (sample, position, channel); a
// convolution's im2col row holds (input channel, ky, kx), PyTorch's weight order, so that the
// weight [Cout, Cin * 9] multiplies it as stored.
//
// Determinism: one thread computes one output and sums in a fixed order; reductions over
// the batch (BatchNorm statistics, bias gradients) go through per-(member, chunk, channel)
// partial sums in f64 and a second kernel that adds the chunks in order. No atomics and no
// shared memory: the same inputs give the same bits on every launch and any grid, and the
// host emulation (tests/emulate.rs) runs the same code thread by thread. Elementwise
// arithmetic follows the CPU engine operation by operation (compiled without FMA
// contraction), so that SGD, ReLU, max-pool and the transposes give its bits.

typedef unsigned long long u64;

// Every kernel is a grid-stride loop: any grid covers any size.
#define GRID_LOOP(i, total)                                               \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (u64)gridDim.x * blockDim.x)

// Per row r: y[r][j * a + i] = x[r % src_rows][i * b + j] for
// i < a, j < b. PyTorch's C x HW input to channel-last is (a, b) = (C, HW); a flatten of
// channel-last to PyTorch's C x HW order is (HW, C). `src_rows` < `rows` repeats a batch
// shared by every member.
extern "C" __global__ void train_transpose(const float* __restrict__ x, float* __restrict__ y,
                                           u64 rows, u64 src_rows, u64 a, u64 b) {
    u64 per = a * b;
    GRID_LOOP(o, rows * per) {
        u64 r = o / per, k = o % per;
        u64 j = k / a, i = k % a;
        y[o] = x[(r % src_rows) * per + i * b + j];
    }
}

// The im2col rows of a 3x3, stride-1, padding-1 convolution over `images` channel-last
// h x w x c images: row (image, y, x) holds c * 9 values in (channel, ky, kx) order, zero
// outside the image.
extern "C" __global__ void train_im2col(const float* __restrict__ x, float* __restrict__ cols,
                                        u64 images, u64 h, u64 w, u64 c) {
    u64 width = c * 9;
    GRID_LOOP(o, images * h * w * width) {
        u64 k = o % width, pos = o / width;
        u64 ch = k / 9, t = k % 9;
        long long px = (long long)(pos % w) + (long long)(t % 3) - 1;
        long long py = (long long)((pos / w) % h) + (long long)(t / 3) - 1;
        u64 img = pos / (h * w);
        bool inside = px >= 0 && py >= 0 && px < (long long)w && py < (long long)h;
        cols[o] = inside ? x[((img * h + (u64)py) * w + (u64)px) * c + ch] : 0.0f;
    }
}

// The input gradient from the im2col rows' gradient: each input value gathers the (up to)
// nine entries that read it, in (ky, kx) order. A gather, not a scatter: no atomics.
extern "C" __global__ void train_col2im(const float* __restrict__ dcols, float* __restrict__ dx,
                                        u64 images, u64 h, u64 w, u64 c) {
    u64 width = c * 9;
    GRID_LOOP(o, images * h * w * c) {
        u64 ch = o % c, pos = o / c;
        long long px = (long long)(pos % w), py = (long long)((pos / w) % h);
        u64 img = pos / (h * w);
        float sum = 0.0f;
        for (int t = 0; t < 9; ++t) {
            long long oy = py - t / 3 + 1, ox = px - t % 3 + 1;
            if (oy >= 0 && ox >= 0 && oy < (long long)h && ox < (long long)w) {
                u64 row = (img * h + (u64)oy) * w + (u64)ox;
                sum += dcols[row * width + ch * 9 + (u64)t];
            }
        }
        dx[o] = sum;
    }
}

// y[m, r, ch] = params[m * n + offset + ch]: a layer's bias, which the GEMM then adds its
// products to (beta = 1).
extern "C" __global__ void train_bias_fill(float* __restrict__ y,
                                           const float* __restrict__ params, u64 n, u64 offset,
                                           u64 p, u64 rows, u64 c) {
    GRID_LOOP(o, p * rows * c) {
        u64 m = o / (rows * c);
        y[o] = params[m * n + offset + o % c];
    }
}

// What train_channel_partials sums.
#define SUM_STATS 0   // x and x * x (BatchNorm's batch statistics): width 2c
#define SUM_BIAS 1    // dy (a bias gradient): width c
#define SUM_BN_GRAD 2 // dy and dy * xhat (BatchNorm's shift and scale gradients): width 2c

// Partial sums over chunks of `chunk` rows (sample positions) of each member's P x rows x c
// values, per (member, chunk, channel), in f64 and in row order:
// part[(m * chunks + k) * width + j].
extern "C" __global__ void train_channel_partials(
    const float* __restrict__ x, const float* __restrict__ dy, const float* __restrict__ nmean,
    const float* __restrict__ ninv, double* __restrict__ part, u64 p, u64 rows, u64 c,
    u64 chunk, u64 chunks, int kind) {
    u64 width = kind == SUM_BIAS ? c : 2 * c;
    GRID_LOOP(o, p * chunks * c) {
        u64 ch = o % c, k = (o / c) % chunks, m = o / (c * chunks);
        u64 end = (k + 1) * chunk < rows ? (k + 1) * chunk : rows;
        double a = 0.0, b = 0.0;
        for (u64 r = k * chunk; r < end; ++r) {
            u64 at = (m * rows + r) * c + ch;
            if (kind == SUM_STATS) {
                double v = (double)x[at];
                a += v;
                b += v * v;
            } else if (kind == SUM_BIAS) {
                a += (double)dy[at];
            } else {
                float xhat = (x[at] - nmean[m * c + ch]) * ninv[m * c + ch];
                a += (double)dy[at];
                b += (double)(dy[at] * xhat);
            }
        }
        double* out = part + (m * chunks + k) * width;
        out[ch] = a;
        if (kind != SUM_BIAS) {
            out[c + ch] = b;
        }
    }
}

// sums[m * width + j] = the chunks' partial sums added in chunk order.
extern "C" __global__ void train_reduce_partials(const double* __restrict__ part,
                                                 double* __restrict__ sums, u64 p, u64 chunks,
                                                 u64 width) {
    GRID_LOOP(o, p * width) {
        u64 m = o / width, j = o % width;
        double s = 0.0;
        for (u64 k = 0; k < chunks; ++k) {
            s += part[(m * chunks + k) * width + j];
        }
        sums[o] = s;
    }
}

// grads[m * n + offset + j] = sums[m * width + from + j] for j < count, rounded once to f32.
extern "C" __global__ void train_scatter_sums(const double* __restrict__ sums, u64 width,
                                              u64 from, u64 count, float* __restrict__ grads,
                                              u64 n, u64 offset, u64 p) {
    GRID_LOOP(o, p * count) {
        u64 m = o / count, j = o % count;
        grads[m * n + offset + j] = (float)sums[m * width + from + j];
    }
}

// Train-mode BatchNorm from the sums of x and x * x over `rows` values per channel: the
// normalisation applied (mean, 1 / sqrt(biased var + eps)) and PyTorch's running statistics
// with the unbiased variance, `momentum` < 0 being the cumulative average 1 / count. The
// counter itself is incremented afterwards by train_bn_count (every thread here reads it).
// The arithmetic of papa-train's Network, in f64.
extern "C" __global__ void train_bn_train_stats(const double* __restrict__ sums,
                                                float* __restrict__ params, u64 n, u64 p, u64 c,
                                                u64 mean_off, u64 var_off, u64 count_off,
                                                double rows, float momentum, float eps,
                                                float* __restrict__ nmean,
                                                float* __restrict__ ninv) {
    GRID_LOOP(o, p * c) {
        u64 m = o / c, ch = o % c;
        double bm = sums[m * 2 * c + ch] / rows;
        double bv = sums[m * 2 * c + c + ch] / rows - bm * bm;
        bv = bv > 0.0 ? bv : 0.0;
        nmean[o] = (float)bm;
        ninv[o] = (float)(1.0 / sqrt(bv + (double)eps));
        float count = params[m * n + count_off] + 1.0f;
        double mom = momentum < 0.0f ? 1.0 / (double)count : (double)momentum;
        float* rm = params + m * n + mean_off + ch;
        float* rv = params + m * n + var_off + ch;
        *rm = (float)((1.0 - mom) * (double)*rm + mom * bm);
        *rv = (float)((1.0 - mom) * (double)*rv + mom * bv * rows / (rows - 1.0));
    }
}

// num_batches_tracked += 1 for every member (after train_bn_train_stats has read it).
extern "C" __global__ void train_bn_count(float* __restrict__ params, u64 n, u64 p,
                                          u64 count_off) {
    GRID_LOOP(m, p) { params[m * n + count_off] += 1.0f; }
}

// Eval-mode BatchNorm's normalisation from the running statistics, in f32 as the CPU engine.
extern "C" __global__ void train_bn_eval_stats(const float* __restrict__ params, u64 n, u64 p,
                                               u64 c, u64 mean_off, u64 var_off, float eps,
                                               float* __restrict__ nmean,
                                               float* __restrict__ ninv) {
    GRID_LOOP(o, p * c) {
        u64 m = o / c, ch = o % c;
        nmean[o] = params[m * n + mean_off + ch];
        ninv[o] = 1.0f / sqrtf(params[m * n + var_off + ch] + eps);
    }
}

// y = (x - mean) * inv * gamma + beta per channel, then max(y, 0) when `relu` (a ReLU that
// follows the BatchNorm in place).
extern "C" __global__ void train_bn_apply(const float* __restrict__ x, float* __restrict__ y,
                                          const float* __restrict__ nmean,
                                          const float* __restrict__ ninv,
                                          const float* __restrict__ params, u64 n, u64 scale,
                                          u64 shift, u64 p, u64 rows, u64 c, int relu) {
    GRID_LOOP(o, p * rows * c) {
        u64 ch = o % c, m = o / (rows * c), s = m * c + ch;
        float v = (x[o] - nmean[s]) * ninv[s] * params[m * n + scale + ch] +
                  params[m * n + shift + ch];
        y[o] = relu ? fmaxf(v, 0.0f) : v;
    }
}

// BatchNorm's input gradient, given its shift and scale gradients already in `grads`:
// train mode k (dy - dbeta / rows - xhat dgamma / rows), eval mode k dy, k = gamma * inv.
extern "C" __global__ void train_bn_backward(
    const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
    const float* __restrict__ nmean, const float* __restrict__ ninv,
    const float* __restrict__ params, const float* __restrict__ grads, u64 n, u64 scale,
    u64 shift, u64 p, u64 rows, u64 c, int train) {
    float frows = (float)rows;
    GRID_LOOP(o, p * rows * c) {
        u64 ch = o % c, m = o / (rows * c), s = m * c + ch;
        float k = params[m * n + scale + ch] * ninv[s];
        if (train) {
            float xhat = (x[o] - nmean[s]) * ninv[s];
            float dbeta = grads[m * n + shift + ch], dgamma = grads[m * n + scale + ch];
            dx[o] = k * (dy[o] - dbeta / frows - xhat * dgamma / frows);
        } else {
            dx[o] = k * dy[o];
        }
    }
}

extern "C" __global__ void train_relu(const float* __restrict__ x, float* __restrict__ y,
                                      u64 len) {
    GRID_LOOP(o, len) { y[o] = fmaxf(x[o], 0.0f); }
}

// The ReLU's gradient in place, from its output y.
extern "C" __global__ void train_relu_backward(float* __restrict__ g,
                                               const float* __restrict__ y, u64 len) {
    GRID_LOOP(o, len) { g[o] = y[o] > 0.0f ? g[o] : 0.0f; }
}

// The winner of the 2x2 window at output (img, oy, ox, ch): its index 0..3 (top-left,
// top-right, bottom-left, bottom-right), the first maximum, NaN winning, as PyTorch.
__device__ __forceinline__ int window_winner(const float* __restrict__ x, u64 img, u64 oy,
                                             u64 ox, u64 ch, u64 h, u64 w, u64 c,
                                             float* best_out) {
    u64 top = ((img * h + 2 * oy) * w + 2 * ox) * c + ch;
    float v[4] = {x[top], x[top + c], x[top + w * c], x[top + w * c + c]};
    float best = v[0];
    int at = 0;
    for (int i = 1; i < 4; ++i) {
        if (v[i] > best || v[i] != v[i]) {
            best = v[i];
            at = i;
        }
    }
    *best_out = best;
    return at;
}

// 2x2, stride-2 max-pool of channel-last h x w x c images.
extern "C" __global__ void train_maxpool(const float* __restrict__ x, float* __restrict__ y,
                                         u64 images, u64 h, u64 w, u64 c) {
    u64 oh = h / 2, ow = w / 2;
    GRID_LOOP(o, images * oh * ow * c) {
        u64 ch = o % c, pos = o / c;
        float best;
        window_winner(x, pos / (oh * ow), (pos / ow) % oh, pos % ow, ch, h, w, c, &best);
        y[o] = best;
    }
}

// The max-pool's input gradient, gathered: each input takes its window's gradient if it won
// the window (and, when `relu_mask`, the winner is positive: the gradient of the ReLU that
// produced x), else zero; rows and columns no window covers get zero.
extern "C" __global__ void train_maxpool_backward(const float* __restrict__ x,
                                                  const float* __restrict__ dy,
                                                  float* __restrict__ dx, u64 images, u64 h,
                                                  u64 w, u64 c, int relu_mask) {
    u64 oh = h / 2, ow = w / 2;
    GRID_LOOP(o, images * h * w * c) {
        u64 ch = o % c, pos = o / c;
        u64 px = pos % w, py = (pos / w) % h, img = pos / (h * w);
        float g = 0.0f;
        if (py / 2 < oh && px / 2 < ow) {
            float best;
            int at = window_winner(x, img, py / 2, px / 2, ch, h, w, c, &best);
            int mine = (int)((py % 2) * 2 + px % 2);
            if (at == mine && (!relu_mask || best > 0.0f)) {
                g = dy[((img * oh + py / 2) * ow + px / 2) * c + ch];
            }
        }
        dx[o] = g;
    }
}

// One torch.optim.SGD step over the whole P x N population: the entries in the `count`
// sorted, disjoint trainable ranges [ranges[2i], ranges[2i + 1]) of every member (running
// statistics and counters are left alone). papa-train's Sgd arithmetic, operation by
// operation: d = g + wd p; v = mu v + d; d = nesterov ? d + mu v : v; p -= lr d.
extern "C" __global__ void train_sgd(float* __restrict__ params, const float* __restrict__ grads,
                                     float* __restrict__ velocity, u64 n, u64 p,
                                     const u64* __restrict__ ranges, unsigned count, float lr,
                                     float mu, float wd, int nesterov) {
    GRID_LOOP(o, p * n) {
        u64 col = o % n;
        unsigned lo = 0, hi = count;
        while (lo < hi) {
            unsigned mid = (lo + hi) / 2;
            if (ranges[2 * mid + 1] <= col) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if (lo < count && ranges[2 * lo] <= col) {
            float d = grads[o] + wd * params[o];
            float v = mu * velocity[o] + d;
            velocity[o] = v;
            d = nesterov ? d + mu * v : v;
            params[o] -= lr * d;
        }
    }
}
