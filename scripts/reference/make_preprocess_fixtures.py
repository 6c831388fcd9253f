"""Reference eval transforms on real photographs, for tests/preprocess.rs.

timm's eval transform (timm.data.create_transform from the nasnetalarge pretrained config:
resize 363 bicubic, center crop 331) and Cadene's TransformImage (pretrainedmodels.utils:
resize crop/0.875 bilinear, center crop) are applied to the committed photos with PIL. Both
produce 8-bit pixels before normalization, so the fixture stores them as uint8
(tests/fixtures/reference/preprocess.safetensors), CHW.

Photos (tests/fixtures/images): chelsea.jpg (scikit-image `chelsea`, CC0, 451x300),
portrait.jpg (scikit-image `astronaut`, public domain (NASA), cropped to 300x420) and
phone12mp.jpg (scikit-image `coffee`, CC0, enlarged to a phone camera's 4032x3024 with film
grain, so that large-photo decoding is tested).

Both pipelines are torchvision's `Resize(int)` and `CenterCrop` on PIL images; without
timm/torchvision installed (`--pil-only`) the same two steps are applied with PIL directly
(torchvision's own rules: shorter side to `size`, longer side truncated; crop origin rounded
half to even), which gives the same bytes (the script checks it when torchvision is there).
"""

import os
import sys

import numpy as np
import skimage.data
from PIL import Image
from safetensors.numpy import save_file

IMAGES = os.path.join("tests", "fixtures", "images")
OUT = os.path.join("tests", "fixtures", "reference", "preprocess.safetensors")


def pipelines():
    import timm
    import torchvision.transforms as T
    from timm.data import create_transform, resolve_data_config

    m = timm.create_model("nasnetalarge", pretrained=False, num_classes=10)
    cfg = resolve_data_config({}, model=m)
    timm_t = create_transform(**cfg)  # Resize(363, bicubic), CenterCrop(331), ToTensor, Normalize

    def cadene(size):
        # pretrainedmodels.utils.TransformImage with scale 0.875 (torchvision default bilinear).
        return T.Compose([T.Resize(int(np.floor(size / 0.875))), T.CenterCrop(size)])

    def without_normalize(t):
        return T.Compose([x for x in t.transforms if type(x).__name__ in ("Resize", "CenterCrop")])

    return {
        "timm331": without_normalize(timm_t),
        "cadene224": cadene(224),
        "cadene331": cadene(331),
    }


def pil_pipeline(size, crop, resample):
    """torchvision's Resize(size) + CenterCrop(crop) on a PIL image, written with PIL alone."""

    def apply(img):
        w, h = img.size
        if w <= h:
            ow, oh = size, int(size * h / w)
        else:
            ow, oh = int(size * w / h), size
        img = img.resize((ow, oh), resample)
        left, top = round((ow - crop) / 2.0), round((oh - crop) / 2.0)
        return img.crop((left, top, left + crop, top + crop))

    return apply


def pil_pipelines():
    return {
        "timm331": pil_pipeline(363, 331, Image.BICUBIC),
        "cadene224": pil_pipeline(int(np.floor(224 / 0.875)), 224, Image.BILINEAR),
        "cadene331": pil_pipeline(int(np.floor(331 / 0.875)), 331, Image.BILINEAR),
    }


def phone_photo(path):
    """A 12 MP, 4:2:0 JPEG of about a megabyte, as a phone writes one."""
    rng = np.random.default_rng(12)
    small = Image.fromarray(skimage.data.coffee())  # 600x400
    big = np.asarray(small.resize((4032, 3024), Image.BICUBIC), dtype=np.float32)
    big += rng.normal(0.0, 3.0, size=big.shape[:2] + (1,)).astype(np.float32)
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=80)


def main():
    portrait = os.path.join(IMAGES, "portrait.jpg")
    if not os.path.exists(portrait):
        Image.fromarray(skimage.data.astronaut()[20:440, 110:410]).save(portrait, quality=90)
    phone = os.path.join(IMAGES, "phone12mp.jpg")
    if not os.path.exists(phone):
        phone_photo(phone)
    ours = pil_pipelines()
    theirs = None if "--pil-only" in sys.argv else pipelines()
    out = {}
    for name in ["chelsea", "portrait", "phone12mp"]:
        img = Image.open(os.path.join(IMAGES, f"{name}.jpg")).convert("RGB")
        for p, t in ours.items():
            px = np.asarray(t(img), dtype=np.uint8).transpose(2, 0, 1).copy()
            if theirs is not None:
                ref = np.asarray(theirs[p](img), dtype=np.uint8).transpose(2, 0, 1)
                assert np.array_equal(px, ref), f"{name}.{p}: PIL steps differ from torchvision"
            out[f"{name}.{p}"] = px
            print(name, p, px.shape)
    save_file(out, OUT)


if __name__ == "__main__":
    main()
