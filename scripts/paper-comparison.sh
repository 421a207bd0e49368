#!/usr/bin/env bash
# The paper's comparison on Fashion-MNIST (docs/RESULTS.md): the small CNN, 5 members,
# 12 epochs, the whole training split, every method on seeds 0-2, one run directory each.
# Hours on 2 cores; safe to interrupt and rerun: finished runs are skipped and unfinished
# ones resume from their last epoch checkpoint (to the same bits).
#
#   scripts/paper-comparison.sh [SEEDS...]      (default: 0 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p papa-cli --bin papa
papa=target/release/papa
seeds=("$@")
[[ ${#seeds[@]} -gt 0 ]] || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
  for method in none papa papa-all papa-2; do
    out="runs/fmnist-cnn-s-p5-e12-s${seed}-${method}"
    if [[ -f "$out/results.json" ]]; then
      echo "done: $out"
    elif [[ -d "$out/checkpoints" ]]; then
      "$papa" train --resume "$out"
    else
      "$papa" train --method "$method" --population 5 --epochs 12 --train-limit 0 \
        --seed "$seed" --out "$out"
    fi
  done
done
