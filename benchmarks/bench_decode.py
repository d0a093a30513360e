"""What the PNG completeness check costs a decode (pure measurement, no assertions).

``crnn.images.check_complete`` refuses a PNG whose compressed stream is whole but holds fewer rows
than its header says (Pillow fills those black without a word). Until 2026-12-07 it inflated every
PNG's pixel data (IDAT) once more before Pillow decoded it (``crnn/images.py`` of f924825: run this
with that file for the "before"); now a decoded last row with a non-zero byte proves the data whole
and only the rest gets that second inflate. This prints, for photo-like PNGs of a few
sizes, the time of what ingest does per file (``crnn.ingest.load_image``: open, decode, normalise,
resize to 32 x 16) and of Serve's decode (``crnn.images.decode`` of the bytes), each with the check
and with it switched off, interleaved round by round in one process (the fastest round of each),
and the ratio:

    python benchmarks/bench_decode.py [--sizes 640x480,1920x1080,4000x3000] [--rounds 15]

A JPEG is not checked (the check is for PNGs only); one size of JPEG is timed as the reference.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from crnn import images, ingest  # noqa: E402


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB image: smooth gradients and blobs plus a little sensor noise (compresses
    about as a real photo does in PNG: neither all noise nor flat)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 220], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * min(width, height)
        img += (np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(-80, 80, 3))
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="640x480,1920x1080,4000x3000", help="WxH, comma-separated")
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args(argv)
    real = images.check_complete
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for size in a.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            arr = photo(w, h)
            for fmt in ("PNG", "JPEG") if size == a.sizes.split(",")[0] else ("PNG",):
                path = os.path.join(d, f"{size}.{fmt.lower()}")
                Image.fromarray(arr).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
                with open(path, "rb") as f:
                    data = f.read()
                cases = {"ingest load_image": lambda: ingest.load_image(path, 32, 16),
                         "serve decode": lambda: images.decode(data)}
                for what, fn in cases.items():
                    fn()  # warm (file cache, Pillow's plugins)
                    on, off = [], []
                    for _ in range(a.rounds):  # interleaved: the machine's noise hits both alike
                        on.append(_time(fn))
                        images.check_complete = lambda im, name=None: None
                        try:
                            off.append(_time(fn))
                        finally:
                            images.check_complete = real
                    t_on, t_off = min(on), min(off)  # the least-disturbed round of each (a shared, noisy machine)
                    rows.append((f"{size} {fmt} ({len(data) / 1e6:.2f} MB)", what, t_on, t_off))
    print(f"{'image':<30} {'path':<18} {'checked ms':>11} {'unchecked ms':>13} {'ratio':>6}")
    for name, what, t_on, t_off in rows:
        print(f"{name:<30} {what:<18} {t_on * 1e3:>11.1f} {t_off * 1e3:>13.1f} {t_on / t_off:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
