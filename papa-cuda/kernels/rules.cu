// papa-cuda's kernels: papa-core's rules and diversity metrics over one P x N member-major
// population buffer (row j is member j).
//
// Every rule reproduces papa-core's arithmetic (papa-core/src/rules.rs) operation by
// operation: f32 inputs widened to f64, sums in member order, one rounding to f32 at the end.
// The _rn intrinsics are never contracted into fused multiply-adds (papa-core's Rust is not
// either), so a rule gives papa-core's bits. One thread owns one column of every member, so
// no thread reads what another writes (PAPA-2 and gradual stage their column in shared
// memory, each thread its own slots); the diversity reductions use a fixed split of the
// columns and fixed trees, with no atomics: the same inputs give the same bits on every launch.

typedef unsigned long long u64;

// The most members (MAX_MEMBERS of papa-cuda's population.rs).
#define MAX_MEMBERS 256

// Averaging weights and PAPA-2's parents travel by value, in the launch's parameters
// (__grid_constant__: read in place, never copied per thread), so that applying a rule
// allocates and copies nothing: no host synchronisation between launches.
struct Weights {
    float w[MAX_MEMBERS];
};

struct Pairs {
    unsigned short parents[2 * MAX_MEMBERS];  // child j: parents[2j], parents[2j + 1]
};

// Whether column `c` lies in one of the `count` sorted, disjoint ranges
// [ranges[2i], ranges[2i + 1]) whose entries take the max (counters).
__device__ __forceinline__ bool takes_max(u64 c, const u64* __restrict__ ranges,
                                          unsigned count) {
    unsigned lo = 0, hi = count;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (ranges[2 * mid + 1] <= c) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < count && ranges[2 * lo] <= c;
}

// The weighted mean of one column as papa-core's Combine::reduce computes it; member j's
// entry is x[j * stride]. Uniform weights (w == 0) sum the members, then scale once by
// `uniform` (= 1.0 / P, computed on the host); given weights sum w_j * x_j, the first term
// standing alone.
__device__ __forceinline__ double column_mean(const float* x, u64 stride, unsigned p,
                                              const float* __restrict__ w, double uniform) {
    if (w == 0) {
        double s = (double)x[0];
#pragma unroll 8
        for (unsigned j = 1; j < p; ++j) {
            s = __dadd_rn(s, (double)x[j * stride]);
        }
        return __dmul_rn(s, uniform);
    }
    double s = __dmul_rn((double)w[0], (double)x[0]);
#pragma unroll 8
    for (unsigned j = 1; j < p; ++j) {
        s = __dadd_rn(s, __dmul_rn((double)w[j], (double)x[j * stride]));
    }
    return s;
}

// The largest entry of one column (counters): papa-core's f64 max of the widened values,
// which is the f32 max.
__device__ __forceinline__ float column_max(const float* x, u64 stride, unsigned p) {
    double m = (double)x[0];
    for (unsigned j = 1; j < p; ++j) {
        m = fmax(m, (double)x[j * stride]);
    }
    return (float)m;
}

// The column's value for every member: the mean rounded once, or the max for counters.
__device__ __forceinline__ float column_value(const float* x, u64 stride, unsigned p,
                                              const float* __restrict__ w, double uniform,
                                              bool max) {
    return max ? column_max(x, stride, p) : __double2float_rn(column_mean(x, stride, p, w, uniform));
}

__device__ __forceinline__ u64 column_index() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}

// Copies column c of every member into shared memory (p x blockDim.x floats, member-major)
// and returns this thread's column there. The loads are issued back to back, with no store
// to global memory between them, and each entry is read from memory once.
__device__ __forceinline__ float* stage(const float* __restrict__ pop, u64 n, u64 c,
                                        unsigned p) {
    extern __shared__ float staged[];
    unsigned t = threadIdx.x, stride = blockDim.x;
    // Eight loads in flight per thread keep enough bytes moving to cover memory latency.
#pragma unroll 8
    for (unsigned j = 0; j < p; ++j) {
        staged[j * stride + t] = pop[j * n + c];
    }
    return staged + t;
}

// out[c] <- the weighted mean of column c (the max for counter columns).
// `given` says whether `weights` holds the weights (else they are uniform).
extern "C" __global__ void papa_average(const float* __restrict__ pop, float* __restrict__ out,
                                        u64 n, unsigned p, const __grid_constant__ Weights weights,
                                        unsigned given, double uniform,
                                        const u64* __restrict__ max_ranges, unsigned max_count) {
    u64 c = column_index();
    if (c >= n) {
        return;
    }
    const float* w = given ? weights.w : 0;
    out[c] = column_value(pop + c, n, p, w, uniform, takes_max(c, max_ranges, max_count));
}

// PAPA-all: every member's column c <- the mean rounded once (every member gets its bits).
extern "C" __global__ void papa_all(float* __restrict__ pop, u64 n, unsigned p,
                                    const __grid_constant__ Weights weights, unsigned given,
                                    double uniform, const u64* __restrict__ max_ranges,
                                    unsigned max_count) {
    u64 c = column_index();
    if (c >= n) {
        return;
    }
    const float* w = given ? weights.w : 0;
    float m = column_value(pop + c, n, p, w, uniform, takes_max(c, max_ranges, max_count));
    for (unsigned j = 0; j < p; ++j) {
        pop[j * n + c] = m;
    }
}

