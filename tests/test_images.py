"""crnn.images: the one decoder of user images (ingest and Serve). No Ray; each test is milliseconds."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from crnn import images
from crnn.images import ImageError
from tests.image_utils import WHITE, bomb_png, build_png, cut_idat, mask_of, pil_bytes, png_bytes, png_chunks, variants

SKY = (236, 240, 244)  # crnn.pine.BACKGROUND


def _frame(seed: int = 0, h: int = 32, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("background", [WHITE, SKY])
def test_every_variant_decodes_to_its_pixels(background):
    f = _frame(1)
    for label, (data, want) in variants(f, background).items():
        got = images.decode(data, label, background=background)
        assert got.dtype == np.uint8 and got.shape == (32, 16, 3), label
        np.testing.assert_array_equal(got, want, err_msg=label)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    """Issue #11 item 1: 16-bit mid-grey (32896 of 65535) is 128, not 255."""
    data = pil_bytes(Image.fromarray(np.full((32, 16), 32896, np.uint16)))
    assert Image.open(__import__("io").BytesIO(data)).mode == "I;16"
    got = images.decode(data, "mid.png")
    assert got.shape == (32, 16, 3) and (got == 128).all()
    # the ends and rounding: 0 -> 0, 65535 -> 255, 257*100+128 -> 100, 257*100+129 -> 101
    row = np.array([[0, 65535, 257 * 100 + 128, 257 * 100 + 129]], np.uint16)
    assert images.decode(pil_bytes(Image.fromarray(row)))[0, :, 0].tolist() == [0, 255, 100, 101]


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_sixteen_bit_tiff_variants(mode, dtype):
    """I;16 little/big endian and 32-bit I (taken as 16-bit data) from TIFF: scaled the same way."""
    values = np.array([[0, 32896, 65535, 257 * 7]], dtype)
    im = Image.frombytes(mode, (4, 1), values.tobytes())
    got = images.decode(pil_bytes(im, "TIFF"), f"{mode}.tif")
    assert got[0, :, 0].tolist() == [0, 128, 255, 7] and (got[..., 0] == got[..., 2]).all()


def test_float_pixels_are_refused_naming_the_file():
    im = Image.fromarray(np.full((4, 4), 0.5, np.float32))
    with pytest.raises(ImageError, match=r"float\.tif: unsupported: 32-bit floating-point pixels \(mode F\)") as e:
        images.decode(pil_bytes(im, "TIFF"), "float.tif")
    assert e.value.kind == "unsupported"


def test_rgba_cutout_over_the_background_and_rgba_kept():
    """Issue #11 item 2: transparent black is the background colour, not black; partly transparent
    pixels blend; mode RGBA keeps the alpha."""
    f = _frame(2)
    m = mask_of(32, 16)
    alpha = np.where(m, 0, 255).astype(np.uint8)
    alpha[-1, -1] = 128  # one half-transparent pixel
    rgba = np.dstack([np.where(m[:, :, None], 0, f), alpha])
    data = pil_bytes(Image.fromarray(rgba))
    for bg in (WHITE, SKY, (0, 0, 0)):
        got = images.decode(data, background=bg)
        assert (got[m] == bg).all()
        np.testing.assert_array_equal(got[~m][:-1], f[~m][:-1])
        half = (f[-1, -1].astype(int) * 128 + np.array(bg) * 127) / 255
        assert np.abs(got[-1, -1] - half).max() <= 1
    np.testing.assert_array_equal(images.decode(data, mode="RGBA"), rgba)


def test_greyscale_output_mode_L():
    f = _frame(3)
    got = images.decode(pil_bytes(Image.fromarray(f)), mode="L")
    np.testing.assert_array_equal(got[:, :, 0], np.asarray(Image.fromarray(f).convert("L")))
    grey16 = pil_bytes(Image.fromarray(np.full((2, 2), 32896, np.uint16)))
    assert images.decode(grey16, mode="L").shape == (2, 2, 1) and (images.decode(grey16, mode="L") == 128).all()
    with pytest.raises(ValueError, match="mode must be one of"):
        images.decode(grey16, mode="CMYK")


def test_cmyk_jpeg_and_gif_with_transparency():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    got = images.decode(pil_bytes(cmyk, "JPEG", quality=95), "red.jpg")
    assert got.shape == (16, 16, 3) and np.abs(got.astype(int) - [255, 0, 0]).max() <= 8
    gif = Image.new("P", (4, 4), 1)
    gif.putpalette([0, 0, 0, 10, 120, 30])
    gif.putpixel((0, 0), 0)
    got = images.decode(pil_bytes(gif, "GIF", transparency=0), "cut.gif", background=SKY)
    assert got[0, 0].tolist() == list(SKY) and got[1, 1].tolist() == [10, 120, 30]


