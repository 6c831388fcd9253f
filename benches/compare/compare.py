"""Side-by-side latency of NASNet-A on one machine, in one run: nasnet's backends (through
`cargo run --release --example latency`), ONNX Runtime's Python package on nasnet's exported
ONNX and on the ONNX that `torch.onnx.export` produces from the same weights, and PyTorch
eager. Prints a table and the ratios to ONNX Runtime on the torch-exported graph.

  python benches/compare/compare.py --arch nasnet-a-mobile [--threads 2] [--runs 30]

Needs: onnxruntime, torch, pretrainedmodels (Mobile) or timm (Large), numpy, safetensors
(scripts/reference/requirements.txt plus onnxruntime). Not part of `cargo test`.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def median_ms(fn, runs):
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def cadene_key(k, cells):
    m = re.match(r"cell_(\d+)(\..*)", k)
    if not m:
        return k
    i = int(m.group(1))
    return f"cell_{(i // cells) * 6 + i % cells}{m.group(2)}"


def torch_model(arch, weights):
    import torch
    from safetensors.numpy import load_file

    sd = load_file(weights)
    if arch == "nasnet-a-mobile":
        import pretrainedmodels.models.nasnet_mobile as m

        net = m.NASNetAMobile(num_classes=1000)
        sd = {cadene_key(k, 4): v for k, v in sd.items()}
    else:
        import timm

        net = timm.create_model("nasnetalarge", pretrained=False, num_classes=1000)
    missing = net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert not [k for k in missing.missing_keys if "num_batches" not in k], missing
    return net.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="nasnet-a-mobile", choices=["nasnet-a-mobile", "nasnet-a-large"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp()
    model_dir = os.path.join(tmp, "model")
    nasnet = os.path.join(ROOT, "target", "release", "nasnet")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nasnet-cli"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "--example", "latency"], cwd=ROOT, check=True)
    subprocess.run([nasnet, "synthetic", "--arch", args.arch, "-o", model_dir], check=True)
    with open(os.path.join(model_dir, "model.json")) as f:
        size = json.load(f)["preprocessing"]["crop"]
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, size, size)).astype(np.float32)

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    ours = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])
    net = torch_model(args.arch, os.path.join(model_dir, "model.safetensors"))
    exported = os.path.join(tmp, "torch.onnx")
    torch.onnx.export(net, torch.from_numpy(x), exported, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    theirs = ort.InferenceSession(exported, so, providers=["CPUExecutionProvider"])
    xt = torch.from_numpy(x)

    def rust(backend):
        out = subprocess.run(
            ["cargo", "run", "--release", "-q", "--example", "latency", "--", model_dir, backend,
             str(args.batch), str(args.runs), str(args.threads)],
            cwd=ROOT, capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]

    def eager():
        with torch.inference_mode():
            return median_ms(lambda: net(xt), args.runs)

    stacks = [
        ("nasnet ort", lambda: rust("ort")),
        ("nasnet tract", lambda: rust("tract")),
        ("nasnet candle", lambda: rust("candle")),
        ("onnxruntime-python, nasnet ONNX", lambda: median_ms(lambda: ours.run(None, {"image": x}), args.runs)),
        ("onnxruntime-python, torch.onnx.export ONNX", lambda: median_ms(lambda: theirs.run(None, {"x": x}), args.runs)),
        ("pytorch eager", eager),
    ]
    # Machines drift by tens of percent over minutes: measure the stacks in interleaved rounds
    # and keep each stack's median over the rounds.
    results = {name: [] for name, _ in stacks}
    for _ in range(args.rounds):
        for name, fn in stacks:
            try:
                results[name].append(fn())
            except Exception as e:  # a missing backend is reported, not fatal
                print(f"{name}: {e}", file=sys.stderr)
    rows = [{"stack": n, "median_ms": statistics.median(v)} for n, v in results.items() if v]

    base = next(r["median_ms"] for r in rows if "torch.onnx" in r["stack"])
    print(f"{args.arch}, batch {args.batch}, {args.threads} threads, median of {args.rounds} rounds of {args.runs} runs")
    print(f"{'stack':45} {'ms':>9} {'img/s':>8} {'vs ORT/torch-ONNX':>18}")
    for r in rows:
        ms = r["median_ms"]
        print(f"{r['stack']:45} {ms:9.2f} {args.batch * 1e3 / ms:8.2f} {ms / base:17.2f}x")


if __name__ == "__main__":
    main()
