"""Reference eval transforms on real photographs, for tests/preprocess.rs.

timm's eval transform (timm.data.create_transform from the nasnetalarge pretrained config:
resize 363 bicubic, center crop 331) and Cadene's TransformImage (pretrainedmodels.utils:
resize crop/0.875 bilinear, center crop) are applied to the committed photos with PIL. Both
produce 8-bit pixels before normalization, so the fixture stores them as uint8
(tests/fixtures/reference/preprocess.safetensors), CHW.

Photos (tests/fixtures/images): chelsea.jpg (scikit-image `chelsea`, CC0, 451x300) and
portrait.jpg (scikit-image `astronaut`, public domain (NASA), cropped to 300x420).
"""

import os

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


def main():
    portrait = os.path.join(IMAGES, "portrait.jpg")
    if not os.path.exists(portrait):
        Image.fromarray(skimage.data.astronaut()[20:440, 110:410]).save(portrait, quality=90)
    out = {}
    for name in ["chelsea", "portrait"]:
        img = Image.open(os.path.join(IMAGES, f"{name}.jpg")).convert("RGB")
        for p, t in pipelines().items():
            px = np.asarray(t(img), dtype=np.uint8).transpose(2, 0, 1).copy()
            out[f"{name}.{p}"] = px
            print(name, p, px.shape)
    save_file(out, OUT)


if __name__ == "__main__":
    main()
