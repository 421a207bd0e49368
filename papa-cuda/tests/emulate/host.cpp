// papa-cuda's rule kernels (kernels/rules.cu) compiled for the host by a C++ compiler and run
// thread by thread, block by block: valid for the rule kernels, where a thread touches only
// its own column and its own shared-memory slots (not for the diversity's block reductions).
// CUDA's _rn intrinsics become plain IEEE double operations (build with -ffp-contract=off).
// Used by tests/emulate.rs: reads an input file, writes each rule's result beside it.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
struct dim3 { unsigned x, y, z; };
static dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __grid_constant__
#define __shared__
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __double2float_rn(double d) { return (float)d; }
static inline void __syncthreads() {}
float staged[1 << 20];
#include "../../kernels/rules.cu"

template <class F> void launch(unsigned grid, unsigned block, F f) {
    gridDim = {grid, 1, 1}; blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {
        blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0}; f();
    }
}
static std::vector<char> slurp(const char* path) {
    FILE* f = fopen(path, "rb"); std::vector<char> v; char buf[1 << 16]; size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    fclose(f); return v;
}
static void dump(const char* path, const float* x, size_t n) {
    FILE* f = fopen(path, "wb"); fwrite(x, 4, n, f); fclose(f);
}
int main(int argc, char** argv) {
    // argv[1]: u64 p, u64 n, f32 pop[p * n], f32 w[p], u64 pairs[2p], u64 nmax,
    // u64 ranges[2 * nmax], f32 alpha (little-endian). argv[2]: the output directory.
    auto in = slurp(argv[1]); const char* q = in.data();
    auto rd = [&](void* d, size_t s) { memcpy(d, q, s); q += s; };
    u64 p, n; rd(&p, 8); rd(&n, 8);
    std::vector<float> pop(p * n); rd(pop.data(), 4 * p * n);
    Weights w{}; rd(w.w, 4 * p);
    Pairs pr{}; for (u64 j = 0; j < 2 * p; ++j) { u64 v; rd(&v, 8); pr.parents[j] = (unsigned short)v; }
    u64 nmax; rd(&nmax, 8); std::vector<u64> ranges(2 * nmax + 2); rd(ranges.data(), 16 * nmax);
    float alpha; rd(&alpha, 4);
    double uniform = 1.0 / (double)p, keep = (double)alpha, pull = 1.0 - keep;
    unsigned threads = 256, grid = (unsigned)((n + 255) / 256);
    unsigned fit = (unsigned)(49152 / (4 * p)) / 32 * 32; unsigned st = fit < 32 ? 32 : (fit > 256 ? 256 : fit);
    unsigned sgrid = (unsigned)((n + st - 1) / st);
    std::vector<float> x; char path[256];
    for (int given = 0; given < 2; ++given) {
        x = pop; launch(sgrid, st, [&] { papa_gradual(x.data(), n, p, w, given, uniform, keep, pull, ranges.data(), nmax); });
        snprintf(path, sizeof path, "%s/gradual%d.bin", argv[2], given); dump(path, x.data(), p * n);
        x = pop; launch(grid, threads, [&] { papa_all(x.data(), n, p, w, given, uniform, ranges.data(), nmax); });
        snprintf(path, sizeof path, "%s/all%d.bin", argv[2], given); dump(path, x.data(), p * n);
        std::vector<float> out(n);
        launch(grid, threads, [&] { papa_average(pop.data(), out.data(), n, p, w, given, uniform, ranges.data(), nmax); });
        snprintf(path, sizeof path, "%s/average%d.bin", argv[2], given); dump(path, out.data(), n);
    }
    x = pop; launch(sgrid, st, [&] { papa_pairs(x.data(), n, p, pr, ranges.data(), nmax); });
    snprintf(path, sizeof path, "%s/pairs.bin", argv[2]); dump(path, x.data(), p * n);
    return 0;
}
