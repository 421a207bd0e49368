#!/usr/bin/env python3
"""An ONNX model exported by `papa export`, checked by ONNX's own tools and run in onnxruntime.

1. `onnx.checker.check_model(full_check=True)` (the schema and shape inference) must pass;
2. onnxruntime's logits on the samples of INPUTS are compared with papa's (LOGITS): every
   logit within --tol (absolute), and the predictions equal except where papa's top-2
   margin is below --tol (a near-tie, whose order rounding may flip);
3. with --bench: latency at batch 1 (median of 200 samples) and throughput at batch 64.

An int8 export (`papa export --format onnx-int8`, metadata `papa.quantization`) is checked
otherwise: its accuracy within --max-drop points (default 1) of papa's f32 accuracy (needs
--labels), and, given --tract-logits (DIR/tract-logits.bin of onnx_compare on the same
file), onnxruntime's predictions equal to tract's on at least --min-agreement percent
(default 99.5) of the samples. onnxruntime runs it twice: with its integer kernels (the
default session, QDQ fused into QLinearConv and friends), whose accuracy is checked; and as
the graph is written (graph optimisations off: DequantizeLinear, the f32 op, QuantizeLinear),
which is what tract runs (fake quantisation) and what the agreement is checked on. The
integer kernels' agreement with tract is reported, not required: they requantise with their
own rounding and, on x86 without VNNI, their u8s8 dot products saturate (onnxruntime's
documented `reduce_range` caveat), so a model whose quantised logits are often tied (an
under-trained one) flips on a few percent of the samples (docs/DESIGN-NOTES.md).

INPUTS and LOGITS are what `cargo run --release -p papa-edge --example onnx_compare --
MODEL.safetensors MODEL.onnx --dump DIR` writes (DIR/inputs.bin, DIR/papa-logits.bin, and
DIR/labels.bin for --labels). Needs onnx, onnxruntime and numpy. Exit status 1 on a failed check.

    python scripts/onnx-check.py MODEL.onnx --inputs DIR/inputs.bin --logits DIR/papa-logits.bin \
        [--labels DIR/labels.bin] [--tract-logits DIR/tract-logits.bin] [--tol 1e-4] [--threads 1] [--bench]
"""

import argparse
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--inputs", required=True, help="f32 little-endian NCHW samples, as stored")
    ap.add_argument("--logits", required=True, help="papa's logits, f32 little-endian")
    ap.add_argument("--labels", help="u8 labels, to report the accuracy")
    ap.add_argument("--tract-logits", help="tract's logits on the same file (int8: agreement)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-drop", type=float, default=1.0, help="int8: accuracy points below f32")
    ap.add_argument("--min-agreement", type=float, default=99.5, help="int8: %% of predictions equal to tract's")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--bench", action="store_true")
    args = ap.parse_args()

    model = onnx.load(args.model)
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    (inp,) = model.graph.input
    (out,) = model.graph.output
    sample = [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    classes = out.type.tensor_type.shape.dim[1].dim_value
    print(f"{args.model}: onnx.checker passed (IR {model.ir_version}, opset {opset}); "
          f"input {inp.name} [batch, {', '.join(map(str, sample))}], output {out.name} [batch, {classes}]; "
          f"metadata {sorted(meta)}")

    x = np.fromfile(args.inputs, dtype="<f4").reshape([-1] + sample)
    papa = np.fromfile(args.logits, dtype="<f4").reshape(-1, classes)
    if len(x) != len(papa):
        sys.exit(f"{args.inputs} holds {len(x)} samples, {args.logits} {len(papa)}")

    def session(as_written):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        if as_written:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
        return lambda batch: s.run([out.name], {inp.name: batch})[0]

    def logits(run):
        return np.concatenate([run(x[i:i + 500]) for i in range(0, len(x), 500)])

    run = session(as_written=False)
    got = logits(run)

    int8 = "papa.quantization" in meta
    kind = "int8" if int8 else "f32"
    diff = float(np.max(np.abs(got - papa))) if len(x) else 0.0
    top2 = np.sort(papa, axis=1)[:, -2:]
    near_tie = (top2[:, 1] - top2[:, 0]) < args.tol
    differ = papa.argmax(1) != got.argmax(1)
    unexcused = int(np.sum(differ & ~near_tie))
    line = (f"onnxruntime {ort.__version__} ({kind}) vs papa (f32) on {len(x)} samples: max |logit difference| {diff:.3e}; "
            f"predictions differ on {int(differ.sum())} ({int(np.sum(differ & near_tie))} of them near-ties "
            f"of papa's top-2 margin < {args.tol:g}; {int(near_tie.sum())} such near-ties in all)")
    accuracy = None
    if args.labels:
        labels = np.fromfile(args.labels, dtype=np.uint8)
        accuracy = (100 * np.mean(papa.argmax(1) == labels), 100 * np.mean(got.argmax(1) == labels))
        line += f"; accuracy papa {accuracy[0]:.2f}%, onnxruntime {accuracy[1]:.2f}%"
    print(line)
    if int8:
        problems = []
        if accuracy is None:
            problems.append("--labels is needed to check an int8 export's accuracy")
        elif accuracy[0] - accuracy[1] > args.max_drop:
            problems.append(f"accuracy {accuracy[0] - accuracy[1]:.2f} points below f32 (> {args.max_drop:g})")
        if args.tract_logits:
            tract = np.fromfile(args.tract_logits, dtype="<f4").reshape(-1, classes)
            if len(tract) != len(x):
                sys.exit(f"{args.tract_logits} holds {len(tract)} samples, {args.inputs} {len(x)}")

            def against_tract(other):
                agree = 100 * float(np.mean(tract.argmax(1) == other.argmax(1))) if len(x) else 100.0
                return agree, float(np.max(np.abs(tract - other))) if len(x) else 0.0

            agree, gap = against_tract(got)
            print(f"int8: onnxruntime's integer kernels and tract (fake quantisation) predict alike on "
                  f"{agree:.2f}% of the samples (max |logit difference| {gap:.3e}); reported, not required")
            agree, gap = against_tract(logits(session(as_written=True)))
            print(f"int8: onnxruntime running the QDQ graph as written and tract predict alike on {agree:.2f}% "
                  f"of the samples (max |logit difference| {gap:.3e}); at least {args.min_agreement:g}% required")
            if agree < args.min_agreement:
                problems.append(f"onnxruntime (QDQ as written) and tract agree on {agree:.2f}% < {args.min_agreement:g}%")
        ok = not problems
        for p in problems:
            print(f"FAIL: {p}")
    else:
        ok = diff <= args.tol and unexcused == 0
        if not ok:
            print(f"FAIL: logits differ by more than {args.tol:g} or {unexcused} predictions differ outside near-ties")

    if args.bench:
        run(x[:1])
        times = []
        for i in range(min(200, len(x))):
            t = time.perf_counter()
            run(x[i:i + 1])
            times.append(time.perf_counter() - t)
        latency = sorted(times)[len(times) // 2]
        run(x[:64])
        t = time.perf_counter()
        for i in range(0, len(x), 64):
            run(x[i:i + 64])
        throughput = len(x) / (time.perf_counter() - t)
        print(f"| onnxruntime {ort.__version__} ({kind}) | {args.threads} | {latency * 1e6:.1f} | {throughput:.0f} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
