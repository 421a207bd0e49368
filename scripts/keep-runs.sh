#!/usr/bin/env bash
# Keeps finished runs' records in the repository, docs/runs/NAME/: results.json (test and
# validation figures, per-epoch diversity), config.toml, run.json and timings.json. They
# are what docs/RESULTS.md is copied from, a few kB each; runs/ is not tracked and leaves
# with the machine (an earlier session's validation figures were lost that way).
#
#   scripts/keep-runs.sh runs/NAME...        (a run without results.json is refused)
set -euo pipefail
[[ $# -gt 0 ]] || { sed -n '2,7p' "$0"; exit 2; }
cd "$(dirname "$0")/.."
for run in "$@"; do
  run=${run%/}
  [[ -f "$run/results.json" ]] || { echo "not finished (no results.json): $run" >&2; exit 1; }
  keep="docs/runs/$(basename "$run")"
  mkdir -p "$keep"
  for f in results.json config.toml run.json timings.json; do
    [[ -f "$run/$f" ]] && cp "$run/$f" "$keep/$f"
  done
  echo "kept: $keep"
done
