#!/usr/bin/env bash
# papa-cuda on a GPU machine (issue 17): its GPU tests (every rule equal to papa-core, bit
# for bit, on every launch), the committed PTX through this machine's ptxas, and the rule
# benchmarks against the device copy and PyTorch (flat [P, N] tensor and the reference
# code's per-tensor state-dict loop), ending in one short table; then the GPU engine (issue
# 18): papa-train's conformance suite on it, one cnn-s step against the CPU engine (1e-4 per
# tensor, TF32 off), and its member-steps/s at P = 1..64 beside PyTorch's for-loop and
# torch.func vmap on the same GPU. Under 8 minutes.
#
#   scripts/gpu-build.sh                  # on the build machine: target/gpu-bin
#   scripts/gpu-check.sh OUT_DIR          # on the GPU machine, from the repository root
#
# PAPA_GPU_BIN names another folder of binaries; PYTHON another python (with torch).
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
bin=${PAPA_GPU_BIN:-target/gpu-bin}
python=${PYTHON:-python3}
failed=()

for name in device compile engine rules_bench train_bench; do
    [[ -x $bin/$name ]] || { echo "gpu-check: no $bin/$name: run scripts/gpu-build.sh first" >&2; exit 2; }
done

# The CUDA libraries of python's nvidia-* wheels may lie outside the default search path.
site=$("$python" -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null || true)
while read -r dir; do
    for lib in "$dir"/nvidia/*/lib; do
        [[ -d $lib ]] && LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
done <<<"$site"
# cudarc loads libnccl.so (or .so.<CUDA major>), not the wheel's libnccl.so.2: a link to it.
nccl=$(while read -r dir; do [[ -d $dir/nvidia ]] && find "$dir/nvidia" -name 'libnccl.so.2*' 2>/dev/null; done <<<"$site" | sort | head -n 1)
if [[ -n $nccl ]] && mkdir -p "$out/lib" && ln -sf "$nccl" "$out/lib/libnccl.so"; then
    LD_LIBRARY_PATH="$out/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
nvrtc=$(while read -r dir; do [[ -d $dir/nvidia ]] && find "$dir/nvidia" -name 'libnvrtc.so.1[0-9]*' 2>/dev/null; done <<<"$site" | sort | head -n 1)
[[ -n $nvrtc ]] && export PAPA_NVRTC_LIB=$nvrtc
ptxas=$(command -v ptxas || ls /usr/local/cuda/bin/ptxas 2>/dev/null \
    || while read -r dir; do ls "$dir"/nvidia/*/bin/ptxas 2>/dev/null; done <<<"$site" | head -n 1)
[[ -n $ptxas ]] && export PAPA_PTXAS=$ptxas

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "PAPA_NVRTC_LIB=${PAPA_NVRTC_LIB:-} PAPA_PTXAS=${PAPA_PTXAS:-}"
} | tee "$out/machine.txt"

step() { # name, timeout in seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    if timeout "$limit" "$@" >"$out/$name.txt" 2>&1; then
        grep -E '^(test result|SKIP|NVRTC|P = |cnn-s|every rule|GPU engine|NCCL|FAIL)' "$out/$name.txt" || true
    else
        echo "gpu-check: $name failed (exit $?); see $out/$name.txt"
        tail -n 20 "$out/$name.txt"
        failed+=("$name")
    fi
}

# A missing GPU fails these instead of skipping them.
step device-tests 180 env PAPA_REQUIRE_GPU=1 "$bin/device" --test-threads=1 --nocapture
step compile-test 60 "$bin/compile" --nocapture
step papa-cuda-bench 180 "$bin/rules_bench" --json "$out/papa-cuda.json"
step torch-bench 240 "$python" scripts/torch-rules-bench.py --json "$out/torch.json" \
    --papa-cuda "$out/papa-cuda.json"
# The GPU engine (issue 18).
step engine-tests 150 env PAPA_REQUIRE_GPU=1 "$bin/engine" --test-threads=1 --nocapture
step train-bench 60 "$bin/train_bench"
step torch-train-bench 150 "$python" scripts/torch-train-bench.py --json "$out/torch-train.json" \
    --papa "$out/train-bench.txt"

echo
# papa-cuda's own figures, then the table beside PyTorch's.
cat "$out/papa-cuda-bench.txt"
echo
tee "$out/table.txt" <"$out/torch-bench.txt"
echo
tee "$out/train-table.txt" <"$out/torch-train-bench.txt"
if ((${#failed[@]})); then
    echo "gpu-check: FAILED: ${failed[*]} (outputs in $out)"
    exit 1
fi
echo "gpu-check: all passed (outputs in $out)"
