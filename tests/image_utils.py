"""Test images in the variants users send (shared by test_images, test_ingest and test_serve).

``variants(frame)`` encodes one uint8 RGB frame in many PNG variants, each with the pixels a correct
decoder must return. 16-bit RGB/RGBA/LA PNGs and headers that lie about their size are written by
``png_bytes`` (Pillow cannot write those); everything else by Pillow.
"""

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image

WHITE = (255, 255, 255)


def png_bytes(arr: np.ndarray, color_type: int, bit_depth: int, chunks=(), size=None) -> bytes:
    """A PNG written chunk by chunk: ``arr`` (H, W[, C]) samples, PNG colour type (0 grey, 2 RGB,
    4 grey+alpha, 6 RGBA), bit depth 8 or 16, extra (type, data) chunks before IDAT; ``size``
    (W, H) overrides the header's size (a header that lies)."""
    h, w = arr.shape[:2]
    if size is not None:
        w, h = size

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = arr.astype(">u2" if bit_depth == 16 else "u1").reshape(arr.shape[0], -1)
    raw = b"".join(b"\0" + r.tobytes() for r in rows)
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
            + b"".join(chunk(k, d) for k, d in chunks)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of each chunk of a PNG file."""
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        out.append((data[i + 4:i + 8], data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def build_png(chunks) -> bytes:
    """A PNG file of (type, payload) chunks, each with its CRC computed."""
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
                                          for k, d in chunks)


def cut_idat(png: bytes, fraction: float, rewrap: bool = False) -> bytes:
    """``png`` with its pixel data stopping early but a well-formed file around it (proper chunk
    CRCs, IEND last): the IDAT data cut to ``fraction`` of its compressed bytes (8 short at least), or (``rewrap``) the
    inflated scanlines cut to ``fraction`` and compressed again (a whole zlib stream that holds too
    few rows: what Pillow decodes silently, the rest black)."""
    idat = b"".join(d for k, d in png_chunks(png) if k == b"IDAT")
    if rewrap:
        raw = zlib.decompress(idat)
        data = zlib.compress(raw[:int(len(raw) * fraction)])
    else:
        data = idat[:min(int(len(idat) * fraction), len(idat) - 8)]  # the last 4 are only a checksum
    out, done = [], False
    for k, d in png_chunks(png):
        if k == b"IDAT":
            if not done:
                out.append((k, data))
                done = True
        else:
            out.append((k, d))
    return build_png(out)


def bomb_png(w: int = 20000, h: int = 20000) -> bytes:
    """A PNG of a few dozen bytes whose header claims ``w`` x ``h`` RGB pixels."""
    return png_bytes(np.zeros((1, 1, 3), np.uint8), 2, 8, size=(w, h))


def pil_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def exif_png(shown: np.ndarray, orientation: int) -> bytes:
    """A PNG whose stored pixels, turned by EXIF ``orientation`` (3, 6 or 8), show ``shown``."""
    k = {1: 0, 3: 2, 6: 1, 8: -1}[orientation]  # EXIF 6: turn 90 deg clockwise to show, so stored = CCW
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(Image.fromarray(np.ascontiguousarray(np.rot90(shown, k))), exif=exif)


def mask_of(h: int, w: int) -> np.ndarray:
    """bool (H, W): the transparent pixels of the cut-out variants (a left band and the top rows)."""
    m = np.zeros((h, w), bool)
    m[:, : w // 4] = True
    m[: h // 4] = True
    return m


PALETTE = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)


def variants(frame: np.ndarray, background=WHITE) -> dict[str, tuple[bytes, np.ndarray]]:
    """{label: (PNG bytes, uint8 (H, W, 3) a correct decoder returns)} for one uint8 RGB frame."""
    h, w, _ = frame.shape
    bg = np.array(background, np.uint8)
    grey = frame[:, :, 0]
    grey3 = np.repeat(grey[:, :, None], 3, axis=2)
    m = mask_of(h, w)
    alpha8 = np.where(m, 0, 255).astype(np.uint8)
    cut = np.where(m[:, :, None], 0, frame)  # RGB under the transparent pixels is black
    over = np.where(m[:, :, None], bg, frame)
    over_grey = np.where(m[:, :, None], bg, grey3)
    idx = (grey // 64).astype(np.uint8)  # palette indices 0..3; index 0 transparent
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette(PALETTE.ravel().tolist())
    bits = grey > 127
    out = {
        "rgb8": (pil_bytes(Image.fromarray(frame)), frame),
        "rgb16": (png_bytes(frame.astype(np.uint16) * 257, 2, 16), frame),
        "grey8": (pil_bytes(Image.fromarray(grey)), grey3),
        "grey16": (pil_bytes(Image.fromarray(grey.astype(np.uint16) * 257)), grey3),
        "rgba8-cutout": (pil_bytes(Image.fromarray(np.dstack([cut, alpha8]))), over),
        "rgba16-cutout": (png_bytes(np.dstack([cut, alpha8]).astype(np.uint16) * 257, 6, 16), over),
        "la8": (pil_bytes(Image.fromarray(np.dstack([np.where(m, 0, grey), alpha8]).astype(np.uint8), "LA")),
                over_grey),
        "la16": (png_bytes(np.dstack([np.where(m, 0, grey), alpha8]).astype(np.uint16) * 257, 4, 16), over_grey),
        "palette": (pil_bytes(pal), PALETTE[idx]),
        "palette-trns": (pil_bytes(pal, transparency=0), np.where((idx == 0)[:, :, None], bg, PALETTE[idx])),
        "1bit": (pil_bytes(Image.fromarray(bits).convert("1")),
                 np.repeat(np.where(bits, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)),
        "exif3": (exif_png(frame, 3), frame),
        "exif6": (exif_png(frame, 6), frame),
        "exif8": (exif_png(frame, 8), frame),
    }
    return out


def png_b64(frame: np.ndarray) -> str:
    """A uint8 (H, W, C) frame as a base64 PNG string, as a Serve client sends it."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def from_png_b64(s: str) -> np.ndarray:
    """A base64 PNG string (a Serve answer) as a uint8 array."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(s))))