def test_exif_orientations_turn_the_stored_pixels():
    """Issue #11 item 5 (decoder half): orientation 3 is turned 180 deg; 6 and 8 swap H and W."""
    f = _frame(4)
    v = variants(f)
    for o in ("exif3", "exif6", "exif8"):
        with images.open_image(v[o][0], o) as im:
            stored = im.size[::-1]
            assert images.oriented_size(im, o) == (32, 16)
        assert stored == ((32, 16) if o == "exif3" else (16, 32)), o
        np.testing.assert_array_equal(images.decode(v[o][0], o), f, err_msg=o)
    jpeg = Image.fromarray(np.rot90(f, 1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    got = images.decode(pil_bytes(jpeg, "JPEG", exif=exif, quality=100, subsampling=0), "turned.jpg")
    assert got.shape == (32, 16, 3) and np.abs(got.astype(int) - f).mean() < 8


def test_pixel_limit_both_ways_and_bomb_header():
    """Issue #11 item 4 (decoder half): the header's size is checked before decoding."""
    data = pil_bytes(Image.fromarray(_frame(5, 10, 10)))
    assert images.decode(data, "ok.png", max_pixels=100).shape == (10, 10, 3)  # exactly at the limit
    with pytest.raises(ImageError, match=r"big\.png: too large: the header claims 10x10 \(WxH\) = 100 pixels, "
                                         r"over the limit of 99 pixels") as e:
        images.decode(data, "big.png", max_pixels=99)
    assert e.value.kind == "too_large"
    bomb = bomb_png(20000, 20000)
    assert len(bomb) < 200
    with pytest.raises(ImageError, match=r"20\.png: too large.*400000000 pixels") as e:
        images.decode(bomb, "20.png")  # default limit: Pillow's, refused at open by Pillow itself
    assert e.value.kind == "too_large"
    with pytest.raises(ImageError, match=r"10000x10000 \(WxH\) = 100000000 pixels, over the limit of "
                                         f"{Image.MAX_IMAGE_PIXELS}"):
        images.decode(bomb_png(10000, 10000), "b.png")  # between Pillow's warning and error: ours
    with pytest.raises(ImageError, match="too large"):
        images.decode(bomb_png(100, 100), "b.png", max_pixels=9999)


def test_broken_files_name_the_file(tmp_path):
    p = tmp_path / "2.png"
    p.write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match=r"2\.png: unreadable: not an image Pillow can read") as e:
        images.decode(str(p))
    assert e.value.kind == "unreadable" and isinstance(e.value, ValueError)
    good = pil_bytes(Image.fromarray(_frame(6)))
    with pytest.raises(ImageError, match=r"cut\.png: unreadable: .*truncated"):
        images.decode(good[:200], "cut.png")
    with pytest.raises(ImageError, match=r"x: unreadable: not a PNG image"):
        images.decode(pil_bytes(Image.fromarray(_frame(6)), "JPEG"), "x", formats=("PNG",))
    empty = tmp_path / "25.jpg"  # a failed copy: said as such, not "not an image" (a new user's input)
    empty.write_bytes(b"")
    for source in (str(empty), empty, b"", bytearray(), io.BytesIO(b"")):
        with pytest.raises(ImageError, match=r"25\.jpg: unreadable: empty \(0 bytes\)$") as e:
            images.decode(source, "25.jpg") if not isinstance(source, (str, os.PathLike)) else images.decode(source)
        assert e.value.kind == "unreadable"
    for not_empty in (b"x", io.BytesIO(b"\0\0")):  # one byte that is no image is still "not an image"
        with pytest.raises(ImageError, match="unreadable: not an image Pillow can read"):
            images.decode(not_empty, "25.jpg")
    lying = png_bytes(_frame(6, 4, 4), 2, 8, size=(8, 8))  # header says 8x8, data holds 4x4
    with pytest.raises(ImageError, match="lying.png: unreadable"):
        images.decode(lying, "lying.png")


def test_is_image_file():
    for fn in ("10.png", "10.PNG", "age_15.jpg", "20.JPEG", "25.tif", "30.tiff", "5.webp", "3.bmp", "1.gif"):
        assert images.is_image_file(fn), fn
    for fn in ("Thumbs.db", "desktop.ini", ".DS_Store", "._10.png", ".hidden.png", "notes.txt", "10",
               "10.png.part", "scan.pdf", "10.xcf"):
        assert not images.is_image_file(fn), fn


def test_parse_color():
    assert images.parse_color("white") == (255, 255, 255)
    assert images.parse_color("#ecf0f4") == SKY
    assert images.parse_color("236, 240, 244") == SKY
    assert images.parse_color("rgb(236,240,244)") == SKY
    assert images.parse_color([236, 240, 244]) == SKY
    for bad in ("nope", "1,2", "1,2,300", [256, 0, 0], [1, 2], "#12"):
        with pytest.raises(ValueError, match="background colour"):
            images.parse_color(bad)


def test_sixteen_bit_trns_key_matches_the_sixteen_bit_samples():
    """A 16-bit greyscale/RGB PNG's tRNS key is a 16-bit sample value: the pixels equal to it are the
    background, and a pixel whose 8-bit value merely equals the key's number stays opaque (the key
    was compared with the 8-bit pixels: 0x7fff stayed grey, 514 -> 2 turned white). Serve too."""
    from crnn.serve import Spec, decode_png

    grey = np.full((32, 16), 0x7FFF, np.uint16)
    grey[-1, -1] = 514  # 8-bit 2
    for label, data in {
        "grey16": png_bytes(grey, 0, 16, chunks=[(b"tRNS", (0x7FFF).to_bytes(2, "big"))]),
        "rgb16": png_bytes(np.repeat(grey[:, :, None], 3, axis=2), 2, 16,
                           chunks=[(b"tRNS", bytes.fromhex("7fff7fff7fff"))]),
    }.items():
        got = images.decode(data, label, background=(0, 200, 0))
        assert (got[:-1, :] == (0, 200, 0)).all() and (got[-1, :-1] == (0, 200, 0)).all(), label
        assert got[-1, -1].tolist() == [2, 2, 2], label
        served = decode_png(__import__("base64").b64encode(data).decode(), label,
                            Spec(4, 32, 16, 3, [10, 15, 20, 25], (0, 200, 0)))
        np.testing.assert_array_equal(served, got, err_msg=label)
    # a key that only an 8-bit pixel matches makes nothing transparent
    data = png_bytes(grey, 0, 16, chunks=[(b"tRNS", (2).to_bytes(2, "big"))])
    got = images.decode(data, "grey16-key2")
    assert got[-1, -1].tolist() == [2, 2, 2] and (got[0, 0] == 127).all()


def test_no_pillow_bomb_warning_where_our_limit_reports_it():
    """Headers between Pillow's limit and twice that made Pillow print a DecompressionBombWarning (two
    stderr lines in ingest) next to our own one-line report; our check says it, Pillow keeps quiet."""
    import warnings

    for max_pixels in (None, 10**9):  # refused by our limit / allowed by a higher --max-pixels
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                images.open_image(bomb_png(10000, 10000), "b.png", max_pixels=max_pixels).close()
            except ImageError as e:
                assert max_pixels is None and "over the limit" in str(e)
        assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)], caught


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_truncated_png_is_unreadable_not_an_exif_problem(fraction):
    """Reading the size as shown decodes a PNG's pixels (an eXIf chunk may follow them): a truncated
    PNG was reported as "unreadable EXIF: OSError: image file is truncated"."""
    good = pil_bytes(Image.fromarray(_frame(7)))
    cut = good[:int(len(good) * fraction)]
    with images.open_image(cut, "cut.png") as im:
        with pytest.raises(ImageError, match=r"cut\.png: unreadable: ") as e:
            images.oriented_size(im, "cut.png")
    assert "EXIF" not in str(e.value)
    with images.open_image(good, "good.png") as im:
        assert images.oriented_size(im, "good.png") == (32, 16)


