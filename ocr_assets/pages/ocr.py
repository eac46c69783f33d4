"""Page OCR: segment printed pages into lines, read the lines of many pages in one batch, export
text / JSONL / PAGE / ALTO (`ocr-assets pages` and the corpus assets)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ocr_assets.models.base import Recognizer
from ocr_assets.pages.export import PageLine, PageResult, alto_xml, page_xml
from ocr_assets.pages.segment import LineBox, segment_lines

OUTPUT_SUFFIXES = (".txt", ".jsonl", ".page.xml", ".alto.xml")


def refine_role(box: LineBox, text: str) -> None:
    """Layout alone cannot tell a short running header from a page number; the text can."""
    if box.role not in ("header", "page-number"):
        return
    letters = sum(ch.isalpha() for ch in text)
    digits = sum(ch.isdigit() for ch in text)  # Arabic-Indic, Persian and Western digits alike
    if digits and letters == 0:
        box.role = "page-number"
    elif box.role == "page-number" and letters >= 2:
        box.role = "header"


def read_pages(recognizer: Recognizer, pages: list[tuple[str, Image.Image, list[LineBox]]],
               batch_size: int = 64) -> list[PageResult]:
    """Read the lines of all pages in one recognizer call (keeps a GPU busy across small pages)."""
    crops = [box.crop(gray) for _, gray, boxes in pages for box in boxes]
    reads = iter(recognizer.recognize(crops, batch_size=batch_size) if crops else [])
    results = []
    for name, gray, boxes in pages:
        lines = []
        for box in boxes:
            r = next(reads)
            refine_role(box, r.text)
            lines.append(PageLine(box, r.text, float(r.confidence), list(r.char_confidences), list(r.char_positions)))
        results.append(PageResult(name, gray.width, gray.height, lines))
    return results


def ocr_page(recognizer: Recognizer, page: Image.Image, name: str) -> PageResult:
    """Lines in reading order; a page with no text gives an empty result, not an error."""
    gray = page.convert("L")
    return read_pages(recognizer, [(name, gray, segment_lines(gray))])[0]


def page_files(result: PageResult, **extra) -> dict[str, bytes]:
    """suffix -> bytes: `.txt`, `.jsonl` (line and word confidences), `.page.xml` (PAGE 2019), `.alto.xml` (ALTO 4)."""
    return dict(zip(OUTPUT_SUFFIXES, (result.text().encode("utf-8"), result.jsonl(**extra).encode("utf-8"),
                                      page_xml(result), alto_xml(result))))


def write_page(result: PageResult, out_dir: Path, stem: str, **extra) -> list[Path]:
    """The page's four files in a local folder (`ocr-assets pages`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for suffix, data in page_files(result, **extra).items():
        files.append(out_dir / f"{stem}{suffix}")
        files[-1].write_bytes(data)
    return files
