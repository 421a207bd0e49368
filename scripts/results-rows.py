#!/usr/bin/env python3
"""Prints docs/RESULTS.md table rows from the results.json of the runs named, so that the
document is copied from the runs, never typed:

    scripts/results-rows.py runs/fmnist-cnn-s-p5-e12-s*/results.json

then one row per method: mean and standard deviation over the runs (seeds) given.
"""
import json
import statistics
import sys


def pct(x):
    return f"{x:.2f}"


runs = [r for path in sys.argv[1:] for r in json.load(open(path))["results"]]
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
        f"| {round(r['wall_seconds'] / 60)} min |"
    )

print()
print("| method | seeds | members mean | ensemble | final model |")
print("|---|---|---|---|---|")
for method in dict.fromkeys(r["method"] for r in runs):
    rs = [r for r in runs if r["method"] == method]

    def stat(key):
        xs = [r[key] for r in rs]
        sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
        return f"{statistics.mean(xs):.2f} +- {sd:.2f}"

    seeds = ", ".join(str(r["seed"]) for r in rs)
    print(f"| {method} | {seeds} | {stat('members_mean')} | {stat('ensemble')} | {stat('final_model')} |")
