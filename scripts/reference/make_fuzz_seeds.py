"""Seeds for the fuzz targets (fuzz/corpus/TARGET/) and the small model they open
(fuzz/model/: a 32x32, 10-class network of one convolution, small enough to parse thousands
of times a second, with the model.json of NASNet-A CIFAR). Run from the repository root:

  python scripts/reference/make_fuzz_seeds.py

Needs numpy, onnx, h5py, pillow, safetensors. The seeds are committed; rerun only to change
them.
"""

import io
import json
import os
import shutil

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from safetensors.numpy import save

ROOT = "fuzz"
FIXTURES = os.path.join("tests", "fixtures")


def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tiny_onnx():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (10, 4)).astype(np.float32), "fc")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["features"]),
        helper.make_node("Gemm", ["features", "fc", "b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])],
        [w, fc, b, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def images():
    rng = np.random.default_rng(1)
    px = (rng.uniform(0, 255, (48, 64, 3))).astype(np.uint8)
    out = {}
    for fmt, ext, kw in [("PNG", "png", {}), ("GIF", "gif", {}), ("BMP", "bmp", {}),
                         ("WEBP", "webp", {"quality": 50}), ("JPEG", "jpg", {"quality": 50}),
                         ("JPEG", "progressive.jpg", {"quality": 50, "progressive": True})]:
        b = io.BytesIO()
        Image.fromarray(px).save(b, fmt, **kw)
        out[f"tiny.{ext}"] = b.getvalue()
    # Large enough for the DCT-scaled decode (a shorter side of 8x the resize target).
    big = Image.open(os.path.join(FIXTURES, "images", "chelsea.jpg")).resize((2400, 2100))
    b = io.BytesIO()
    big.save(b, "JPEG", quality=10)
    out["scaled.jpg"] = b.getvalue()
    with open(os.path.join(FIXTURES, "images", "chelsea.jpg"), "rb") as f:
        out["chelsea.jpg"] = f.read()
    return out


def keras_h5():
    b = io.BytesIO()
    with h5py.File(b, "w") as f:
        f.attrs["layer_names"] = [b"stem_conv1", b"stem_bn1"]
        g = f.create_group("stem_conv1")
        g.attrs["weight_names"] = [b"stem_conv1/kernel:0"]
        g.create_dataset("stem_conv1/kernel:0", data=np.ones((3, 3, 3, 4), np.float32))
        g = f.create_group("stem_bn1")
        names = [f"stem_bn1/{n}:0" for n in ["gamma", "beta", "moving_mean", "moving_variance"]]
        g.attrs["weight_names"] = [n.encode() for n in names]
        for n in names:
            g.create_dataset(n, data=np.ones(4, np.float32))
    return b.getvalue()


def main():
    model = os.path.join(ROOT, "model")
    os.makedirs(model, exist_ok=True)
    onnx_bytes = tiny_onnx()
    with open(os.path.join(model, "model.onnx"), "wb") as f:
        f.write(onnx_bytes)
    with open(os.path.join(model, "model.json")) as f:
        meta = json.load(f)
    put("model_open", "tiny.onnx", onnx_bytes)
    put("model_json", "cifar.json", json.dumps(meta, indent=2).encode())
    with open(os.path.join("zoo", "registry.json"), "rb") as f:
        put("registry", "builtin.json", f.read())
    for name in ["tiny_zip.pth", "tiny_legacy.pth"]:
        with open(os.path.join(FIXTURES, "reference", name), "rb") as f:
            put("pth", name, f.read())
    with open(os.path.join(FIXTURES, "reference", "small.safetensors"), "rb") as f:
        put("safetensors", "small.safetensors", f.read())
    put("safetensors", "dtypes.safetensors", save({
        "a.weight": np.ones((2, 3), np.float16), "a.num_batches_tracked": np.array(3, np.int64),
        "b": np.zeros((1, 1, 1, 2), np.float32)}))
    put("keras", "tiny.h5", keras_h5())
    for name, data in images().items():
        put("preprocess", name, data)
    rng = np.random.default_rng(2)
    for i in range(4):
        put("c_classify_image", f"seed{i}", rng.integers(0, 256, 64, dtype=np.uint8).tobytes())


if __name__ == "__main__":
    main()
