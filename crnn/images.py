"""One image decoder for every path that reads user images (``crnn.ingest`` and ``crnn.serve``), so a
file means the same pixels in training and in serving.

:func:`decode` (or :func:`open_image` then :func:`normalize`) turns the bytes or path of one image
into uint8 pixels, in this order:

1. **Header check**: Pillow identifies the file (``formats`` may restrict it, e.g. ``("PNG",)``) and
   reads its size; an image whose header claims more than ``max_pixels`` pixels (default: Pillow's
   ``Image.MAX_IMAGE_PIXELS``, about 89.5 million) is refused before any pixel is decoded. Pillow
   itself refuses headers over twice its limit while opening; both become :class:`ImageError`.
   A PNG whose pixel data stops early is refused when it is decoded (:func:`check_complete`):
   Pillow would fill the missing rows black when the compressed stream is whole but short and a
   proper IEND follows it.
2. **First frame** of animated or multi-page files (GIF, APNG, TIFF).
3. **EXIF orientation** applied (``ImageOps.exif_transpose``; JPEG, PNG eXIf, TIFF, WebP): the
   pixels are those a viewer shows, so orientations 5-8 swap height and width.
4. **Bit depth to 8 bits, scaled, never clipped**: 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``,
   ``I;16N``, and ``I`` which is taken as 16-bit data, values above 65535 saturating) maps
   0..65535 to 0..255 (``round(v / 257)``); 16-bit RGB/RGBA/LA PNGs are reduced by Pillow to their high
   byte. 1-bit images become 0/255. 32-bit float images (``F``) are refused: they have no defined
   white level.
5. **Transparency composited** over one background colour (:data:`BACKGROUND`, white, unless the
   caller gives another): RGBA, LA, PA, palette or greyscale/RGB with a ``tRNS`` transparent colour
   (16-bit greyscale: the 16-bit sample value, matched exactly; 16-bit RGB, whose samples Pillow
   keeps only as high bytes: the key's high bytes).
   (``mode="RGBA"`` keeps the alpha channel instead.)
6. **Colour conversion** by Pillow to ``mode``: ``"RGB"`` (default) from greyscale, palette, CMYK
   (JPEG), YCbCr, ...; ``"L"`` (luminance) for 1-channel models.

No resizing happens here: callers decide (ingest resizes, Serve requires the model's size).

Every failure of one file is an :class:`ImageError` (a ``ValueError``) whose message names the
file and the reason, so a caller can report it and carry on with other files.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageColor, ImageOps

__all__ = [
    "BACKGROUND", "IMAGE_EXTENSIONS", "MODES", "ImageError", "check_complete", "decode", "is_image_file", "normalize",
    "open_image", "oriented_size", "parse_color", "pixel_limit",
]

#: Default colour (uint8 RGB) that transparent pixels are composited over, and ingest's ``pad``
#: letterbox colour: white, what viewers and browsers show behind a cut-out.
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

#: File extensions (lower case) that ingest takes as images; everything else is listed as ignored.
#: An explicit list rather than Pillow's ``Image.registered_extensions()``: that registry also holds
#: stub plugins (HDF5, GRIB, FITS, BUFR) and formats that need outside programs (EPS needs
#: Ghostscript), which would be counted as frames and then fail as unreadable instead of being
#: ignored; photos arrive in these formats.
IMAGE_EXTENSIONS = frozenset({
    ".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
})

#: Output modes of :func:`normalize` and the channels of each.
MODES = {"L": 1, "RGB": 3, "RGBA": 4}

_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ORIENTATION = ExifTags.Base.Orientation

Source = Union[bytes, bytearray, memoryview, str, os.PathLike]


class ImageError(ValueError):
    """One image could not be used: ``name`` (a path, or a label such as ``series[0].png[3]``),
    ``reason`` (what is wrong) and ``kind``: ``"too_large"`` (header over the pixel limit),
    ``"unsupported"`` (a pixel format with no 8-bit meaning) or ``"unreadable"`` (not an image,
    truncated or corrupt). ``str(e)`` is ``"<name>: <reason>"``."""

    def __init__(self, name: str, reason: str, kind: str = "unreadable"):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason, self.kind = name, reason, kind


def is_image_file(filename: str) -> bool:
    """Whether ingest takes ``filename`` as an image: not hidden (``.DS_Store``, ``._10.png`` from
    macOS) and an extension in :data:`IMAGE_EXTENSIONS` (any case: ``10.JPG`` is an image).
    ``Thumbs.db``, ``desktop.ini``, ``notes.txt`` are not."""
    base = os.path.basename(filename)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def parse_color(value: Union[str, tuple, list]) -> tuple[int, int, int]:
    """A colour as uint8 RGB: a Pillow colour string (``"white"``, ``"#ececf4"``, ``"rgb(236,240,244)"``,
    see ``PIL.ImageColor``), ``"R,G,B"``, or a sequence of 3 integers 0-255. Raises ValueError naming
    the value."""
    if isinstance(value, str):
        s = value.strip()
        if "," in s and not s.lower().startswith(("rgb", "hsl", "hsv")):
            return parse_color([p.strip() for p in s.split(",")])
        try:
            return tuple(ImageColor.getrgb(s)[:3])  # type: ignore[return-value]
        except ValueError:
            raise ValueError(f"background colour {value!r}: not a colour (expected e.g. 'white', "
                             f"'#ffffff' or '255,255,255')") from None
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"background colour {value!r}: expected 3 integers 0-255") from None
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"background colour {value!r}: expected 3 integers 0-255")
    return rgb  # type: ignore[return-value]


def pixel_limit(max_pixels: int | None = None) -> int | None:
    """The pixel limit in force: ``max_pixels``, or Pillow's ``Image.MAX_IMAGE_PIXELS`` for None.
    Raises ValueError naming a ``max_pixels`` that is not a positive integer."""
    if max_pixels is None:
        return Image.MAX_IMAGE_PIXELS
    if isinstance(max_pixels, bool) or int(max_pixels) != max_pixels or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer (or None: Pillow's limit), got {max_pixels!r}")
    return int(max_pixels)


def open_image(source: Source, name: str | None = None, *, formats: tuple[str, ...] | None = None,
               max_pixels: int | None = None) -> Image.Image:
    """Identify an image and check its header, decoding no pixels (a lazy Pillow image; close it,
    or use it as a context manager).

    ``source``: the file's bytes or path; ``name`` labels errors (default: the path, else
    ``"image"``); ``formats``: Pillow format names to accept (default: any Pillow opens);
    ``max_pixels``: the most pixels (width x height) the header may claim (default Pillow's
    ``Image.MAX_IMAGE_PIXELS``; Pillow itself still refuses more than twice its own limit).

    Raises :class:`ImageError`: ``too_large`` for a header over the limit, else ``unreadable``
    (not an image of an accepted format, or a corrupt header); ValueError for a bad ``max_pixels``.
    """
    limit = pixel_limit(max_pixels)
    if name is None:
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "image"
    fp = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with warnings.catch_warnings():
            # Pillow warns (two lines on stderr) for headers between its limit and twice that: the
            # limit check below reports them itself (or --max-pixels allowed them)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=list(formats) if formats else None)
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"too large to decode: {e}", "too_large") from None
    except Image.UnidentifiedImageError:
        if _is_empty(source):  # a failed download or copy: say so, not "not an image"
            raise ImageError(name, "unreadable: empty (0 bytes)") from None
        what = f"a {'/'.join(formats)} image" if formats else "an image Pillow can read"
        raise ImageError(name, f"unreadable: not {what}") from None
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, struct.error...) for broken headers
        raise ImageError(name, f"unreadable: {type(e).__name__}: {e}") from None
    w, h = im.size
    if limit is not None and w * h > limit:
        im.close()
        raise ImageError(name, f"too large: the header claims {w}x{h} (WxH) = {w * h} pixels, "
                               f"over the limit of {limit} pixels", "too_large")
    if w < 1 or h < 1:
        im.close()
        raise ImageError(name, f"unreadable: the header claims {w}x{h} pixels")
    im._crnn_rawmode = _rawmode(im)  # loading (even EXIF reading, for some PNGs) forgets it
    return im


def _is_empty(source) -> bool:
    """Whether ``source`` (a path, bytes or a seekable binary file) holds no bytes at all."""
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.path.getsize(source) == 0
        if isinstance(source, (bytes, bytearray, memoryview)):
            return len(source) == 0
        return source.seek(0, io.SEEK_END) == 0
    except (OSError, AttributeError, ValueError):  # unseekable or closed: not known, say "not an image"
        return False


def _rawmode(im: Image.Image) -> str:
    """How the file stores its samples (``"RGB;16B"`` for a 16-bit RGB PNG), while Pillow still
    knows (before loading), else as :func:`open_image` recorded it; "" if unknown."""
    for t in im.tile or ():
        args = getattr(t, "args", None)
        if isinstance(args, str):
            return args
    return getattr(im, "_crnn_rawmode", "")


def oriented_size(im: Image.Image, name: str | None = None) -> tuple[int, int]:
    """(height, width) in pixels of ``im`` as shown, after its EXIF orientation (5-8 swap them).

    Reads the EXIF block (for a PNG whose eXIf chunk follows the pixel data, Pillow decodes the
    pixels to reach it: check the header size first). Raises :class:`ImageError` for broken EXIF.
    """
    w, h = im.size
    if im.format == "PNG" and "exif" not in im.info:  # an eXIf chunk may follow the pixel data
        check_complete(im, name)
        try:  # (what getexif would do): a failure here is in the pixel data, not in EXIF
            im.load()
        except Exception as e:
            raise ImageError(name or _name(im), f"unreadable: {type(e).__name__}: {e}") from None
    try:
        orientation = im.getexif().get(_ORIENTATION, 1)
    except Exception as e:
        raise ImageError(name or _name(im), f"unreadable EXIF: {type(e).__name__}: {e}") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


#: Samples per pixel of each PNG colour type (PNG spec, IHDR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: (bit depth, colour type) pairs the PNG spec allows (and Pillow decodes).
_PNG_DEPTHS = ({(d, 0) for d in (1, 2, 4, 8, 16)} | {(d, 3) for d in (1, 2, 4, 8)}
               | {(d, c) for d in (8, 16) for c in (2, 4, 6)})
#: Adam7 passes: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_raw_size(width: int, height: int, bit_depth: int, color_type: int, interlace: int) -> int:
    """Bytes of a PNG's filtered scanlines (the inflated IDAT stream): one filter byte per row plus
    the row's packed samples, for each Adam7 pass when interlaced."""
    bits = _PNG_CHANNELS.get(color_type, 1) * bit_depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            total += h * (1 + (w * bits + 7) // 8)
    return total


def _png_chunks(data: bytes):
    """(type, payload) of each chunk of a PNG file's bytes, in order, until IEND or the data ends."""
    i = 8
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        yield kind, data[i + 8:i + 8 + length]
        if kind == b"IEND":
            return
        i += 12 + length


def check_complete(im: Image.Image, name: str | None = None) -> None:
    """Refuse a PNG whose pixel data ends early: Pillow raises "image file is truncated" when the file
    itself ends inside the data, but when the compressed stream (IDAT) is whole yet holds fewer rows
    than the header's height (data cut and re-wrapped, a proper IEND after it) it decodes without a
    word and leaves the missing rows black, even with ``ImageFile.LOAD_TRUNCATED_IMAGES`` False.

    For a PNG this loads the pixels (call it before the first load: :func:`normalize` and
    :func:`oriented_size` do; an image already loaded, and other formats, pass unchecked). Pillow
    decodes a non-interlaced PNG row by row, top to bottom, into zeroed memory, so a last row with
    any non-zero byte proves every row was in the data: nothing more is done. Otherwise (a last row
    all zero -- black, or palette index 0 -- an interlaced file, or an APNG whose first frame covers
    part of the image) the IDAT stream is inflated once
    more (no pixels unfiltered) and its bytes counted against those ``width x height`` needs
    (:func:`_check_png_rows`): the cost measured in ``benchmarks/bench_decode.py``. Raises
    :class:`ImageError` (``unreadable``) naming ``name``."""
    fp = getattr(im, "fp", None)
    if im.format != "PNG" or fp is None or getattr(im, "_crnn_complete", False):
        return
    name = name or _name(im)
    if not getattr(im, "_crnn_rawmode", ""):  # loading forgets it (normalize reads it): as open_image does
        im._crnn_rawmode = _rawmode(im)
    w, h = im.size
    # the shortcut needs the data decoded row by row into the whole image: not an APNG whose first
    # frame's fcTL places it in part of the image (the tile is that box), nor Adam7 -- Pillow keeps
    # the interlace flag of any IHDR before the data (info), the first one's alone is not enough
    tile = im.tile or ()
    whole = len(tile) == 1 and tuple(tile[0][1]) == (0, 0, w, h)
    try:
        im.load()
    except Exception as e:
        _check_png_rows(_png_bytes(im, fp), im, name)  # the data ends early: say so, with how much is there
        raise ImageError(name, f"unreadable: {type(e).__name__}: {e}") from None
    if im.info.get("interlace") or not whole or not im.crop((0, h - 1, w, h)).tobytes().strip(b"\0"):
        _check_png_rows(_png_bytes(im, fp), im, name)
    im._crnn_complete = True


def _png_bytes(im: Image.Image, fp) -> bytes:
    """The file's bytes, from ``fp`` while it is open; Pillow closes a file it opened itself (from
    a path) once the pixels are loaded: then from the path again."""
    if not getattr(fp, "closed", False):
        pos = fp.tell()
        try:
            fp.seek(0)
            return fp.read()
        finally:
            fp.seek(pos)
    with open(im.filename, "rb") as f:
        return f.read()


def _check_png_rows(data: bytes, im: Image.Image, name: str) -> None:
    """:func:`check_complete`'s full check: inflate the IDAT stream of the PNG file ``data`` and
    raise :class:`ImageError` when it holds fewer bytes than the header Pillow decodes by needs."""
    need = have = 0
    seen_idat = False
    depth = ctype = None
    interlace = 0
    inflate = zlib.decompressobj()
    try:
        for kind, payload in _png_chunks(data):
            # the header Pillow decodes by: one before the pixel data (an IHDR after it is ignored by
            # Pillow; taking its size here let a 1x1 IHDR after a short IDAT pass), read as Pillow
            # reads it: the size always, depth and colour type only a valid pair (else the earlier
            # IHDR's stay), the interlace flag set by any IHDR and never cleared
            if kind == b"IHDR" and len(payload) >= 13 and not seen_idat:
                w, h, d, c, _, _, il = struct.unpack(">IIBBBBB", payload[:13])
                if (d, c) in _PNG_DEPTHS:
                    depth, ctype = d, c
                interlace = interlace or il
                if depth is not None:
                    need = _png_raw_size(w, h, depth, ctype, interlace)
            elif kind == b"IDAT":
                seen_idat = True
                if have >= need:
                    continue
                while payload and have < need:  # bounded chunks of output: no second copy of the image
                    have += len(inflate.decompress(payload, 1 << 20))
                    payload = inflate.unconsumed_tail
    except zlib.error as e:
        raise ImageError(name, f"unreadable: corrupt pixel data (zlib: {e})") from None
    if have < need:
        h = im.size[1]
        raise ImageError(name, f"unreadable: truncated pixel data: the image data holds {have} of the {need} "
                               f"bytes its {im.size[0]}x{h} (WxH) header needs (about {have * h // need} of "
                               f"{h} rows); Pillow would fill the rest black")


def _name(im: Image.Image) -> str:
    return getattr(im, "filename", "") or "image"


def normalize(im: Image.Image, name: str | None = None, *, mode: str = "RGB",
              background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """A Pillow image (from :func:`open_image`) -> an 8-bit image of ``mode`` ("RGB", "L" or "RGBA"),
    decoded as the module docstring says: first frame, EXIF orientation, 16-bit scaled, transparency
    composited over ``background`` (uint8 RGB; not for "RGBA"). Same size as shown (EXIF-rotated).
    The result is ``im`` itself when it already was that (loaded): use it before closing ``im``.

    Raises :class:`ImageError` naming ``name``: ``unsupported`` for float pixels, ``unreadable`` for
    truncated or corrupt data; ValueError for a bad ``mode``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    name = name or _name(im)
    check_complete(im, name)  # before anything loads the pixels (getexif does, for a PNG)
    if im.mode == "F":
        raise ImageError(name, "unsupported: 32-bit floating-point pixels (mode F) have no defined "
                               "white level; save as 8- or 16-bit", "unsupported")
    try:
        # 16-bit RGB PNGs: Pillow keeps each sample's high byte but the tRNS key as 16-bit numbers
        rgb16 = im.mode == "RGB" and _rawmode(im).startswith("RGB;16")
        if im.getexif().get(_ORIENTATION, 1) in range(2, 9):
            im = ImageOps.exif_transpose(im)
        else:
            im.load()  # no copy: the common case in Serve's hot path
        if rgb16 and isinstance(im.info.get("transparency"), tuple):
            # compare like the pixels: the key's high bytes (pixels differing only in their low
            # bytes from the key become transparent too; Pillow keeps no 16-bit RGB samples)
            im.info["transparency"] = tuple(int(v) >> 8 for v in im.info["transparency"])
        if im.mode in _SIXTEEN_BIT:
            key = im.info.get("transparency")
            opaque = None
            if isinstance(key, int):  # tRNS of 16-bit grey: a 16-bit sample value, matched exactly
                opaque = Image.fromarray(np.where(np.asarray(im) == key, 0, 255).astype(np.uint8), "L")
            if im.mode != "I":
                im = im.convert("I")
            im = im.point(lambda v: v / 257 + 0.5, "L")  # 0..65535 -> 0..255, rounded
            im.info.pop("transparency", None)  # a 16-bit key means nothing to 8-bit pixels
            if opaque is not None:  # point() on "I" gives "I" (values 0..255 now)
                im = Image.merge("LA", (im.convert("L"), opaque))
        if mode == "RGBA":
            return im.convert("RGBA")
        if im.has_transparency_data:
            fg = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", fg.size, (*background, 255)), fg)
        return im if im.mode == mode else im.convert(mode)
    except ImageError:
        raise
    except Exception as e:  # truncated data, broken chunks, unsupported conversions
        raise ImageError(name, f"unreadable: {type(e).__name__}: {e}") from None


def decode(source: Source, name: str | None = None, *, mode: str = "RGB",
           background: tuple[int, int, int] = BACKGROUND, max_pixels: int | None = None,
           formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Bytes or path of one image -> uint8 array (H, W, C) as shown (C = 3 for "RGB", 1 for "L",
    4 for "RGBA"): :func:`open_image` then :func:`normalize`. Raises :class:`ImageError` naming
    ``name`` (default: the path)."""
    with open_image(source, name, formats=formats, max_pixels=max_pixels) as im:
        out = normalize(im, name or _name(im), mode=mode, background=background)
        a = np.asarray(out, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a
