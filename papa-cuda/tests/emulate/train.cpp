// papa-cuda's training kernels (kernels/train.cu) compiled for the host by a C++ compiler and
// run thread by thread (valid: each thread writes only its own outputs, with no shared memory
// and no synchronisation). Used by tests/emulate.rs: `train KERNEL DIR` reads DIR/args.bin
// (u64 arguments), DIR/f<i>.bin (f32 arrays) and DIR/d<i>.bin (f64 arrays), runs KERNEL on
// them with a grid of 3 blocks of 7 threads (so that the grid-stride loops wrap), and writes
// every array back. Build with -ffp-contract=off.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
struct dim3 { unsigned x, y, z; };
static dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#include "../../kernels/train.cu"

template <class F> void launch(F f) {
    gridDim = {3, 1, 1}; blockDim = {7, 1, 1};
    for (unsigned b = 0; b < 3; ++b) for (unsigned t = 0; t < 7; ++t) {
        blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0}; f();
    }
}
template <class T> static std::vector<T> load(const std::string& path) {
    std::vector<T> v; FILE* f = fopen(path.c_str(), "rb"); if (!f) return v;
    T x; while (fread(&x, sizeof x, 1, f) == 1) v.push_back(x);
    fclose(f); return v;
}
template <class T> static void store(const std::string& path, const std::vector<T>& v) {
    FILE* f = fopen(path.c_str(), "wb"); fwrite(v.data(), sizeof(T), v.size(), f); fclose(f);
}
int main(int argc, char** argv) {
    if (argc != 3) return 2;
    std::string k = argv[1], dir = argv[2];
    std::vector<u64> a = load<u64>(dir + "/args.bin");
    std::vector<std::vector<float>> f; std::vector<std::vector<double>> d;
    for (int i = 0; i < 8; ++i) f.push_back(load<float>(dir + "/f" + std::to_string(i) + ".bin"));
    for (int i = 0; i < 4; ++i) d.push_back(load<double>(dir + "/d" + std::to_string(i) + ".bin"));
    // Float scalars travel as the bits of a u64.
    auto fl = [&](int i) { float x; uint32_t b = (uint32_t)a[i]; memcpy(&x, &b, 4); return x; };
    auto db = [&](int i) { double x; memcpy(&x, &a[i], 8); return x; };
    float* F[8]; double* D[4];
    for (int i = 0; i < 8; ++i) F[i] = f[i].data();
    for (int i = 0; i < 4; ++i) D[i] = d[i].data();
    if (k == "transpose") launch([&] { train_transpose(F[0], F[1], a[0], a[1], a[2], a[3]); });
    else if (k == "im2col") launch([&] { train_im2col(F[0], F[1], a[0], a[1], a[2], a[3]); });
    else if (k == "col2im") launch([&] { train_col2im(F[0], F[1], a[0], a[1], a[2], a[3]); });
    else if (k == "bias_fill") launch([&] { train_bias_fill(F[0], F[1], a[0], a[1], a[2], a[3], a[4]); });
    else if (k == "channel_partials") launch([&] { train_channel_partials(F[0], F[1], F[2], F[3], D[0], a[0], a[1], a[2], a[3], a[4], (int)a[5]); });
    else if (k == "reduce_partials") launch([&] { train_reduce_partials(D[0], D[1], a[0], a[1], a[2]); });
    else if (k == "scatter_sums") launch([&] { train_scatter_sums(D[0], a[0], a[1], a[2], F[0], a[3], a[4], a[5]); });
    else if (k == "bn_train_stats") launch([&] { train_bn_train_stats(D[0], F[0], a[0], a[1], a[2], a[3], a[4], a[5], db(6), fl(7), fl(8), F[1], F[2]); });
    else if (k == "bn_count") launch([&] { train_bn_count(F[0], a[0], a[1], a[2]); });
    else if (k == "bn_eval_stats") launch([&] { train_bn_eval_stats(F[0], a[0], a[1], a[2], a[3], a[4], fl(5), F[1], F[2]); });
    else if (k == "bn_apply") launch([&] { train_bn_apply(F[0], F[1], F[2], F[3], F[4], a[0], a[1], a[2], a[3], a[4], a[5], (int)a[6]); });
    else if (k == "bn_backward") launch([&] { train_bn_backward(F[0], F[1], F[2], F[3], F[4], F[5], F[6], a[0], a[1], a[2], a[3], a[4], a[5], (int)a[6]); });
    else if (k == "relu") launch([&] { train_relu(F[0], F[1], a[0]); });
    else if (k == "relu_backward") launch([&] { train_relu_backward(F[0], F[1], a[0]); });
    else if (k == "maxpool") launch([&] { train_maxpool(F[0], F[1], a[0], a[1], a[2], a[3]); });
    else if (k == "maxpool_backward") launch([&] { train_maxpool_backward(F[0], F[1], F[2], a[0], a[1], a[2], a[3], (int)a[4]); });
    else if (k == "sgd") {
        std::vector<u64> r(a.begin() + 6, a.end());
        launch([&] { train_sgd(F[0], F[1], F[2], a[0], a[1], r.data(), (unsigned)(r.size() / 2), fl(2), fl(3), fl(4), (int)a[5]); });
    } else { fprintf(stderr, "unknown kernel %s\n", argv[1]); return 2; }
    for (int i = 0; i < 8; ++i) if (!f[i].empty()) store(dir + "/f" + std::to_string(i) + ".bin", f[i]);
    for (int i = 0; i < 4; ++i) if (!d[i].empty()) store(dir + "/d" + std::to_string(i) + ".bin", d[i]);
    return 0;
}
