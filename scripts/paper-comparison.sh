#!/usr/bin/env bash
# The paper's comparison on Fashion-MNIST (docs/RESULTS.md): the small CNN, 5 members,
# 12 epochs, the whole training split, every method on seeds 0-2, one run directory each.
# Hours on 2 cores; safe to interrupt and rerun: finished runs are skipped and unfinished
# ones resume from their last epoch checkpoint (to the same bits).
#
#   scripts/paper-comparison.sh [SEEDS...]      (default: 0 1 2)
#
# Settings: configs/paper.toml. VARIANT=name layers configs/name.toml over it (e.g.
# paper-schedule, paper-schedule-same-init)
# into run directories suffixed -name; METHODS="papa-all papa-2" limits the methods.
# PAPA=path runs that binary instead of building one; THREADS=n gives each run n threads
# (results do not depend on it; session 13 ran two queues of THREADS=1 side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
papa=${PAPA:-target/release/papa}
[[ -n "${PAPA:-}" ]] || cargo build --release -p papa-cli --bin papa
seeds=("$@")
[[ ${#seeds[@]} -gt 0 ]] || seeds=(0 1 2)
read -r -a methods <<< "${METHODS:-none papa papa-all papa-2}"
threads=(--threads "${THREADS:-0}")
config=(--config configs/paper.toml) suffix=""
if [[ -n "${VARIANT:-}" ]]; then
  config+=(--config "configs/${VARIANT}.toml") suffix="-${VARIANT}"
fi
for seed in "${seeds[@]}"; do
  for method in "${methods[@]}"; do
    out="runs/fmnist-cnn-s-p5-e12-s${seed}-${method}${suffix}"
    if [[ -f "$out/results.json" ]]; then
      echo "done: $out"
    elif [[ -d "$out/checkpoints" ]]; then
      "$papa" train --resume "$out" "${threads[@]}"
    else
      "$papa" train "${config[@]}" --method "$method" --seed "$seed" "${threads[@]}" --out "$out"
    fi
  done
done
