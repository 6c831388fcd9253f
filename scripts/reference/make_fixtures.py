"""Builds the reference NASNet-A networks with synthetic weights and writes the fixtures the
Rust tests compare against (tests/fixtures/reference/).

Needs: torch, timm, pretrainedmodels, numpy, safetensors (see requirements.txt). Run from the
repository root:  python scripts/reference/make_fixtures.py

References:
  - pretrainedmodels 0.7.4 `nasnetamobile` / `nasnetalarge` (Cadene): TF average-pool rule.
  - timm `nasnetalarge`: timm's stride-2 average pools count the zero padding.
BatchNorm running statistics are calibrated on the Cadene network (cumulative average over
random batches in training mode) so activations stay well scaled through every cell; they are
shipped with the fixture, everything else is regenerated from the key names on both sides.
"""

import os
import re
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(__file__))
from synthetic import synthetic, synthetic_input  # noqa: E402

OUT = os.path.join("tests", "fixtures", "reference")
torch.set_num_threads(max(1, os.cpu_count() or 1))


def canonical(key: str, cells: int) -> str:
    """Cadene numbers Mobile's normal cells stage*6+j; the canonical layout stage*cells+j."""
    m = re.match(r"cell_(\d+)(\..*)", key)
    if not m:
        return key
    i = int(m.group(1))
    return f"cell_{(i // 6) * cells + i % 6}{m.group(2)}"


def fill(model, cells: int):
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            new[k] = v
            continue
        new[k] = torch.from_numpy(synthetic(canonical(k, cells), v.shape))
    model.load_state_dict(new)


def calibrate(model, size: int, batches: int, batch: int):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    g = torch.Generator().manual_seed(1234)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(batch, 3, size, size, generator=g) * 2 - 1)
    model.eval()


def bn_stats(model, cells: int):
    return {
        canonical(k, cells): v.numpy().astype(np.float32).copy()
        for k, v in model.state_dict().items()
        if k.endswith("running_mean") or k.endswith("running_var")
    }


def run(model, x):
    with torch.no_grad():
        f = model.features(torch.from_numpy(x))
        feats = torch.relu(f).mean((2, 3))
        logits = model.logits(f) if hasattr(model, "logits") else model.forward_head(f)
    return logits.numpy().copy(), feats.numpy().copy()


def main():
    import pretrainedmodels.models.nasnet as cadene_large
    import pretrainedmodels.models.nasnet_mobile as cadene_mobile
    import timm

    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    # Mobile, Cadene (TF rule).
    m = cadene_mobile.NASNetAMobile(num_classes=1000)
    fill(m, 4)
    calibrate(m, 224, batches=6, batch=8)
    x = synthetic_input(2, 224)
    logits, feats = run(m, x)
    out = bn_stats(m, 4)
    out["expected.tf.logits"] = logits
    out["expected.tf.features"] = feats
    save_file(out, os.path.join(OUT, "mobile.safetensors"))
    print("mobile", logits.shape, float(np.abs(logits).max()), float(logits.std()))

    # Large, Cadene (TF rule) then timm (timm rule) with the same weights and statistics.
    c = cadene_large.NASNetALarge(num_classes=1000)
    fill(c, 6)
    calibrate(c, 331, batches=3, batch=4)
    stats = bn_stats(c, 6)
    x = synthetic_input(2, 331)
    logits_tf, feats_tf = run(c, x)
    t = timm.create_model("nasnetalarge", pretrained=False, num_classes=1000)
    t.load_state_dict(c.state_dict())
    t.eval()
    with torch.no_grad():
        f = t.forward_features(torch.from_numpy(x))
        logits_timm = t.forward_head(f).numpy().copy()
        feats_timm = t.forward_head(f, pre_logits=True).numpy().copy()
    out = dict(stats)
    out["expected.tf.logits"] = logits_tf
    out["expected.tf.features"] = feats_tf
    out["expected.timm.logits"] = logits_timm
    out["expected.timm.features"] = feats_timm
    save_file(out, os.path.join(OUT, "large.safetensors"))
    print("large tf", float(np.abs(logits_tf).max()), "timm-vs-tf", float(np.abs(logits_tf - logits_timm).max()))

    # Small networks in the upstream class layouts, saved as real PyTorch checkpoints:
    # Mobile-like (F=8, stem 8, 10 classes) in the legacy format, Large-like (F=8, stem 24,
    # 11 classes with a background row) in the zip format.
    small = {}
    ms = cadene_mobile.NASNetAMobile(num_classes=10, stem_filters=8, penultimate_filters=192)
    fill(ms, 4)
    calibrate(ms, 224, batches=2, batch=8)
    small["mobile_small.tf.logits"], _ = run(ms, synthetic_input(2, 224))
    torch.save(ms.state_dict(), os.path.join(OUT, "mobile_small_legacy.pth"), _use_new_zipfile_serialization=False)

    ls = cadene_large.NASNetALarge(num_classes=11, stem_filters=24, penultimate_filters=192)
    fill(ls, 6)
    calibrate(ls, 331, batches=2, batch=4)
    lg, _ = run(ls, synthetic_input(2, 331))
    small["large_small.tf.logits"] = lg[:, 1:].copy()  # the importer drops the background row
    torch.save(ls.state_dict(), os.path.join(OUT, "large_small_zip.pth"))

    # A tiny state dict exercising the readers: dtypes, a non-contiguous view, a scalar.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tiny = {
        "a.weight": base,
        "a.transposed": base.t(),
        "a.double": torch.linspace(-1, 1, 5, dtype=torch.float64),
        "a.half": torch.tensor([0.5, -2.0], dtype=torch.float16),
        "a.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
    }
    torch.save(tiny, os.path.join(OUT, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(tiny, os.path.join(OUT, "tiny_zip.pth"))
    save_file(small, os.path.join(OUT, "small.safetensors"))
    print("small", {k: float(np.abs(v).max()) for k, v in small.items()})


if __name__ == "__main__":
    main()
