"""One benchmark run, one report: writes docs/benchmarks.md and docs/benchmarks.svg.

  python benches/report.py [--threads 2] [--runs 20] [--rounds 3] [--skip-large]
  python benches/report.py --photos-only   # Mobile: inference and classify end to end, printed
  python benches/report.py --int8-only [--fashion-mnist DIR]   # the quantized forms, printed

In one run on one machine it measures, for NASNet-A Mobile and Large on synthetic weights:
batch 1 latency and batch 8 throughput of nasnet's backends (ort, tract, candle) beside ONNX
Runtime's Python package on the same ONNX and, where PyTorch is installed (with
pretrainedmodels for Mobile, timm for Large), on the graph `torch.onnx.export` writes and
PyTorch eager; then `nasnet classify` end to end on ten 640x480 and ten 12 MP JPEGs per
backend (per image, and as a ratio to the same backend's inference), `nasnet classify` from
start to first result (second start on), peak RSS, and the C library as apps get it: each
configuration's size, gzip size, Mobile batch-1 latency and open to first result
(benches/library.py); and the quantized forms `nasnet quantize` writes (int8, int8 weights,
float16 weights) beside fp32: Mobile's batch 1 latency and batch 8 throughput on ort and tract
and its file size, and with --fashion-mnist DIR the bundled Fashion-MNIST model's test top-1
quantized with 1,000 training images. Every figure that is compared is a ratio between runs made here, in
interleaved rounds: the absolute speed of a machine drifts by tens of percent between runs.

Needs: numpy, onnxruntime, pillow, matplotlib (benches/requirements.txt); torch,
pretrainedmodels and timm are optional. Not part of `cargo test`.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "benches", "compare"))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from compare import median_ms, torch_model  # noqa: E402  (the same timing as compare.py)
NASNET = os.path.join(ROOT, "target", "release", "nasnet")
LATENCY = os.path.join(ROOT, "target", "release", "examples", "latency")
PHOTO = os.path.join(ROOT, "tests", "fixtures", "images", "phone12mp.jpg")
ARCHS = {"mobile": "nasnet-a-mobile", "large": "nasnet-a-large"}
BACKENDS = ["ort", "tract", "candle"]


def cargo(*args):
    subprocess.run(["cargo", *args], cwd=ROOT, check=True)


def timed(cmd):
    """Wall seconds and peak RSS (MiB) of a command, which must succeed. The RSS comes from
    GNU time (`/usr/bin/time`): a child forked from this Python process starts with its
    resident pages counted, so the rusage of os.wait4 would report this process's size."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    with tempfile.NamedTemporaryFile("r") as rss:
        full = [gnu_time, "-f", "%M", "-o", rss.name] + cmd if gnu_time else cmd
        t = time.perf_counter()
        p = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.decode()}")
        text = rss.read().strip()
    return wall, (int(text.splitlines()[-1]) / 1024 if text else float("nan"))