// PAPA gradual: w <- keep * w + pull * m, as papa-core: pulled = m * pull in f64, then
// keep * w + pulled rounded once. keep = (double)alpha and pull = 1.0 - keep come from the
// host. Counter columns take the max. Staged in shared memory (p x blockDim.x floats), so
// that each entry is read from memory once although it is used twice.
extern "C" __global__ void papa_gradual(float* __restrict__ pop, u64 n, unsigned p,
                                        const __grid_constant__ Weights weights, unsigned given,
                                        double uniform, double keep, double pull,
                                        const u64* __restrict__ max_ranges, unsigned max_count) {
    u64 c = column_index();
    if (c >= n) {
        return;
    }
    const float* w = given ? weights.w : 0;
    const float* x = stage(pop, n, c, p);
    unsigned stride = blockDim.x;
    if (takes_max(c, max_ranges, max_count)) {
        float m = column_max(x, stride, p);
        for (unsigned j = 0; j < p; ++j) {
            pop[j * n + c] = m;
        }
        return;
    }
    double pulled = __dmul_rn(column_mean(x, stride, p, w, uniform), pull);
    for (unsigned j = 0; j < p; ++j) {
        pop[j * n + c] =
            __double2float_rn(__dadd_rn(__dmul_rn(keep, (double)x[j * stride]), pulled));
    }
}

// PAPA-2: child j <- (w_a + w_b) / 2 for its parents a and b, from the OLD
// population, staged in shared memory (p x blockDim.x floats) before any child is written.
// Counter columns take the parents' max.
extern "C" __global__ void papa_pairs(float* __restrict__ pop, u64 n, unsigned p,
                                      const __grid_constant__ Pairs pairs,
                                      const u64* __restrict__ max_ranges, unsigned max_count) {
    u64 c = column_index();
    if (c >= n) {
        return;
    }
    const float* old = stage(pop, n, c, p);
    unsigned stride = blockDim.x;
    bool max = takes_max(c, max_ranges, max_count);
    for (unsigned j = 0; j < p; ++j) {
        float x = old[pairs.parents[2 * j] * stride];
        float y = old[pairs.parents[2 * j + 1] * stride];
        pop[j * n + c] =
            max ? fmaxf(x, y) : __double2float_rn(__dmul_rn(__dadd_rn((double)x, (double)y), 0.5));
    }
}

// The column of compacted index i: the columns listed are the ranges
// [starts[r], starts[r] + prefix[r + 1] - prefix[r]), in order; prefix[0] = 0.
__device__ __forceinline__ u64 listed_column(u64 i, const u64* __restrict__ starts,
                                             const u64* __restrict__ prefix, unsigned ranges) {
    unsigned lo = 0, hi = ranges;  // the last r with prefix[r] <= i
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (prefix[mid] <= i) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return starts[lo] + (i - prefix[lo]);
}

#define REDUCE_THREADS 256

// Sums the block's `part` values in a fixed tree; thread 0 gets the total.
__device__ __forceinline__ double block_sum(double part) {
    __shared__ double sums[REDUCE_THREADS];
    unsigned t = threadIdx.x;
    sums[t] = part;
    __syncthreads();
    for (unsigned half = REDUCE_THREADS / 2; half > 0; half /= 2) {
        if (t < half) {
            sums[t] = __dadd_rn(sums[t], sums[t + half]);
        }
        __syncthreads();
    }
    return sums[0];
}

// First pass of the diversity metrics over the `m` listed columns (blockDim.x must be
// REDUCE_THREADS). Output o = blockIdx.y: o < p is member o's squared distance to the uniform
// mean (papa-core's distances_to_mean: the mean sums (1/p) * x_j from 0); o >= p is entry
// (j, k), j <= k, of the upper triangle of the Gram matrix, row by row. Thread t of block b
// takes the listed columns t + 256 b, then every gridDim.x * 256 further, in order; the block's
// sum goes to partials[o * gridDim.x + b].
extern "C" __global__ void papa_diversity_partials(const float* __restrict__ pop, u64 n,
                                                   unsigned p, u64 m,
                                                   const u64* __restrict__ starts,
                                                   const u64* __restrict__ prefix,
                                                   unsigned ranges, double inv_p,
                                                   double* __restrict__ partials) {
    unsigned o = blockIdx.y;
    unsigned a = 0, b = 0;
    bool distance = o < p;
    if (!distance) {
        // Row a of the upper triangle holds p - a entries.
        unsigned rest = o - p;
        while (rest >= p - a) {
            rest -= p - a;
            ++a;
        }
        b = a + rest;
    }
    double acc = 0.0;
    u64 step = (u64)gridDim.x * REDUCE_THREADS;
    for (u64 i = (u64)blockIdx.x * REDUCE_THREADS + threadIdx.x; i < m; i += step) {
        u64 c = listed_column(i, starts, prefix, ranges);
        if (distance) {
            double mean = 0.0;
            for (unsigned j = 0; j < p; ++j) {
                mean = __dadd_rn(mean, __dmul_rn(inv_p, (double)pop[j * n + c]));
            }
            double d = __dsub_rn((double)pop[o * n + c], mean);
            acc = __dadd_rn(acc, __dmul_rn(d, d));
        } else {
            acc = __dadd_rn(acc, __dmul_rn((double)pop[a * n + c], (double)pop[b * n + c]));
        }
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0) {
        partials[(u64)o * gridDim.x + blockIdx.x] = total;
    }
}

// Second pass: out[o] <- the sum of output o's `blocks` partials, in a fixed order
// (blockDim.x must be REDUCE_THREADS, one block per output).
extern "C" __global__ void papa_sum_partials(const double* __restrict__ partials,
                                             unsigned blocks, double* __restrict__ out) {
    unsigned o = blockIdx.x;
    double acc = 0.0;
    for (unsigned i = threadIdx.x; i < blocks; i += REDUCE_THREADS) {
        acc = __dadd_rn(acc, partials[(u64)o * blocks + i]);
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0) {
        out[o] = total;
    }
}