def _adam7_png(arr: np.ndarray) -> bytes:
    """An interlaced (Adam7) 8-bit RGB PNG of ``arr`` (Pillow writes none)."""
    import struct
    import zlib

    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + r.tobytes() for r in sub.reshape(sub.shape[0], -1))
    h, w = arr.shape[:2]
    return build_png([(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)), (b"IDAT", zlib.compress(raw)),
                      (b"IEND", b"")])


def _png_kinds() -> dict[str, bytes]:
    f = _frame(9, 24, 13)  # an odd width: rows of 16-bit/palette samples do not end on a round number
    return {
        "rgb8": pil_bytes(Image.fromarray(f)),
        "grey8": pil_bytes(Image.fromarray(f[:, :, 0])),
        "rgba8": pil_bytes(Image.fromarray(np.dstack([f, np.full_like(f[:, :, :1], 255)]))),  # opaque: same RGB
        "palette": pil_bytes(Image.fromarray(f).quantize(7)),  # 4-bit indices
        "rgb16": png_bytes(f.astype(np.uint16) * 257, 2, 16),
        "interlaced": _adam7_png(f),
        "bilevel": pil_bytes(Image.fromarray(f[:, :, 0] > 128)),  # 1 bit per pixel
    }


def _black_last_row_pngs() -> dict[str, bytes]:
    """Whole PNGs whose last row is all zero bytes as Pillow decodes it (black, transparent black,
    palette index 0): the completeness check cannot take its shortcut and inflates the stream."""
    f = _frame(9, 24, 13)
    f[-1] = 0
    idx = (f[:, :, 0] // 64).astype(np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    return {
        "rgb8": pil_bytes(Image.fromarray(f)),
        "grey8": pil_bytes(Image.fromarray(f[:, :, 0])),
        "rgba8": pil_bytes(Image.fromarray(np.dstack([f, np.where(f[:, :, :1] > 0, 255, 0).astype(np.uint8)]))),
        "palette": pil_bytes(pal),
        "rgb16": png_bytes(f.astype(np.uint16) * 257, 2, 16),
        "bilevel": pil_bytes(Image.fromarray(f[:, :, 0] > 128)),
    }


