import io
import struct
import zlib
from pathlib import Path

import fontpkg_amiri
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ocr_assets.data.images import MAX_PIXELS, ImageRejected, decode_line_image, encode_png, line_png

AMIRI = fontpkg_amiri.ROOT / "files" / "Amiri-Regular.ttf"
SAMPLE = "قال أبو عثمان: وهذا كتاب الحيوان"


# --- rendering helpers shared by the data-layer tests -------------------------------------------------


def render_line(text: str = SAMPLE, size: int = 32, pad: int = 10, mode: str = "L") -> Image.Image:
    """Render one RTL Arabic line with Amiri through raqm: black ink on white."""
    font = ImageFont.truetype(str(AMIRI), size)
    left, top, right, bottom = font.getbbox(text, direction="rtl", language="ar")
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 255)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=0, direction="rtl", language="ar")
    return img.convert(mode) if mode != "L" else img


def to_bytes(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def write_pair(folder: Path, stem: str, text: str | bytes | None, image: Image.Image | bytes | None, ext=".png"):
    """Write NAME.<ext> and NAME.gt.txt (either may be None) under folder."""
    path = folder / stem
    path.parent.mkdir(parents=True, exist_ok=True)
    if image is not None:
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF"}.get(ext.lower(), "PNG")
        data = image if isinstance(image, bytes) else to_bytes(image, fmt)
        Path(f"{path}{ext}").write_bytes(data)
    if text is not None:
        Path(f"{path}.gt.txt").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)


def png_header_only(width: int, height: int, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A valid PNG whose pixels are all zero: tiny on disk, huge once decoded (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + (width * bit_depth + 7) // 8)
    raw = zlib.compressobj(9)
    idat = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- rejected ------------------------------------------------------------------------------------------


def test_zero_byte_file_is_rejected_as_empty():
    with pytest.raises(ImageRejected, match=r"empty \(0 bytes\)"):
        decode_line_image(b"")


def test_non_image_bytes_are_rejected_naming_what_was_found():
    with pytest.raises(ImageRejected, match="not an image") as err:
        decode_line_image(b"%PDF-1.4\n% not a line image\n")
    assert "PDF" in err.value.reason


def test_truncated_png_is_rejected_as_truncated():
    data = to_bytes(render_line())
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        decode_line_image(data[: len(data) // 2])


def test_truncated_jpeg_is_rejected():
    data = to_bytes(render_line(), "JPEG", quality=90)
    with pytest.raises(ImageRejected, match="truncated|corrupt"):
        decode_line_image(data[: len(data) // 3])


def test_decompression_bomb_is_rejected_from_its_header():
    bomb = png_header_only(10_000, 5_000)  # 50 MP of 1-bit pixels in a few kilobytes
    assert len(bomb) < 20_000 and 10_000 * 5_000 > MAX_PIXELS
    with pytest.raises(ImageRejected, match=r"10000x5000 = 50.0 megapixels, above the 40 MP limit"):
        decode_line_image(bomb)


def test_pillow_bomb_guard_is_turned_into_a_rejection():
    # Beyond twice Image.MAX_IMAGE_PIXELS Pillow itself refuses at open; that must not escape as a crash.
    bomb = png_header_only(20_000, 20_000)
    with pytest.raises(ImageRejected, match="decompression bomb|megapixels"):
        decode_line_image(bomb)


def test_image_too_small_to_hold_a_line():
    with pytest.raises(ImageRejected, match=r"40x5 px, too small"):
        decode_line_image(to_bytes(Image.new("L", (40, 5), 255)))


# --- awkward but valid ---------------------------------------------------------------------------------


def _ink_and_paper(img: Image.Image) -> tuple[int, int]:
    arr = np.asarray(img)
    return int(arr.min()), int(np.median(arr))


def test_rgba_with_transparent_background_is_composited_on_white():
    ink = render_line()
    rgba = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    rgba.putalpha(Image.eval(ink, lambda v: 255 - v))  # black ink, transparent paper
    img = decode_line_image(to_bytes(rgba))
    assert img.mode == "L" and img.size == ink.size
    assert np.abs(np.asarray(img, dtype=int) - np.asarray(ink, dtype=int)).max() <= 2


def test_16bit_png_is_scaled_not_clipped():
    arr = np.full((40, 120), 65535, dtype=np.uint16)
    arr[10:30, 10:50] = 0
    arr[10:30, 60:100] = 32896  # mid gray: clipping would turn it white
    data = to_bytes(Image.fromarray(arr))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = decode_line_image(data)
    out = np.asarray(img)
    assert img.mode == "L"
    assert out[0, 0] == 255 and out[20, 20] == 0 and out[20, 80] == 128


def test_cmyk_jpeg_decodes_to_dark_ink_on_light_paper():
    ref = render_line(size=40)
    data = to_bytes(ref.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = decode_line_image(data)
    ink, paper = _ink_and_paper(img)
    assert img.mode == "L" and ink < 60 and paper > 230
    assert np.abs(np.asarray(img, dtype=int) - np.asarray(ref, dtype=int)).mean() < 8


def test_bilevel_g4_tiff_decodes_to_0_and_255():
    ref = render_line().point(lambda v: 255 if v > 127 else 0).convert("1")
    data = to_bytes(ref, "TIFF", compression="group4")
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "1" and opened.info.get("compression") == "group4"
    img = decode_line_image(data)
    assert img.mode == "L" and set(np.unique(np.asarray(img))) == {0, 255}
    assert np.array_equal(np.asarray(img), np.asarray(ref.convert("L")))


def test_palette_png_with_transparency_is_composited():
    ref = render_line()
    pal = ref.convert("P")
    pal.info["transparency"] = pal.getpixel((0, 0))  # paper colour transparent
    data = to_bytes(pal, transparency=pal.getpixel((0, 0)))
    img = decode_line_image(data)
    ink, paper = _ink_and_paper(img)
    assert img.mode == "L" and ink < 30 and paper == 255


def test_rgb_jpeg_becomes_gray():
    img = decode_line_image(to_bytes(render_line(mode="RGB"), "JPEG", quality=90))
    ink, paper = _ink_and_paper(img)
    assert img.mode == "L" and ink < 60 and paper > 230


def test_encode_png_round_trips_gray_pixels():
    ref = render_line()
    back = Image.open(io.BytesIO(encode_png(ref)))
    assert back.mode == "L" and np.array_equal(np.asarray(back), np.asarray(ref))


def test_line_png_keeps_plain_gray_png_bytes_and_reencodes_others():
    gray = to_bytes(render_line())
    img, png = line_png(gray)
    assert png == gray and img.mode == "L"
    rgb = to_bytes(render_line(mode="RGB"))
    img, png = line_png(rgb)
    assert png != rgb and Image.open(io.BytesIO(png)).mode == "L"