def nasnet_latency(model_dir, backend, batch, runs, threads):
    out = subprocess.run([LATENCY, model_dir, backend, str(batch), str(runs), str(threads)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def torch_stacks(arch, model_dir, x, threads, runs):
    """PyTorch eager and ONNX Runtime on torch's export, when PyTorch is installed."""
    try:
        import torch
        net = torch_model(ARCHS[arch], os.path.join(model_dir, "model.safetensors"))
    except Exception as e:  # PyTorch or the reference packages are optional
        print(f"PyTorch stacks skipped: {e}", file=sys.stderr)
        return {}
    import onnxruntime as ort
    torch.set_num_threads(threads)

    def eager(batch):
        xt = torch.from_numpy(x[:batch])
        with torch.inference_mode():
            return median_ms(lambda: net(xt), runs)

    stacks = {f"PyTorch {torch.__version__.split('+')[0]} eager": eager}
    exported = os.path.join(model_dir, "torch.onnx")
    try:
        torch.onnx.export(net, torch.from_numpy(x[:1]), exported, input_names=["x"],
                          output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    except Exception as e:  # torch's exporter needs the onnx package
        print(f"torch.onnx.export skipped: {e}", file=sys.stderr)
        return stacks
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    theirs = ort.InferenceSession(exported, so, providers=["CPUExecutionProvider"])
    stacks["ONNX Runtime Python, torch.onnx.export graph"] = \
        lambda b: median_ms(lambda: theirs.run(None, {"x": x[:b]}), runs)
    return stacks


def inference(arch, model_dir, args):
    """{stack: {batch: ms}} over interleaved rounds."""
    import onnxruntime as ort
    with open(os.path.join(model_dir, "model.json")) as f:
        size = json.load(f)["preprocessing"]["crop"]
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3, size, size)).astype(np.float32)
    runs = args.runs if arch == "mobile" else max(3, args.runs // 4)
    stacks = {f"nasnet {b}": (lambda b: lambda batch: nasnet_latency(model_dir, b, batch, runs, args.threads))(b)
              for b in BACKENDS}
    # In a process of its own, as nasnet's stacks are: ONNX Runtime's threads spin after a
    # run, and spinning threads left in this process would slow the next stack measured.
    def ort_python(batch):
        out = subprocess.run([sys.executable, __file__, "--ort-python", model_dir, str(batch),
                              str(runs), str(args.threads)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip()[-300:])
        return float(out.stdout.strip().splitlines()[-1])

    stacks[f"ONNX Runtime {ort.__version__} Python, nasnet's ONNX"] = ort_python
    stacks.update(torch_stacks(arch, model_dir, x, args.threads, runs))
    results = {name: {1: [], 8: []} for name in stacks}
    for _ in range(args.rounds):
        for name, fn in stacks.items():
            for batch in (1, 8):
                try:
                    results[name][batch].append(fn(batch))
                except Exception as e:  # a missing backend is reported, not fatal
                    print(f"{arch} {name} batch {batch}: {e}", file=sys.stderr)
    return {n: {b: statistics.median(v) for b, v in r.items() if v} for n, r in results.items()}


def photos(tmp):
    """Ten 12 MP JPEGs (the test photo) and ten 640x480 ones made from it."""
    from PIL import Image
    sets = {"12mp": os.path.join(tmp, "12mp"), "vga": os.path.join(tmp, "vga")}
    for d in sets.values():
        os.makedirs(d)
    vga = Image.open(PHOTO).resize((640, 480), Image.LANCZOS)
    for i in range(10):
        shutil.copy(PHOTO, os.path.join(sets["12mp"], f"{i}.jpg"))
        vga.save(os.path.join(sets["vga"], f"{i}.jpg"), quality=90)
    return sets


def end_to_end(model_dir, sets, args):
    """Per backend: classify's cost per image (ten images minus one), peak RSS, start to first
    result (the second of two starts)."""
    out = {}
    for backend in ["ort", "tract"]:
        base = [NASNET, "classify", "--model", model_dir, "--backend", backend,
                "--batch-size", "1", "--threads", str(args.threads)]
        row = {}
        for name, d in sets.items():
            one, many, rss = [], [], []
            for _ in range(args.rounds):
                one.append(timed(base + [os.path.join(d, "0.jpg")])[0])
                w, r = timed(base + [d])
                many.append(w)
                rss.append(r)
            row[name] = (statistics.median(many) - statistics.median(one)) * 1e3 / 9
            row[f"{name}_rss"] = max(rss)
        timed(base + [os.path.join(sets["vga"], "0.jpg")])
        row["first"] = statistics.median(
            timed(base + [os.path.join(sets["vga"], "0.jpg")])[0] for _ in range(args.rounds))
        out[backend] = row
    return out


def library(model_dir, args):
    """The C library's configurations (benches/library.py) on the Mobile model, with its NNEF
    form written beside its ONNX graph."""
    import library as lib
    subprocess.run([NASNET, "export", "--model", model_dir, "--format", "nnef", "-o",
                    os.path.join(model_dir, "model.nnef.tar")], check=True, stderr=subprocess.DEVNULL)
    return lib.table(model_dir, args.runs, args.threads, args.rounds)


def chart(results, path):
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    archs = list(results)
    fig, axes = plt.subplots(1, len(archs), figsize=(6 * len(archs), 3.6))
    axes = np.atleast_1d(axes)
    for ax, arch in zip(axes, archs):
        rows = sorted(results[arch].items(), key=lambda kv: kv[1].get(1, 1e9))
        names = [n for n, _ in rows]
        ms = [r.get(1, 0) for _, r in rows]
        ax.barh(names, ms, color=["#3b6ea8" if n.startswith("nasnet") else "#999999" for n in names])
        ax.invert_yaxis()
        ax.set_xlabel("ms per image, batch 1 (lower is better)")
        ax.set_title(f"NASNet-A {arch.capitalize()}")
        for y, v in enumerate(ms):
            ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def report(inf, e2e, lib_rows, int8_lines, args, took):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python benches/report.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
        f"on {datetime.date.today()}: {os.cpu_count()} cores ({cpu}), {args.threads} threads, "
        f"synthetic weights, median of {args.rounds} interleaved rounds; the run took "
        f"{took / 60:.0f} minutes. Compare ratios, not milliseconds: a machine's speed drifts "
        "between runs.",
        "",
        "![batch 1 latency](benchmarks.svg)",
        "",
    ]
    for arch, rows in inf.items():
        ref_name = next((n for n in rows if "torch.onnx" in n), None) or \
            next(n for n in rows if "Python" in n)
        ref = rows[ref_name]
        lines += [f"## NASNet-A {arch.capitalize()}: inference", "",
                  f"Ratios are to {ref_name}.", "",
                  "| stack | batch 1, ms | ratio | batch 8, images/s | ratio |",
                  "|---|---|---|---|---|"]
        for name, r in sorted(rows.items(), key=lambda kv: kv[1].get(1, 1e9)):
            b1 = f"{r[1]:.1f} | {r[1] / ref[1]:.2f}x" if 1 in r else "- | -"
            b8 = f"{8e3 / r[8]:.1f} | {ref[8] / r[8]:.2f}x" if 8 in r else "- | -"
            lines.append(f"| {name} | {b1} | {b8} |")
        lines.append("")
    if e2e:
        mobile = inf["mobile"]
        lines += ["## NASNet-A Mobile: `nasnet classify` end to end", "",
                  "Per image, batch size 1: ten images minus one, so the model's opening is not "
                  "counted; the ratio is to the same backend's batch 1 inference above. Start to "
                  "first result: one 640x480 image, from the second start on (the file cache "
                  "warm).", "",
                  "| backend | 640x480 JPEG, ms | ratio | 12 MP JPEG, ms | ratio | start to first result, s | peak RSS (12 MP), MiB |",
                  "|---|---|---|---|---|---|---|"]
        for backend, r in e2e.items():
            inf_ms = mobile[f"nasnet {backend}"][1]
            lines.append(f"| {backend} | {r['vga']:.1f} | {r['vga'] / inf_ms:.2f}x | {r['12mp']:.1f} | "
                         f"{r['12mp'] / inf_ms:.2f}x | {r['first']:.2f} | {r['12mp_rss']:.0f} |")
        lines.append("")
    if lib_rows:
        import library as lib
        lines += ["## The C library", "",
                  "`libnasnet.so` as apps get it: `cargo build --profile mobile -p nasnet-bindings "
                  "--no-default-features --features FEATURES` (fat LTO, one codegen unit, size-optimized "
                  "graph code with the kernels at opt-level 3, stripped). Latency is "
                  "`nasnet_classify_tensor` on Mobile through ctypes, the ratio to the first row; open "
                  "to first result from the second open on (the ONNX row's prepared-model cache warm). "
                  "The ONNX rows open `model.onnx`, the NNEF rows `model.nnef.tar`.", "",
                  *lib.markdown(lib_rows), ""]
    lines += int8_lines
    lines += summary(inf, e2e)
    return "\n".join(lines)


def summary(inf, e2e):
    """The ratios the runtime is held to, from this run."""
    rows = []
    for arch, r in inf.items():
        tract, ort_ = r.get("nasnet tract", {}), r.get("nasnet ort", {})
        if 1 in tract and 1 in ort_:
            rows.append(f"| tract / nasnet ort, {arch.capitalize()}, batch 1 | "
                        f"{tract[1] / ort_[1]:.2f}x |")
        ref = next((n for n in r if "torch.onnx" in n), None)
        for batch in (1, 8):
            if ref and batch in r[ref] and batch in ort_:
                rows.append(f"| nasnet ort / {ref}, {arch.capitalize()}, batch {batch} | "
                            f"{ort_[batch] / r[ref][batch]:.2f}x |")
    if e2e and "mobile" in inf:
        for backend, e in e2e.items():
            inf_ms = inf["mobile"].get(f"nasnet {backend}", {}).get(1)
            if inf_ms:
                rows.append(f"| classify per 12 MP JPEG / inference, {backend} | "
                            f"{e['12mp'] / inf_ms:.2f}x |")
                rows.append(f"| classify per 640x480 JPEG / inference, {backend} | "
                            f"{e['vga'] / inf_ms:.2f}x |")
        rows += [f"| start to first result, {b} | {e['first']:.2f} s |" for b, e in e2e.items()]
        rows += [f"| peak RSS on 12 MP JPEGs, {b} | {e['12mp_rss']:.0f} MiB |" for b, e in e2e.items()]
    if not rows:
        return []
    return ["## In short", "", "| measure | this run |", "|---|---|", *rows, ""]


def ort_python_latency(model_dir, batch, runs, threads):
    """Median ms of ONNX Runtime's Python package on nasnet's ONNX (run as a child process)."""
    import onnxruntime as ort
    with open(os.path.join(model_dir, "model.json")) as f:
        size = json.load(f)["preprocessing"]["crop"]
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so,
                             providers=["CPUExecutionProvider"])
    print(median_ms(lambda: s.run(None, {"image": x}), runs))


PRECISIONS = ["fp32", "int8", "int8-weights", "f16-weights"]


def quantized_forms(model_dir, tmp):
    """Mobile in each precision: {precision: model directory}; int8 calibrated on the test
    photos."""
    forms = {"fp32": model_dir}
    for p in PRECISIONS[1:]:
        out = os.path.join(tmp, f"mobile-{p}")
        cmd = [NASNET, "quantize", "-q", "--model", model_dir, "--precision", p, "-o", out]
        if p == "int8":
            cmd += ["--calibrate", os.path.dirname(PHOTO)]
        subprocess.run(cmd, check=True)
        forms[p] = out
    return forms


def weights_bytes(model_dir):
    """The size of the file that holds a model directory's weights."""
    with open(os.path.join(model_dir, "model.json")) as f:
        return os.path.getsize(os.path.join(model_dir, json.load(f)["weights"]["file"]))


def int8_latency(forms, args):
    """{(precision, backend): {batch: ms}} over interleaved rounds."""
    results = {(p, b): {1: [], 8: []} for p in forms for b in ["ort", "tract"]}
    for _ in range(args.rounds):
        for (p, b), r in results.items():
            for batch in (1, 8):
                r[batch].append(nasnet_latency(forms[p], b, batch, args.runs, args.threads))
    return {k: {b: statistics.median(v) for b, v in r.items()} for k, r in results.items()}


def fashion_mnist_accuracy(data, tmp):
    """{precision: {backend: top-1}} of the bundled Fashion-MNIST model and its quantized forms
    (int8 calibrated on 1,000 training images), with each form's weights file size."""
    dataset = f"fashion-mnist:{data}"
    forms = {"fp32": "nasnet-a-fashion-mnist"}
    for p in PRECISIONS[1:]:
        out = os.path.join(tmp, f"fmnist-{p}")
        cmd = [NASNET, "quantize", "-q", "--offline", "--model", forms["fp32"], "--precision", p,
               "-o", out]
        if p == "int8":
            cmd += ["--calibrate", dataset, "--calibration-count", "1000"]
        subprocess.run(cmd, check=True)
        forms[p] = out
    acc = {}
    for p, model in forms.items():
        acc[p] = {}
        for b in ["ort", "tract"]:
            out = subprocess.run([NASNET, "eval", "-q", "--offline", "--model", model, "--dataset",
                                  dataset, "--backend", b, "--batch-size", "100", "--json"],
                                 check=True, capture_output=True, text=True)
            acc[p][b] = json.loads(out.stdout.strip().splitlines()[-1])["top1"]
    # Where the pull above left the fp32 model, as the cache itself says.
    cached = subprocess.run([NASNET, "cache", "list", "--json"], check=True, capture_output=True,
                            text=True).stdout.splitlines()
    forms["fp32"] = next(json.loads(line)["dir"] for line in cached
                         if json.loads(line)["id"] == forms["fp32"])
    return acc, {p: weights_bytes(d) for p, d in forms.items()}


def int8_markdown(lat, sizes, acc, acc_sizes):
    lines = ["## Quantized models (`nasnet quantize`)", "",
             "NASNet-A Mobile (synthetic weights; int8 calibrated on the four test photos): batch 1 "
             "latency and batch 8 throughput of each form on each backend, the ratio to fp32 on the "
             "same backend; the size of the file holding the weights (fp32: `model.safetensors`, "
             "the others: `model.onnx`).", "",
             "| precision | weights file, MB | / fp32 | ort batch 1, ms | / fp32 | ort batch 8, images/s "
             "| tract batch 1, ms | / fp32 | tract batch 8, images/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in PRECISIONS:
        o, t = lat[(p, "ort")], lat[(p, "tract")]
        fo, ft = lat[("fp32", "ort")], lat[("fp32", "tract")]
        lines.append(f"| {p} | {sizes[p] / 1e6:.2f} | {sizes[p] / sizes['fp32']:.3f}x | {o[1]:.1f} | "
                     f"{o[1] / fo[1]:.2f}x | {8e3 / o[8]:.1f} | {t[1]:.1f} | {t[1] / ft[1]:.2f}x | "
                     f"{8e3 / t[8]:.1f} |")
    lines.append("")
    if acc:
        lines += ["The bundled Fashion-MNIST model (`nasnet eval`, test split, 10,000 images); int8 "
                  "calibrated on the first 1,000 training images:", "",
                  "| precision | top-1 ort | top-1 tract | weights file, KB | / fp32 |",
                  "|---|---|---|---|---|"]
        for p in PRECISIONS:
            lines.append(f"| {p} | {acc[p]['ort'] * 100:.2f} % | {acc[p]['tract'] * 100:.2f} % | "
                         f"{acc_sizes[p] / 1e3:.0f} | {acc_sizes[p] / acc_sizes['fp32']:.3f}x |")
        lines.append("")
    return lines


def int8_section(model_dir, tmp, args):
    forms = quantized_forms(model_dir, tmp)
    lat = int8_latency(forms, args)
    acc, acc_sizes = (fashion_mnist_accuracy(args.fashion_mnist, tmp) if args.fashion_mnist
                      else ({}, {}))
    return int8_markdown(lat, {p: weights_bytes(d) for p, d in forms.items()}, acc, acc_sizes)


def photos_only(args):
    """Mobile's batch 1 inference (ort, tract; median of interleaved rounds) and classify's cost
    per image, each as a ratio to the same run's inference."""
    tmp = tempfile.mkdtemp(prefix="nasnet-bench-")
    try:
        model = os.path.join(tmp, "mobile")
        subprocess.run([NASNET, "synthetic", "--arch", ARCHS["mobile"], "-o", model],
                       check=True, stdout=subprocess.DEVNULL)
        sets = photos(tmp)
        runs = {b: [] for b in ["ort", "tract"]}
        for _ in range(args.rounds):
            for b in runs:
                runs[b].append(nasnet_latency(model, b, 1, args.runs, args.threads))
        inf = {b: statistics.median(v) for b, v in runs.items()}
        e2e = end_to_end(model, sets, args)
        print("| backend | inference, ms | 640x480 JPEG, ms | / own | / ort | 12 MP JPEG, ms | / own | / ort | peak RSS 12 MP, MiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for b, r in e2e.items():
            print(f"| {b} | {inf[b]:.1f} | {r['vga']:.1f} | {r['vga'] / inf[b]:.2f}x | "
                  f"{r['vga'] / inf['ort']:.2f}x | {r['12mp']:.1f} | {r['12mp'] / inf[b]:.2f}x | "
                  f"{r['12mp'] / inf['ort']:.2f}x | {r['12mp_rss']:.0f} |")
        print(f"tract / ort, batch 1: {inf['tract'] / inf['ort']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if sys.argv[1:2] == ["--ort-python"]:
        model_dir, batch, runs, threads = sys.argv[2:6]
        return ort_python_latency(model_dir, int(batch), int(runs), int(threads))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true", help="Mobile only (Large takes most of the time)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--photos-only", action="store_true",
                    help="Mobile only: batch 1 inference on ort and tract and classify end to end, "
                         "printed as ratios (docs/benchmarks.md is left alone)")
    ap.add_argument("--int8-only", action="store_true",
                    help="Mobile's quantized forms beside fp32 (and Fashion-MNIST's accuracy with "
                         "--fashion-mnist), printed (docs/benchmarks.md is left alone)")
    ap.add_argument("--fashion-mnist", metavar="DIR",
                    help="The Fashion-MNIST dataset: the quantized forms' test top-1")
    args = ap.parse_args()
    start = time.perf_counter()
    cargo("build", "--release", "-q", "--locked", "-p", "nasnet-cli")
    cargo("build", "--release", "-q", "--locked", "--example", "latency")
    if args.photos_only:
        return photos_only(args)
    if args.int8_only:
        tmp = tempfile.mkdtemp(prefix="nasnet-bench-")
        try:
            model = os.path.join(tmp, "mobile")
            subprocess.run([NASNET, "synthetic", "--arch", ARCHS["mobile"], "-o", model],
                           check=True, stdout=subprocess.DEVNULL)
            print("\n".join(int8_section(model, tmp, args)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return None
    tmp = tempfile.mkdtemp(prefix="nasnet-bench-")
    try:
        models = {}
        for arch in ["mobile"] + ([] if args.skip_large else ["large"]):
            models[arch] = os.path.join(tmp, arch)
            subprocess.run([NASNET, "synthetic", "--arch", ARCHS[arch], "-o", models[arch]],
                           check=True, stdout=subprocess.DEVNULL)
        inf = {arch: inference(arch, d, args) for arch, d in models.items()}
        e2e = end_to_end(models["mobile"], photos(tmp), args)
        lib_rows = library(models["mobile"], args)
        int8_lines = int8_section(models["mobile"], tmp, args)
        svg = os.path.splitext(args.out)[0] + ".svg"
        chart(inf, svg)
        text = report(inf, e2e, lib_rows, int8_lines, args, time.perf_counter() - start)
        part = args.out + ".partial"
        with open(part, "w") as f:
            f.write(text)
        os.replace(part, args.out)
        print(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
