#!/usr/bin/env python3
"""PAPA's rules in PyTorch on the GPU, for comparison with papa-cuda's kernels (issue 17).

Two ways PyTorch users write them, timed with CUDA events on the same GPU:
- flat: the population as one [P, N] float32 tensor (N = 11,190,000 by default);
- loop: the reference code's per-tensor state-dict loop, P state dicts of a CIFAR ResNet-18
  (102 float tensors, 11,183,562 floats, and 20 counters that take the max).
Also the device-to-device copy of the [P, N] tensor: the bandwidth everything is held to.

    scripts/torch-rules-bench.py [--members P] [--len N] [--reps R] [--json FILE]
                                 [--papa-cuda FILE]

With --papa-cuda (the JSON of papa-cuda's examples/rules_bench), prints one table of both.
"""

import argparse
import json
import sys


def resnet18_shapes(classes=10):
    """The state dict of a CIFAR ResNet-18 (3x3 stem, no max pool): (name, shape, counter)."""
    shapes = []

    def bn(name, c):
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes.append((f"{name}.{part}", (c,), False))
        shapes.append((f"{name}.num_batches_tracked", (), True))

    shapes.append(("conv1.weight", (64, 3, 3, 3), False))
    bn("bn1", 64)
    inp = 64
    for layer, (out, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        for block in range(2):
            name = f"layer{layer}.{block}"
            first_in = inp if block == 0 else out
            shapes.append((f"{name}.conv1.weight", (out, first_in, 3, 3), False))
            bn(f"{name}.bn1", out)
            shapes.append((f"{name}.conv2.weight", (out, out, 3, 3), False))
            bn(f"{name}.bn2", out)
            if block == 0 and (stride != 1 or inp != out):
                shapes.append((f"{name}.shortcut.0.weight", (out, inp, 1, 1), False))
                bn(f"{name}.shortcut.1", out)
        inp = out
    shapes.append(("linear.weight", (classes, 512), False))
    shapes.append(("linear.bias", (classes,), False))
    return shapes


def timed(torch, reps, op):
    """Milliseconds per call of op: 3 untimed calls, then reps timed back to back."""
    for _ in range(3):
        op()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        op()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def bench(args):
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("torch-rules-bench: PyTorch sees no GPU")
    dev = torch.device("cuda")
    p, n, reps = args.members, args.len, args.reps
    alpha = 0.99
    gen = torch.Generator(device=dev).manual_seed(0)
    pop = torch.rand((p, n), generator=gen, device=dev) - 0.5
    dst = torch.empty_like(pop)
    weights = torch.full((p, 1), 1.0 / p, device=dev)
    pairs = torch.randint(0, p, (p, 2), generator=gen, device=dev)
    a, b = pairs[:, 0].clone(), pairs[:, 1].clone()
    ops = {}
    ops["device copy"] = timed(torch, reps, lambda: dst.copy_(pop))

    def gradual_flat():
        mean = pop.mean(0, keepdim=True)
        pop.mul_(alpha).add_(mean, alpha=1 - alpha)

    def all_flat():
        pop.copy_(pop.mean(0, keepdim=True).expand_as(pop))

    def weighted_all_flat():
        pop.copy_((pop * weights).sum(0, keepdim=True).expand_as(pop))

    def pairs_flat():
        pop.copy_((pop[a] + pop[b]) * 0.5)

    ops["gradual (uniform), flat"] = timed(torch, reps, gradual_flat)
    ops["PAPA-all, flat"] = timed(torch, reps, all_flat)
    ops["PAPA-all (weights), flat"] = timed(torch, reps, weighted_all_flat)
    ops["PAPA-2, flat"] = timed(torch, reps, pairs_flat)
    ops["average, flat"] = timed(torch, reps, lambda: pop.mean(0))
    del pop, dst
    torch.cuda.empty_cache()

    shapes = resnet18_shapes()
    members = []
    for _ in range(p):
        sd = {}
        for name, shape, counter in shapes:
            if counter:
                sd[name] = torch.zeros(shape, dtype=torch.long, device=dev)
            else:
                sd[name] = torch.rand(shape, generator=gen, device=dev) - 0.5
        members.append(sd)
    floats = sum(t.numel() for t in members[0].values() if t.is_floating_point())
    pairs_host = pairs.tolist()

    # The reference code's loops: one tensor at a time, a few small kernels per tensor.
    def gradual_loop():
        with torch.no_grad():
            for name in members[0]:
                if not members[0][name].is_floating_point():
                    top = torch.stack([m[name] for m in members]).max()
                    for m in members:
                        m[name].fill_(top)
                    continue
                avg = sum(m[name] for m in members) / p
                for m in members:
                    m[name].mul_(alpha).add_(avg, alpha=1 - alpha)

    def all_loop():
        with torch.no_grad():
            for name in members[0]:
                if not members[0][name].is_floating_point():
                    continue
                avg = sum(m[name] for m in members) / p
                for m in members:
                    m[name].copy_(avg)

    def pairs_loop():
        with torch.no_grad():
            for name in members[0]:
                if not members[0][name].is_floating_point():
                    continue
                children = [(members[i][name] + members[j][name]) * 0.5 for i, j in pairs_host]
                for m, child in zip(members, children):
                    m[name].copy_(child)

    loop_reps = max(1, reps // 5)
    ops["gradual (uniform), loop"] = timed(torch, loop_reps, gradual_loop)
    ops["PAPA-all, loop"] = timed(torch, loop_reps, all_loop)
    ops["PAPA-2, loop"] = timed(torch, loop_reps, pairs_loop)
    return {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "members": p,
        "len": n,
        "loop_floats_per_member": floats,
        "reps": reps,
        "ms": ops,
    }


# papa-cuda's names (examples/rules_bench) and PyTorch's flat and loop counterparts.
ROWS = [
    ("device copy", "device copy", None),
    ("gradual (uniform)", "gradual (uniform), flat", "gradual (uniform), loop"),
    ("gradual (weights)", None, None),
    ("PAPA-all", "PAPA-all, flat", "PAPA-all, loop"),
    ("PAPA-all (weights)", "PAPA-all (weights), flat", None),
    ("PAPA-2", "PAPA-2, flat", "PAPA-2, loop"),
    ("average", "average, flat", None),
]


def table(torch_result, papa):
    """One short table: papa-cuda's ms and share of its copy, PyTorch's flat and loop ms."""
    ours = {op["name"]: op for op in papa["ops"]} if papa else {}
    ms = torch_result["ms"]
    lines = [
        f"{torch_result['device']}, {torch_result['members']} x {torch_result['len']} floats; "
        f"PyTorch {torch_result['torch']} (loop: CIFAR ResNet-18 state dicts, "
        f"{torch_result['loop_floats_per_member']} floats each)",
        f"{'rule':<20} {'papa-cuda ms':>12} {'of copy':>8} {'torch flat ms':>13} {'torch loop ms':>13}",
    ]

    def cell(value, fmt):
        return format(value, fmt) if value is not None else "-"

    for name, flat, loop in ROWS:
        op = ours.get(name)
        lines.append(
            f"{name:<20} {cell(op and op['ms'], '12.3f'):>12} "
            f"{cell(op and 100 * op['of_copy'], '7.1f') + ('%' if op else ''):>8} "
            f"{cell(ms.get(flat) if flat else None, '13.3f'):>13} "
            f"{cell(ms.get(loop) if loop else None, '13.2f'):>13}"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--len", type=int, default=11_190_000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--json", help="write the timings here")
    parser.add_argument("--papa-cuda", help="papa-cuda's rules_bench JSON, for one table")
    args = parser.parse_args()
    result = bench(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    papa = None
    if args.papa_cuda:
        try:
            with open(args.papa_cuda) as f:
                papa = json.load(f)
        except (OSError, ValueError) as e:
            print(f"torch-rules-bench: no papa-cuda figures ({e})", file=sys.stderr)
    print(table(result, papa))


if __name__ == "__main__":
    main()