def test_the_completeness_check_takes_its_shortcut_only_when_the_last_row_proves_the_data_whole(monkeypatch):
    """A non-interlaced PNG whose decoded last row has a non-zero byte held every row (Pillow decodes
    row by row into zeroed memory): the stream is not inflated a second time (BENCHMARKS.md: that
    cost 1.6-1.8x the decode). A last row all zero, or an interlaced file, gets the full check."""
    calls = []
    real = images._check_png_rows
    monkeypatch.setattr(images, "_check_png_rows", lambda data, im, name: calls.append(name) or real(data, im, name))
    for kind, data in _png_kinds().items():
        images.decode(data, kind)
    assert calls == ["interlaced"]
    calls.clear()
    for kind, data in _black_last_row_pngs().items():
        with Image.open(io.BytesIO(data)) as im:
            assert not im.crop((0, 23, 13, 24)).tobytes().strip(b"\0"), kind  # the case meant
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
        np.testing.assert_array_equal(images.decode(data, kind, mode="RGBA"), want)  # whole: decoded as Pillow does
    assert calls == list(_black_last_row_pngs())


def _refused_as_truncated(data: bytes, kind: str, tmp_path):
    """``data`` is refused as truncated pixel data from bytes (Serve's way) and from a path (ingest's:
    Pillow closes a file it opened once loaded, so the full check reads it again); returns the path."""
    with pytest.raises(ImageError, match=rf"{kind}\.png: unreadable: truncated pixel data"):
        images.decode(data, f"{kind}.png")
    p = tmp_path / f"{kind}.png"
    p.write_bytes(data)
    with pytest.raises(ImageError, match=rf"{kind}\.png: unreadable: truncated pixel data"):
        images.decode(str(p))
    return p


@pytest.mark.parametrize("kind", list(_black_last_row_pngs()))
@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_a_short_png_whose_kept_rows_end_black_is_unreadable(kind, fraction, tmp_path):
    """The full check still refuses what the shortcut cannot vouch for: the rows kept, then zeros --
    from bytes (Serve) and from a path (ingest: Pillow has closed the file it opened once loaded, so
    the check reads it again), and a whole file from a path still decodes."""
    whole = _black_last_row_pngs()[kind]
    p = _refused_as_truncated(cut_idat(whole, fraction, rewrap=True), kind, tmp_path)
    p.write_bytes(whole)
    assert images.decode(str(p), mode="RGBA").shape == (24, 13, 4)


@pytest.mark.parametrize("kind", list(_png_kinds()))
def test_whole_pngs_pass_the_completeness_check(kind, tmp_path):
    data = _png_kinds()[kind]
    p = tmp_path / f"{kind}.png"
    p.write_bytes(data)
    want = np.asarray(Image.open(p).convert("RGB"))
    np.testing.assert_array_equal(images.decode(data, kind), want)
    np.testing.assert_array_equal(images.decode(str(p)), want)  # from a path too (ingest's way)


