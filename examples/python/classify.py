#!/usr/bin/env python3
"""Classify images with a nasnet model directory in Python: ONNX Runtime runs `model.onnx`, and
the transform is the one `model.json` records (resize the shorter side, center crop, scale to
[0, 1], normalize), written with Pillow and NumPy.

    pip install onnxruntime pillow
    python3 examples/python/classify.py MODEL_DIR IMAGE... [--top-k 5] [--json]

With --json it prints one object per image, as `nasnet classify --json` does.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def preprocess(path: Path, p: dict) -> np.ndarray:
    """`[3, crop, crop]` float32: the transform of `model.json`'s `preprocessing`."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    size, crop = p["resize"], p["crop"]
    # The shorter side to `resize`, the longer one truncated, as torchvision's Resize.
    ow, oh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    if (ow, oh) != (w, h):
        img = img.resize((ow, oh), FILTERS[p["interpolation"]])
    left, top = round((ow - crop) / 2.0), round((oh - crop) / 2.0)
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array(p["mean"], np.float32)) / np.array(p["std"], np.float32)
    return x.transpose(2, 0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a model directory (model.json, model.onnx)")
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="one JSON object per image")
    args = ap.parse_args()

    meta = json.loads((args.model / "model.json").read_text())
    session = ort.InferenceSession(str(args.model / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    batch = np.stack([preprocess(p, meta["preprocessing"]) for p in args.images])
    logits, _features = session.run(["logits", "features"], {"image": batch})
    for path, row in zip(args.images, logits):
        e = np.exp(row - row.max())
        probs = e / e.sum()
        top = np.argsort(-row, kind="stable")[: args.top_k]
        preds = [{"index": int(i), "label": meta["labels"][i], "probability": float(probs[i]),
                  "logit": float(row[i])} for i in top]
        if args.json:
            print(json.dumps({"path": str(path), "predictions": preds}))
        else:
            print(f"{path}: " + ", ".join(f"{q['label']} {q['probability']:.3f}" for q in preds))


if __name__ == "__main__":
    main()
