#!/usr/bin/env python3
"""Issue 12's comparison of each method's variants, copied from the runs' results.json:

    scripts/variant-choice.py [RUN_DIR ...]
        (default: runs/fmnist-cnn-s-p5-e12-s* and the records scripts/keep-runs.sh keeps
        in docs/runs/, a run in runs/ taken first)

A run directory is named as scripts/paper-comparison.sh names it:
fmnist-cnn-s-p5-e12-s<seed>-<method>[-<variant>], the variant being the config file layered
over configs/paper.toml (none: papa's own schedule, separate initialisations).

Prints, per method and variant: the final model on test and on validation (mean +- std over
seeds), its gains over the independent members' mean and over independent training's final
model of the same seed (the `none` run of the same initialisation, so the comparison stays
paired), then each method's default variant:
the one whose final model has the best mean VALIDATION accuracy over the seeds every variant
of that method has run (test never decides); a variant with fewer than 3 seeds is listed as
not compared yet. Last, the diversity per epoch, mean over seeds.
"""
import glob
import json
import os
import re
import statistics
import sys

NAME = re.compile(r"fmnist-cnn-s-p5-e12-s(\d+)-(none|papa-all|papa-2|papa)(?:-(.+))?$")
ORDER = ["none", "papa", "papa-all", "papa-2"]
# `none` and `papa` do not depend on the schedule of PAPA-all and PAPA-2: only the
# initialisation tells their variants apart.
SCHEDULE_FREE = {"none", "papa"}


def same_init(variant):
    return variant.endswith("same-init")


def label(method, variant):
    init = "same init" if same_init(variant) else "separate inits"
    if method in SCHEDULE_FREE:
        return init
    schedule = "paper schedule" if variant.startswith("paper-schedule") else "papa's schedule"
    return f"{schedule}, {init}"


def load(dirs):
    runs = []
    for d in dirs:
        m = NAME.match(os.path.basename(os.path.normpath(d)))
        path = os.path.join(d, "results.json")
        if not m or not os.path.isfile(path):
            continue
        seed, method, variant = int(m[1]), m[2], m[3] or ""
        for r in json.load(open(path))["results"]:
            assert r["method"] == method and r["seed"] == seed, f"{path} holds another run"
            runs.append(dict(r, variant=variant, label=label(method, variant)))
    return runs


def mean_sd(xs):
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return f"{statistics.mean(xs):.2f} +- {sd:.2f}"


def signed(xs):
    return ", ".join(f"{x:+.2f}" for x in xs)


def validation(r):
    return (r.get("validation") or {}).get("final_model")


def main():
    dirs = sys.argv[1:]
    if not dirs:
        by_name = {}
        for d in glob.glob("docs/runs/fmnist-cnn-s-p5-e12-s*") + glob.glob("runs/fmnist-cnn-s-p5-e12-s*"):
            if os.path.isfile(os.path.join(d, "results.json")):
                by_name[os.path.basename(d)] = d
        dirs = sorted(by_name.values())
    runs = load(dirs)
    # Independent training per (seed, initialisation): what a variant is paired with.
    independent = {(r["seed"], same_init(r["variant"])): r
                   for r in runs if r["method"] == "none"}
    cells = {}
    for r in sorted(runs, key=lambda r: (ORDER.index(r["method"]), r["label"], r["seed"])):
        cells.setdefault((r["method"], r["label"]), {})[r["seed"]] = r

    print("| method | variant | seeds (CPU path) | final model (test) | final model (validation) "
          "| members mean (test) | final - independent members, same seed and init (per seed) "
          "| final - independent training's final model (per seed) |")
    print("|---|---|---|---|---|---|---|---|")
    for (method, lab), by_seed in cells.items():
        rs = list(by_seed.values())
        vals = [validation(r) for r in rs if validation(r) is not None]
        pairs = [(r, independent[(r["seed"], same_init(r["variant"]))])
                 for r in rs if (r["seed"], same_init(r["variant"])) in independent]
        gains = [r["final_model"] - ind["members_mean"] for r, ind in pairs]
        over_final = [r["final_model"] - ind["final_model"] for r, ind in pairs]
        val_seeds = "" if len(vals) == len(rs) else f" ({len(vals)} of {len(rs)} seeds)"
        # The CPU path decides the bits (DESIGN-NOTES, "Bits per path"): shown beside each seed.
        seeds = ", ".join(f"{s} ({r['cpu_path']})" for s, r in by_seed.items())
        print(f"| {method} | {lab} | {seeds} "
              f"| {mean_sd([r['final_model'] for r in rs])} | {mean_sd(vals)}{val_seeds} "
              f"| {mean_sd([r['members_mean'] for r in rs])} "
              f"| {mean_sd(gains)} ({signed(gains)}) "
              f"| {mean_sd(over_final)} ({signed(over_final)}) |")

    print("\nDefault variant per method, on validation only:")
    for method in ORDER:
        variants = {lab: s for (m, lab), s in cells.items() if m == method}
        if not variants:
            continue
        validated = {lab: {seed for seed, r in v.items() if validation(r) is not None}
                     for lab, v in variants.items()}
        have = {lab: f"{lab}: seeds {sorted(seeds)}" for lab, seeds in validated.items()}
        # A variant still running joins the choice once it has 3 seeds; until then the choice
        # stands among the complete ones and says what it has not compared yet.
        complete = {lab: seeds for lab, seeds in validated.items() if len(seeds) >= 3}
        seeds = set.intersection(*complete.values()) if complete else set()
        if len(complete) < 2 or len(seeds) < 3:
            print(f"- {method}: not chosen, fewer than 2 variants with 3 common seeds"
                  f" ({'; '.join(have.values())})")
            continue
        pending = "; ".join(have[lab] for lab in validated if lab not in complete)
        pending = f"; not compared yet, fewer than 3 seeds: {pending}" if pending else ""
        scores = {lab: statistics.mean(validation(variants[lab][s]) for s in seeds) for lab in complete}
        best = max(scores, key=scores.get)
        listed = ", ".join(f"{lab} {score:.2f}" for lab, score in scores.items())
        print(f"- {method}: {best} (mean validation over seeds {sorted(seeds)}: {listed}{pending})")

    print("\nPer epoch, mean over seeds: members' test accuracy / the uniform average's /"
          " mean distance to the mean / mean pairwise cosine")
    for (method, lab), by_seed in cells.items():
        histories = [r["history"] for r in by_seed.values()]
        print(f"\n{method}, {lab} (seeds {', '.join(str(s) for s in by_seed)})")
        for rows in zip(*histories):
            members = statistics.mean(statistics.mean(h["member_test_acc"]) for h in rows)
            average = statistics.mean(h["average_test_acc"] for h in rows)
            distance = statistics.mean(statistics.mean(h["distance_to_mean"]) for h in rows)
            cosine = statistics.mean(h["mean_pairwise_cosine"] for h in rows)
            print(f"| {rows[0]['epoch'] + 1} | {members:.2f} / {average:.2f} / "
                  f"{distance:.3f} / {cosine:.4f} |")


main()
