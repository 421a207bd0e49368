#!/usr/bin/env python3
"""Prints docs/RESULTS.md table rows from the results.json of the runs named, so that the
document is copied from the runs, never typed:

    scripts/results-rows.py runs/fmnist-cnn-s-p5-e12-s*/results.json

then one row per method: mean and standard deviation over the runs (seeds) given.
"""
import json
import os
import statistics
import sys


def pct(x):
    return f"{x:.2f}"


ORDER = ["none", "papa", "papa-all", "papa-2"]
def timings(path):
    """The run's wall times (timings.json beside results.json; older runs kept them inside)."""
    try:
        return json.load(open(os.path.join(os.path.dirname(path), "timings.json")))
    except (OSError, ValueError):
        return {}


runs = []
for path in sys.argv[1:]:
    walls = timings(path)
    for r in json.load(open(path))["results"]:
        r.setdefault("wall_seconds", walls.get(r["method"]))
        runs.append(r)
runs.sort(key=lambda r: (r["seed"], ORDER.index(r["method"]) if r["method"] in ORDER else len(ORDER)))
def wall(seconds):
    return "n/a" if seconds is None else f"{round(seconds / 60)} min"


def rep(a):
    return "n/a" if a.get("repaired") is None else pct(a["repaired"])


for r in runs:
    print(
        f"| {r['seed']} | {r['method']} "
        f"| {pct(r['members_mean'])} [{pct(r['members_min'])}, {pct(r['members_max'])}] "
        f"| {pct(r['best_member_on_val'])} | {pct(r['ensemble'])} "
        f"| {pct(r['uniform_soup']['plain'])} ({rep(r['uniform_soup'])}) "
        f"| {pct(r['greedy_soup']['plain'])} ({r['greedy_soup_size']}) ({rep(r['greedy_soup'])}) "
        f"| {pct(r['final_model'])} ({r['final_model_is']}) "
        f"| {wall(r['wall_seconds'])} |"
    )

def mean_sd(xs):
    sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return f"{statistics.mean(xs):.2f} +- {sd:.2f}"


# Paired by seed: each method's final model against independent training's members' mean.
independent = {r["seed"]: r["members_mean"] for r in runs if r["method"] == "none"}

print()
print("| method | seeds | members mean | ensemble | uniform soup | final model | final - independent members (same seed) |")
print("|---|---|---|---|---|---|---|")
for method in dict.fromkeys(r["method"] for r in runs):
    rs = [r for r in runs if r["method"] == method]
    seeds = ", ".join(str(r["seed"]) for r in rs)
    gains = [r["final_model"] - independent[r["seed"]] for r in rs if r["seed"] in independent]
    print(
        f"| {method} | {seeds} | {mean_sd([r['members_mean'] for r in rs])} "
        f"| {mean_sd([r['ensemble'] for r in rs])} "
        f"| {mean_sd([r['uniform_soup']['plain'] for r in rs])} "
        f"| {mean_sd([r['final_model'] for r in rs])} "
        f"| {mean_sd(gains) if gains else 'n/a'} |"
    )
