"""The C library as apps get it: one build per configuration, its size, and what it costs to run.

  python benches/library.py MODEL_DIR [--runs 20] [--threads 2] [--json]

For each configuration of `nasnet-bindings` built with the `mobile` profile (fat LTO, one
codegen unit, per-package optimization levels, stripped): the library's size and gzip size,
then, in a fresh process that loads it through ctypes, the time from `nasnet_model_open` to the
first result (second open on, as an app's next start) and the median batch-1 latency of
`nasnet_classify_tensor` on NASNet-A Mobile. ONNX configurations open MODEL_DIR's
`model.onnx` (tract's prepared-model cache warm); NNEF ones its `model.nnef.tar`. benches/report.py
runs it; alone it prints a table.
"""

import argparse
import ctypes
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# (name, cargo features, model format it opens, extra cargo arguments). The first is the
# library as it was built before NNEF and the size work (every crate at opt-level 3): the
# baseline the others' latency is compared with.
CONFIGS = [
    ("tract, ONNX + NNEF, files, all at opt-level 3", "tract,decode", "onnx",
     ["--config", "profile.mobile.opt-level=3"]),
    ("tract, ONNX + NNEF, files", "tract,decode", "onnx", []),
    ("tract, NNEF only, files", "nnef,decode", "nnef", []),
    ("tract, NNEF only, files, compact resizer", "nnef,decode,compact", "nnef", []),
    ("tract, NNEF only, pixels only", "nnef", "nnef", []),
    ("tract, NNEF only, pixels only, compact resizer (the app build)", "nnef,compact", "nnef", []),
]


def build(features, extra):
    """Builds one configuration; returns a copy of the library (the next build overwrites it)."""
    subprocess.run(["cargo", "build", "--profile", "mobile", "-q", "--locked", "-p", "nasnet-bindings",
                    "--no-default-features", "--features", features, *extra], cwd=ROOT, check=True)
    out = os.path.join(tempfile.mkdtemp(prefix="nasnet-lib-"), "libnasnet.so")
    shutil.copy(os.path.join(ROOT, "target", "mobile", "libnasnet.so"), out)
    return out


class Prediction(ctypes.Structure):
    _fields_ = [("index", ctypes.c_size_t), ("probability", ctypes.c_float),
                ("logit", ctypes.c_float), ("label", ctypes.c_char_p)]


def measure(lib_path, model_dir, runs, threads):
    """In this process: open to first result (seconds) and median batch-1 ms."""
    lib = ctypes.CDLL(lib_path)
    lib.nasnet_options_new.restype = ctypes.c_void_p
    lib.nasnet_options_new.argtypes = [ctypes.c_uint32]
    lib.nasnet_abi_version.restype = ctypes.c_uint32
    lib.nasnet_options_set_threads.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.nasnet_model_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.nasnet_last_error.restype = ctypes.c_char_p
    lib.nasnet_classify_tensor.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
                                           ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(Prediction),
                                           ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    with open(os.path.join(model_dir, "model.json")) as f:
        size = json.load(f)["preprocessing"]["crop"]
    n = 3 * size * size
    x = (ctypes.c_float * n)(*[((i * 7) % 23) / 23.0 - 0.5 for i in range(n)])
    out = (Prediction * 5)()
    written = ctypes.c_size_t()
    opts = lib.nasnet_options_new(lib.nasnet_abi_version())
    lib.nasnet_options_set_threads(opts, threads)
    model = ctypes.c_void_p()
    start = time.perf_counter()
    if lib.nasnet_model_open(model_dir.encode(), opts, ctypes.byref(model)) != 0:
        raise RuntimeError(lib.nasnet_last_error().decode())

    def run():
        if lib.nasnet_classify_tensor(model, x, 1, n, 5, out, 5, ctypes.byref(written)) != 0:
            raise RuntimeError(lib.nasnet_last_error().decode())

    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return first, statistics.median(times)


def child(lib_path, model_dir, runs, threads):
    """`measure` in a fresh process (each library loaded alone), twice: the second open counts."""
    cmd = [sys.executable, __file__, "--measure", lib_path, model_dir, str(runs), str(threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def model_dirs(model_dir, tmp):
    """MODEL_DIR as two directories: model.onnx alone, and model.nnef.tar alone."""
    dirs = {}
    for fmt, name in [("onnx", "model.onnx"), ("nnef", "model.nnef.tar")]:
        d = os.path.join(tmp, fmt)
        os.makedirs(d)
        for f in ("model.json", name):
            shutil.copy(os.path.join(model_dir, f), os.path.join(d, f))
        dirs[fmt] = d
    return dirs


def table(model_dir, runs=20, threads=2, rounds=3):
    """Rows of (name, features, bytes, gzip bytes, first result s, batch-1 ms)."""
    tmp = tempfile.mkdtemp(prefix="nasnet-libbench-")
    try:
        dirs = model_dirs(model_dir, tmp)
        libs = [(name, features, fmt, build(features, extra)) for name, features, fmt, extra in CONFIGS]
        results = {name: [] for name, *_ in libs}
        for _ in range(rounds):  # interleaved rounds
            for name, _, fmt, lib in libs:
                results[name].append(child(lib, dirs[fmt], runs, threads))
        rows = []
        for name, features, fmt, lib in libs:
            data = open(lib, "rb").read()
            rs = results[name]
            rows.append({
                "name": name, "features": features, "format": fmt, "bytes": len(data),
                "gzip_bytes": len(gzip.compress(data, 9)),
                "first_s": statistics.median(r[0] for r in rs),
                "batch1_ms": statistics.median(r[1] for r in rs),
            })
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def markdown(rows):
    base = rows[0]["batch1_ms"]
    lines = ["| library | features | stripped, MB | gzip, MB | Mobile batch 1, ms | ratio | open to first result, s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['features']}` | {r['bytes'] / 1e6:.1f} | {r['gzip_bytes'] / 1e6:.1f} | "
                     f"{r['batch1_ms']:.1f} | {r['batch1_ms'] / base:.2f}x | {r['first_s']:.2f} |")
    return lines


def main():
    if sys.argv[1:2] == ["--measure"]:
        lib, model_dir, runs, threads = sys.argv[2:6]
        print(json.dumps(measure(lib, model_dir, int(runs), int(threads))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", help="a Mobile model directory with model.onnx and model.nnef.tar")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = table(args.model_dir, args.runs, args.threads, args.rounds)
    print(json.dumps(rows, indent=1) if args.json else "\n".join(markdown(rows)))


if __name__ == "__main__":
    main()