@pytest.mark.parametrize("kind", list(_png_kinds()))
@pytest.mark.parametrize("rewrap", [True, False], ids=["whole-stream", "cut-stream"])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9, 0.999])
def test_png_pixel_data_that_stops_early_is_unreadable(kind, rewrap, fraction, tmp_path):
    """A PNG whose IDAT data stops early but is otherwise well formed (chunk CRCs right, IEND last):
    Pillow decoded a whole zlib stream with too few rows without a word, the rest black."""
    cut = cut_idat(_png_kinds()[kind], fraction, rewrap=rewrap)
    assert png_chunks(cut)[-1] == (b"IEND", b"")
    with pytest.raises(ImageError, match=rf"{kind}\.png: unreadable: truncated pixel data: the image data "
                                         r"holds \d+ of the \d+ bytes its 13x24 \(WxH\) header needs") as e:
        images.decode(cut, f"{kind}.png")
    assert e.value.kind == "unreadable"
    p = tmp_path / f"{kind}.png"
    p.write_bytes(cut)
    with pytest.raises(ImageError, match=rf"{p}: unreadable: truncated pixel data"):
        images.decode(str(p))
    with images.open_image(cut, "s.png") as im:  # Serve's order: the size as shown first
        with pytest.raises(ImageError, match=r"s\.png: unreadable: truncated pixel data"):
            images.oriented_size(im, "s.png")


@pytest.mark.parametrize("before", [[], [(b"tEXt", b"k\0v")]], ids=["right-after", "after-a-text-chunk"])
def test_a_second_ihdr_after_the_pixel_data_does_not_hide_a_short_stream(before):
    """Pillow reads the IHDR before IDAT and ignores one after it, but the check took the last
    IHDR's size: a 1x1 IHDR after a short IDAT passed, and the image decoded 13 of its 24 rows black."""
    import struct

    cut = png_chunks(cut_idat(_png_kinds()["rgb8"], 0.5, rewrap=True))
    tiny = (b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    data = build_png(cut[:-1] + before + [tiny, cut[-1]])  # ... IDAT, [tEXt,] IHDR 1x1, IEND
    assert Image.open(io.BytesIO(data)).size == (13, 24)  # Pillow's size: the first IHDR's
    with pytest.raises(ImageError, match=r"x\.png: unreadable: truncated pixel data: .* its 13x24 \(WxH\) header"):
        images.decode(data, "x.png")


def _ihdr(w: int, h: int, depth: int = 8, ctype: int = 2, interlace: int = 0) -> tuple[bytes, bytes]:
    import struct

    return b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)


def _adam7_raw(arr: np.ndarray) -> bytes:
    """The filtered scanlines (filter 0) of ``arr`` as an interlaced PNG holds them, pass by pass."""
    raw = b""
    for x0, y0, dx, dy in images._ADAM7:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + r.tobytes() for r in sub.reshape(sub.shape[0], -1))
    return raw


def _shortcut_fooling_pngs() -> dict[str, bytes]:
    """Short pixel data whose decoded last row is not all zero: Pillow decodes it into part of the
    image only, the rest black, yet the last row looks whole."""
    import struct
    import zlib

    f = _frame(11, 9, 8)
    f[f == 0] = 1  # every decoded byte non-zero: a black pixel is a missing one
    h, w = f.shape[:2]
    pass7 = len(range(1, h, 2)) * (1 + w * 3)  # Adam7's last pass: the odd rows, none of them the last (row 8)

    def fctl(fw, fh, x, y):  # an APNG frame control chunk: the frame's size and place in the image
        return b"fcTL", struct.pack(">IIIIIHHBB", 0, fw, fh, x, y, 1, 10, 0, 0)

    actl = (b"acTL", struct.pack(">II", 1, 0))
    return {
        # Pillow keeps the interlace flag of any IHDR before the data: this one decodes as Adam7
        "second-ihdr-interlaced": build_png([_ihdr(w, h), _ihdr(w, h, interlace=1),
                                             (b"IDAT", zlib.compress(_adam7_raw(f)[:-pass7])), (b"IEND", b"")]),
        # an APNG's first frame placed by its fcTL: Pillow decodes the data into that box only
        "apng-last-row": build_png([_ihdr(w, h), actl, fctl(w, 1, 0, h - 1),
                                    (b"IDAT", zlib.compress(b"\0" + f[-1].tobytes())), (b"IEND", b"")]),
        "apng-last-column": build_png([_ihdr(w, h), actl, fctl(1, h, w - 1, 0),
                                       (b"IDAT", zlib.compress(b"".join(b"\0" + r.tobytes() for r in f[:, -1]))),
                                       (b"IEND", b"")]),
    }


