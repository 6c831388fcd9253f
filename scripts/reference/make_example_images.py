#!/usr/bin/env python3
"""Writes examples/images/: test-split Fashion-MNIST images as 28x28 greyscale PNGs, named
CLASS-INDEX.png (the true class, then the image's index in the test split).

The images are the first test image of each class, then the next ones of the classes named
with --extra, so that the set does not only show the easy cases. Only the standard library.

    python3 scripts/reference/make_example_images.py /usr/share/datasets/fashion-mnist \
        --extra shirt --extra coat
"""

import argparse
import gzip
import struct
import zlib
from pathlib import Path

CLASSES = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
           "sneaker", "bag", "ankle-boot"]


def read_idx(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def png(width: int, height: int, grey: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + grey[y * width:(y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="directory of the Fashion-MNIST IDX files")
    ap.add_argument("--extra", action="append", default=[], choices=CLASSES,
                    help="add the next test image of this class (repeatable)")
    ap.add_argument("-o", "--out", type=Path, default=Path("examples/images"))
    args = ap.parse_args()

    def find(stem: str) -> Path:
        for name in (stem + "-idx3-ubyte.gz", stem + "-idx1-ubyte.gz", stem + "-idx3-ubyte",
                     stem + "-idx1-ubyte"):
            if (args.dataset / name).exists():
                return args.dataset / name
        raise SystemExit(f"{args.dataset}: no {stem} IDX file")

    images = read_idx(find("t10k-images"))
    labels = read_idx(find("t10k-labels"))
    _, count, rows, cols = struct.unpack(">IIII", images[:16])
    labels = labels[8:]
    wanted = {c: 1 + args.extra.count(c) for c in CLASSES}
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    for i in range(count):
        name = CLASSES[labels[i]]
        if wanted[name] == 0:
            continue
        wanted[name] -= 1
        start = 16 + i * rows * cols
        (args.out / f"{name}-{i:04d}.png").write_bytes(png(cols, rows, images[start:start + rows * cols]))
        if not any(wanted.values()):
            break


if __name__ == "__main__":
    main()
