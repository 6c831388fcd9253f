"""Keras NASNet weight files (legacy HDF5 layout, as `NASNet-mobile.h5`) with synthetic
weights, for tests of the Keras importer (tests/fixtures/reference/keras_{mobile,large}_small.h5).

The networks are Keras's own builder (`keras.src.applications.nasnet.NASNet`) at reduced width:
Mobile wiring (4 blocks per stage, stem 8) and Large wiring (skip_reduction, 2 blocks per
stage, stem 24), penultimate 192 (F = 8), 10 classes. Each Keras
weight gets the synthetic value of the canonical key it maps to (docs/synthetic-weights.md),
in Keras's layout (HWIO kernels, (in, out) dense), so an importer that maps and transposes
correctly reproduces `synthetic(key)` exactly.
"""

import os
import re
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from synthetic import synthetic  # noqa: E402

OUT_DIR = os.path.join("tests", "fixtures", "reference")
N = 4  # blocks per stage (set per fixture in main)

SEP = {
    "normal_left1": "comb_iter_0_left", "normal_right1": "comb_iter_0_right",
    "normal_left2": "comb_iter_1_left", "normal_right2": "comb_iter_1_right",
    "normal_left5": "comb_iter_4_left",
    "reduction_left1": "comb_iter_0_left", "reduction_right1": "comb_iter_0_right",
    "reduction_right2": "comb_iter_1_right", "reduction_right3": "comb_iter_2_right",
    "reduction_left4": "comb_iter_4_left",
}
BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def cell(block_id):
    if block_id == "stem_1":
        return "cell_stem_0"
    if block_id == "stem_2":
        return "cell_stem_1"
    m = re.fullmatch(r"reduce_(\d+)", block_id)
    if m:
        return f"reduction_cell_{int(m.group(1)) // N - 1}"
    k = int(block_id)
    # Stage 0 holds ids 0..N-1; the reduce block takes id N, so stage s > 0 holds s*N+1..(s+1)*N.
    stage = 0 if k < N else (1 if k <= 2 * N else 2)
    j = k - (stage * N + (1 if stage else 0))
    assert 0 <= j < N, block_id
    return f"cell_{stage * N + j}"


def canonical(layer, weight, fr_cells):
    w = weight.split("/")[-1].split(":")[0]
    if layer == "stem_conv1":
        return "conv0.conv.weight"
    if layer == "stem_bn1":
        return f"conv0.bn.{BN[w]}"
    if layer == "predictions":
        return f"last_linear.{'weight' if w == 'kernel' else 'bias'}"
    m = re.fullmatch(r"separable_conv_([12])(_bn)?_((?:normal|reduction)_(?:left|right)\d)_(.+)", layer)
    if m:
        i, bn, branch, bid = m.groups()
        base = f"{cell(bid)}.{SEP[branch]}"
        if bn:
            return f"{base}.bn_sep_{i}.{BN[w]}"
        part = "depthwise_conv2d" if w == "depthwise_kernel" else "pointwise_conv2d"
        return f"{base}.separable_{i}.{part}.weight"
    m = re.fullmatch(r"(normal|reduction)_(conv|bn)_1_(.+)", layer)
    if m:
        kind, what, bid = m.groups()
        return f"{cell(bid)}.conv_1x1.{'conv.weight' if what == 'conv' else 'bn.' + BN[w]}"
    m = re.fullmatch(r"adjust_conv_([12])_(.+)", layer)
    if m:
        return f"{cell(m.group(2))}.path_{m.group(1)}.conv.weight"
    m = re.fullmatch(r"adjust_conv_projection_(.+)", layer)
    if m:
        return f"{cell(m.group(1))}.conv_prev_1x1.conv.weight"
    m = re.fullmatch(r"adjust_bn_(.+)", layer)
    if m:
        c = cell(m.group(1))
        return f"{c}.final_path_bn.{BN[w]}" if c in fr_cells else f"{c}.conv_prev_1x1.bn.{BN[w]}"
    raise KeyError(f"{layer}/{weight}")


def to_keras(name, value, kind):
    if kind in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        if value.ndim == 4:  # OIHW -> HWIO; depthwise [C,1,k,k] -> [k,k,C,1]
            return value.transpose(2, 3, 1, 0) if kind != "depthwise_kernel" else value.transpose(2, 3, 0, 1)
        return value.T  # dense [out, in] -> [in, out]
    return value


def build(name, size, blocks, stem, skip):
    global N
    import keras
    from keras.src.applications.nasnet import NASNet
    from keras.src.legacy.saving import legacy_h5_format

    N = blocks
    out = os.path.join(OUT_DIR, name)
    m = NASNet(input_shape=(size, size, 3), penultimate_filters=192, num_blocks=blocks, stem_block_filters=stem,
               skip_reduction=skip, filter_multiplier=2, include_top=True, weights=None, classes=10,
               default_size=size)
    fr_cells = {cell(l.name[len("adjust_conv_1_"):]) for l in m.layers if l.name.startswith("adjust_conv_1_")}
    for layer in m.layers:
        values = []
        for w in layer.weights:
            key = canonical(layer.name, w.path, fr_cells)
            kind = w.path.split("/")[-1]
            shape = w.shape
            # The canonical shape is the Keras shape transposed back.
            if kind in ("kernel", "pointwise_kernel") and len(shape) == 4:
                cshape = (shape[3], shape[2], shape[0], shape[1])
            elif kind == "depthwise_kernel":
                cshape = (shape[2], shape[3], shape[0], shape[1])
            elif kind == "kernel":
                cshape = (shape[1], shape[0])
            else:
                cshape = tuple(shape)
            values.append(to_keras(key, synthetic(key, cshape), kind))
        if values:
            layer.set_weights(values)
    with h5py.File(out, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, m)
    print(out, os.path.getsize(out), "bytes,", len(m.weights), "weights, keras", keras.__version__)


def main():
    # Mobile wiring: 4 blocks per stage, F = 8, stem 8.
    build("keras_mobile_small.h5", 224, 4, 8, False)
    # Large wiring (skip_reduction): 2 blocks per stage, F = 8, stem 24, 331 px.
    build("keras_large_small.h5", 331, 2, 24, True)


if __name__ == "__main__":
    main()