@pytest.mark.parametrize("kind", list(_shortcut_fooling_pngs()))
def test_a_non_zero_last_row_does_not_vouch_for_data_decoded_into_part_of_the_image(kind, tmp_path):
    """The shortcut (a decoded last row with a non-zero byte: every row was there) holds only when
    Pillow decodes the data row by row into the whole image: not when a second IHDR made it Adam7
    (the first IHDR says not interlaced) nor when an APNG's fcTL places the data in part of it.
    Those decoded with black pixels (rows 1, 3, 5, 7; all rows but the last; all columns but the
    last) without a word."""
    data = _shortcut_fooling_pngs()[kind]
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.crop((0, 8, 8, 9)).tobytes().strip(b"\0")  # the case meant: a last row not all zero
        assert not np.asarray(im).all()  # ... and black pixels elsewhere
    _refused_as_truncated(data, kind, tmp_path)


def _second_ihdr_undercount_pngs() -> dict[str, bytes]:
    """A second IHDR before the data that Pillow reads differently from its bytes, and data just the
    size that IHDR's bytes would need: too little for what Pillow decodes."""
    import zlib

    f = _frame(12, 9, 8)
    f[f == 0] = 1
    f[-1] = 0  # a black last row: the full check runs
    h, w = f.shape[:2]
    rows = b"".join(b"\0" + r.tobytes() for r in f.reshape(h, -1))
    return {
        # interlaced by the first IHDR: Pillow keeps that flag, the second IHDR cannot clear it
        "interlace-kept": build_png([_ihdr(w, h, interlace=1), _ihdr(w, h),
                                     (b"IDAT", zlib.compress(_adam7_raw(f)[:h * (1 + w * 3)])), (b"IEND", b"")]),
        # 1-bit RGB is no PNG: Pillow keeps the first IHDR's 8-bit RGB (and takes the new size)
        "invalid-depth-ignored": build_png([_ihdr(w, h), _ihdr(w, h, depth=1, ctype=2),
                                            (b"IDAT", zlib.compress(rows[:h * (1 + (w * 3 + 7) // 8)])),
                                            (b"IEND", b"")]),
    }


@pytest.mark.parametrize("load_truncated", [False, True])
@pytest.mark.parametrize("kind", list(_second_ihdr_undercount_pngs()))
def test_the_full_check_sizes_the_data_by_the_header_as_pillow_reads_it(kind, load_truncated, monkeypatch):
    """The full check took the last IHDR before the data at its word: an interlace flag it clears
    and a bit depth/colour type Pillow ignores (keeping the earlier IHDR's) made it count too few
    bytes, so with ImageFile.LOAD_TRUNCATED_IMAGES on such a PNG decoded with black rows (off: it
    was refused, but as "image file is truncated", not with how much data there is)."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    data = _second_ihdr_undercount_pngs()[kind]
    with pytest.raises(ImageError, match=rf"{kind}\.png: unreadable: truncated pixel data: .* its 8x9 \(WxH\)"):
        images.decode(data, f"{kind}.png")


def _apng(first: np.ndarray) -> bytes:
    """A Pillow-written two-frame APNG whose first frame (the default image, in IDAT) is ``first``."""
    buf = io.BytesIO()
    Image.fromarray(first).save(buf, "PNG", save_all=True, append_images=[Image.fromarray(255 - first)])
    return buf.getvalue()


@pytest.mark.parametrize("black_last_row", [False, True], ids=["shortcut", "full-check"])
def test_whole_apngs_decode_their_first_frame_and_cut_ones_are_refused(black_last_row, monkeypatch):
    """An APNG's first frame fills the image: whole, it decodes to that frame (by the shortcut, or by
    the full check when its last row is black); its IDAT cut short is refused like a still PNG's."""
    f = _frame(3, 24, 13)
    if black_last_row:
        f[-1] = 0
    data = _apng(f)
    assert b"acTL" in data and b"fdAT" in data  # an animation, not a still PNG
    calls = []
    real = images._check_png_rows
    monkeypatch.setattr(images, "_check_png_rows", lambda d, im, name: calls.append(name) or real(d, im, name))
    np.testing.assert_array_equal(images.decode(data, "anim.png"), f)
    assert calls == (["anim.png"] if black_last_row else [])
    with pytest.raises(ImageError, match=r"anim\.png: unreadable: truncated pixel data"):
        images.decode(cut_idat(data, 0.5, rewrap=True), "anim.png")
