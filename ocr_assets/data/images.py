"""Safe decoding of line images from untrusted bytes into 8-bit grayscale, and PNG encoding."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from ocr_assets.errors import ImageRejected

# A line crop is at most a few megapixels; 40 MP still admits a 600 dpi A4 page for the page pipeline.
MAX_PIXELS = 40_000_000
MIN_SIDE = 8
# Pillow warns above this and raises above twice it; our own header check runs first and is stricter.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_ORIENTATION = 0x0112  # EXIF tag
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I;16S"}


def _open_header(data: bytes) -> Image.Image:
    if not data:
        raise ImageRejected("image file is empty (0 bytes); re-export the image")
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit Pillow only warns; _check_size rejects those with their size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ImageRejected(
            f"image is far too large, a possible decompression bomb ({err}); crop it to the text line"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageRejected(
            f"not an image Pillow can read (first bytes {data[:8]!r}, {len(data)} bytes); "
            "expected PNG, JPEG or TIFF"
        ) from err
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageRejected(f"image header is corrupt ({err}); re-export the image") from err


def _check_size(img: Image.Image, max_pixels: int, min_side: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected(
            f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the "
            f"{max_pixels / 1e6:.0f} MP limit for a line image; crop it to the text line"
        )
    if width < min_side or height < min_side:
        raise ImageRejected(
            f"image is {width}x{height} px, too small to hold a line of text "
            f"(need at least {min_side}x{min_side})"
        )


def to_gray(img: Image.Image) -> Image.Image:
    """8-bit grayscale from any mode: 16-bit mapped 65535 -> 255, transparency composited on white, CMYK etc. via RGB.

    The one converter for training, inference and ingest (a 16-bit scan reads the same everywhere).
    """
    mode = img.mode
    if mode == "L" and "transparency" not in img.info:
        return img
    if mode == "1":
        return img.convert("L")
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _scale_to_8bit(img)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        # Transparent background means paper: composite on white so ink stays dark.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    if mode != "RGB":
        img = img.convert("RGB")  # CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, LAB, HSV
    return img.convert("L")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255 (a white page becomes all white); rescale instead.
    arr = np.asarray(img).astype(np.float64)
    low, high = float(arr.min()), float(arr.max())
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and low >= 0 and 255 < high <= 65535):
        arr = arr / 257.0  # the 16-bit range maps onto the 8-bit range: 65535 -> 255
    elif img.mode == "F" and low >= 0 and high <= 1.0:
        arr = arr * 255.0  # float images in 0..1
    elif low < 0 or high > 255:
        # 32-bit data of unknown range: stretch what is there.
        arr = (arr - low) * (255.0 / (high - low)) if high > low else np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _decode(data: bytes, max_pixels: int, min_side: int) -> tuple[Image.Image, bool]:
    """The 8-bit gray image and whether it is the stored pixels unchanged (a plain 8-bit gray PNG)."""
    img = _open_header(data)
    _check_size(img, max_pixels, min_side)  # from the header alone, before any pixel is decoded
    plain = img.format == "PNG" and img.mode == "L" and "transparency" not in img.info
    try:
        img.seek(0)  # multi-page TIFF: the first page is the line
        img.load()
        orientation = img.getexif().get(_ORIENTATION, 1)
        plain = plain and orientation == 1
        # Phone photos store rotation in EXIF; without one, exif_transpose would only copy the image (a whole
        # 18 MP page scan each time).
        gray = to_gray(ImageOps.exif_transpose(img) if orientation != 1 else img)
    except ImageRejected:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:
        raise ImageRejected(f"image data is truncated or corrupt ({err}); re-export the image") from err
    _check_size(gray, max_pixels, min_side)  # EXIF rotation can swap sides
    return gray, plain


def decode_line_image(data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> Image.Image:
    """Decode image bytes to an 8-bit grayscale image, or raise ImageRejected with a reason."""
    return _decode(data, max_pixels, min_side)[0]


def line_png(data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> tuple[Image.Image, bytes]:
    """Decoded 8-bit gray image and its PNG bytes; a plain 8-bit gray PNG keeps its own bytes (no re-encode)."""
    gray, plain = _decode(data, max_pixels, min_side)
    return gray, (bytes(data) if plain else encode_png(gray))


def encode_png(img: Image.Image) -> bytes:
    """Encode an image as PNG bytes (8-bit grayscale images stay single-channel)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def iter_frames(data: bytes, *, max_frames: int = 2000, max_pixels: int = MAX_PIXELS):
    """Every frame of a (multi-page) image as 8-bit gray, one at a time (a 2000-page TIFF never sits in memory
    whole): the pages of a multi-page TIFF, else one image. Raises ImageRejected with a reason."""
    img = _open_header(data)
    try:
        count = getattr(img, "n_frames", 1)
        if count > max_frames:
            raise ImageRejected(f"{count} pages in one file, above the {max_frames}-page limit; split the file")
        for index in range(count):
            img.seek(index)
            _check_size(img, max_pixels, MIN_SIDE)
            img.load()
            yield to_gray(ImageOps.exif_transpose(img.copy()))
    except ImageRejected:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, TypeError) as err:
        # TypeError: Pillow's TIFF reader on a truncated file ("Missing dimensions").
        raise ImageRejected(f"image data is truncated or corrupt ({err}); re-export the image") from err

