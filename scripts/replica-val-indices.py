#!/usr/bin/env python3
"""Writes configs/replica-val-indices.txt: the PyTorch replica's validation split, the first
5,000 of numpy's default_rng(666).permutation(60000), in that order, one 0-based index into
the Fashion-MNIST training file per line. papa reads it through `val_indices` (see
configs/replica.toml) rather than re-implementing numpy's generator (PCG64 and its
permutation algorithm).

    python3 -m venv /tmp/npvenv && /tmp/npvenv/bin/pip install numpy
    /tmp/npvenv/bin/python scripts/replica-val-indices.py
"""
import os

import numpy

SEED, SAMPLES, VAL = 666, 60000, 5000

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                   "replica-val-indices.txt")
indices = numpy.random.default_rng(SEED).permutation(SAMPLES)[:VAL]
with open(out, "w") as f:
    f.write("".join(f"{i}\n" for i in indices))
print(f"{os.path.normpath(out)}: {len(indices)} indices, numpy {numpy.__version__}")
