#!/usr/bin/env python3
"""Population training in PyTorch on the GPU, for comparison with papa-cuda's engine (issue 18).

The small CNN (papa's cnn-s: conv3x3(32)-BN-ReLU-maxpool2, conv3x3(64)-BN-ReLU-maxpool2,
flatten, linear(128)-ReLU, linear(10); 1 x 28 x 28 inputs), batch 128 per member, soft-target
cross-entropy, SGD with momentum 0.9 and weight decay 1e-4, trained two ways PyTorch users
write it, timed with CUDA events on the same GPU at P = 1 to 64:
- loop: the reference PAPA code's for-loop, each member its own module and optimizer;
- vmap: torch.func (stack_module_state, functional_call, grad under vmap) and one foreach SGD
  over the stacked parameters. vmap cannot update BatchNorm's running statistics in place,
  so its BatchNorms use batch statistics without tracking them
  (torch.func.replace_all_batch_norm_modules_): slightly less work than papa's engine does.
TF32 is off (torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 =
False: PyTorch's default lets cuDNN convolutions use TF32); --tf32 turns both on.

    scripts/torch-train-bench.py [--steps S] [--tf32] [--json FILE] [--papa FILE]

With --papa (the output of papa-cuda's examples/train_bench), prints one table of all three
and papa's speed-up over vmap.
"""

import argparse
import json
import re
import sys

POPULATIONS = [1, 2, 4, 8, 16, 32, 64]


def small_cnn(nn):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def timed(torch, step, steps):
    """Milliseconds per step, after 3 warm-up steps."""
    for _ in range(3):
        step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / steps


def soft_ce(torch, logits, targets):
    return -(targets * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def loop_bench(torch, p, steps):
    nn = torch.nn
    models = [small_cnn(nn).cuda() for _ in range(p)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4) for m in models]
    x = torch.rand(p, 128, 1, 28, 28, device="cuda")
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (p, 128), device="cuda"), 10).float()

    def step():
        for j, (m, o) in enumerate(zip(models, opts)):
            o.zero_grad(set_to_none=True)
            soft_ce(torch, m(x[j]), y[j]).backward()
            o.step()

    return timed(torch, step, steps)


def vmap_bench(torch, p, steps):
    from torch.func import functional_call, grad, stack_module_state, replace_all_batch_norm_modules_

    nn = torch.nn
    models = [small_cnn(nn).cuda() for _ in range(p)]
    for m in models:
        replace_all_batch_norm_modules_(m)
    params, buffers = stack_module_state(models)
    base = small_cnn(nn).to("meta")
    replace_all_batch_norm_modules_(base)
    names = list(params)
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    x = torch.rand(p, 128, 1, 28, 28, device="cuda")
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (p, 128), device="cuda"), 10).float()

    def loss(prm, buf, xb, yb):
        return soft_ce(torch, functional_call(base, (prm, buf), (xb,)), yb)

    grads_of = torch.vmap(grad(loss), in_dims=(0, 0, 0, 0))

    def step():
        g = grads_of(params, buffers, x, y)
        ps, gs, vs = [params[k] for k in names], [g[k] for k in names], [velocity[k] for k in names]
        with torch.no_grad():
            d = torch._foreach_add(gs, ps, alpha=1e-4)
            torch._foreach_mul_(vs, 0.9)
            torch._foreach_add_(vs, d)
            torch._foreach_add_(ps, vs, alpha=-0.05)

    return timed(torch, step, steps)


def papa_figures(path):
    """{P: member-steps/s} from examples/train_bench's lines `P = 16: 1234.5 member-steps/s`."""
    figures = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"P =\s*(\d+):\s*([0-9.]+) member-steps/s", line)
            if m:
                figures[int(m.group(1))] = float(m.group(2))
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--papa")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("SKIP: no CUDA device for PyTorch")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0)
    print(f"PyTorch {torch.__version__} on {name}, cnn-s, batch 128, TF32 {'on' if args.tf32 else 'off'}")
    papa = papa_figures(args.papa) if args.papa else {}
    rows = []
    header = f"{'P':>3} {'loop':>10} {'vmap':>10}" + (f" {'papa':>10} {'papa/vmap':>9}" if papa else "")
    print(header + "   (member-steps/s)")
    for p in POPULATIONS:
        loop = p * 1000.0 / loop_bench(torch, p, args.steps)
        vmap = p * 1000.0 / vmap_bench(torch, p, args.steps)
        row = {"p": p, "loop": loop, "vmap": vmap}
        line = f"{p:>3} {loop:>10.1f} {vmap:>10.1f}"
        if p in papa:
            row["papa"] = papa[p]
            line += f" {papa[p]:>10.1f} {papa[p] / vmap:>8.2f}x"
        rows.append(row)
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "tf32": args.tf32, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
