#!/usr/bin/env bash
# Builds, on this machine, what scripts/gpu-check.sh runs on a GPU machine (which has no Rust
# toolchain and no network): papa-cuda's test binaries and its rules and training benchmarks, release
# builds, stripped (the release profile keeps debug info), in one folder to carry there.
# papa-cuda does not link tract or any CUDA library (cudarc loads them at run time).
#
#   scripts/gpu-build.sh [DIR]        (default: target/gpu-bin; at most 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/gpu-bin}
limit=$((64 * 1024 * 1024))

rm -rf "$dir"
mkdir -p "$dir"
# Cargo's JSON messages name the executables (tests/<name>.rs -> <name>-<hash>).
artifacts=$(
    {
        cargo test --release -p papa-cuda --no-run --message-format=json
        cargo build --release -p papa-cuda --example rules_bench --example train_bench \
            --message-format=json
    } | jq -r 'select(.reason == "compiler-artifact" and .executable != null
                      and (.target.kind == ["test"] or .target.kind == ["example"]))
               | "\(.target.name) \(.executable)"'
)
# What gpu-check.sh runs (tests/emulate.rs and tests/no_gpu.rs are for machines without a GPU).
while read -r name exe; do
    case $name in
        device | compile | engine | rules_bench | train_bench) cp "$exe" "$dir/$name" ;;
    esac
done <<<"$artifacts"
for name in device compile engine rules_bench train_bench; do
    [[ -x $dir/$name ]] || { echo "gpu-build: $name was not built" >&2; exit 1; }
done
strip "$dir"/*

size=$(du -cb "$dir"/* | tail -n 1 | cut -f 1)
glibc=$(objdump -T "$dir"/* | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -n 1)
ls -l "$dir"
echo "gpu-build: $dir holds $((size / 1024)) KiB (limit $((limit / 1024)) KiB); needs glibc ${glibc#GLIBC_} or newer"
if ((size > limit)); then
    echo "gpu-build: over the 64 MiB that may be carried to the GPU machine" >&2
    exit 1
fi
