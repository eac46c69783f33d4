"""Page OCR: segment a printed page into lines, read them, export text / PAGE / ALTO (`ocr-assets pages`)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ocr_assets.models.base import Recognizer
from ocr_assets.pages.export import PageLine, PageResult, alto_xml, page_xml
from ocr_assets.pages.segment import segment_lines


def ocr_page(recognizer: Recognizer, page: Image.Image, name: str) -> PageResult:
    """Lines top to bottom; a page with no text gives an empty result, not an error."""
    gray = page.convert("L")
    boxes = segment_lines(gray)
    reads = recognizer.recognize([b.crop(gray) for b in boxes]) if boxes else []
    lines = [PageLine(b, r.text, float(r.confidence)) for b, r in zip(boxes, reads)]
    return PageResult(name, gray.width, gray.height, lines)


def write_page(result: PageResult, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{stem}.txt", out_dir / f"{stem}.page.xml", out_dir / f"{stem}.alto.xml"]
    files[0].write_text(result.text(), encoding="utf-8")
    files[1].write_bytes(page_xml(result))
    files[2].write_bytes(alto_xml(result))
    return files
