"""Page OCR: segment printed pages into lines, read the lines of many pages in one batch, export
text / JSONL / PAGE / ALTO (`ocr-assets pages` and the corpus assets)."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from ocr_assets.models.base import Recognition, Recognizer
from ocr_assets.pages.export import PageLine, PageResult, alto_xml, page_xml
from ocr_assets.pages.segment import LineBox, segment_lines

OUTPUT_SUFFIXES = (".txt", ".jsonl", ".page.xml", ".alto.xml")
MAX_WORKERS = 16


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
    height = prepared_line_height(recognizer)
    crops = [box.crop(gray, height) for _, gray, boxes in pages for box in boxes]
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
    gray = page if page.mode == "L" else page.convert("L")
    return read_pages(recognizer, [(name, gray, segment_lines(gray))])[0]


@dataclass
class SegmentedPage:
    """A page file decoded and segmented (in a worker process): its size, line boxes and full-resolution crops, or,
    with `line_height`, the crops already prepared for a compact recognizer (`lines.prepare_line`: uint8 arrays of
    that height, or an error message per line), so only small arrays travel back from the worker."""

    width: int
    height: int
    boxes: list[LineBox]
    crops: list


def segment_page_file(path: str, line_height: int | None = None, prepare: bool = True) -> SegmentedPage:
    """Decode a page file (the guarded decoder: size cap, any mode to 8-bit grey), segment it, cut its lines (for a
    recognizer reading lines `line_height` px high: skewed lines straightened at a reduced scale) and, with
    `prepare`, prepare them for it."""
    from ocr_assets.data.images import decode_line_image

    gray = decode_line_image(Path(path).read_bytes())
    boxes = segment_lines(gray)
    crops = [box.crop(gray, line_height) for box in boxes]
    if line_height and prepare:
        crops = [_prepared(crop, line_height) for crop in crops]
    return SegmentedPage(gray.width, gray.height, boxes, crops)


def _prepared(crop: Image.Image, line_height: int):
    from ocr_assets.models.compact.lines import prepare_line

    try:
        return prepare_line(crop, line_height)
    except Exception as exc:  # noqa: BLE001 - one bad line gives an error row, as recognize() would
        return f"{type(exc).__name__}: {exc}"


def _segment_or_error(path: str, line_height: int | None = None, prepare: bool = True) -> SegmentedPage | str:
    try:
        return segment_page_file(path, line_height, prepare)
    except Exception as exc:  # noqa: BLE001 - one bad page must not stop the others
        return " ".join(str(exc).split()) or type(exc).__name__


def prepared_line_height(recognizer: Recognizer) -> int | None:
    """The line height a compact recognizer (ONNX Runtime or torch) reads prepared arrays at; None for others."""
    if getattr(recognizer, "backend", None) != "compact" or not hasattr(recognizer, "recognize_arrays"):
        return None
    height = getattr(recognizer, "input_height", None)
    if height is None and hasattr(recognizer, "model"):
        height = getattr(getattr(recognizer.model, "config", None), "input_height", None)
    return int(height) if height else None


def ocr_page_files(recognizer: Recognizer, paths: Sequence[Path], workers: int | None = None,
                   pages_per_read: int = 4, batch_size: int = 64) -> Iterator[tuple[Path, PageResult | str]]:
    """(path, result or error message) per page file, in order. Worker processes (one per core by default; 0: in
    this process) decode and segment the next pages while the recognizer reads the lines of the previous ones,
    `pages_per_read` pages per recognizer call so batches fill with lines of similar widths."""
    # Default: one per core, at most one per page and 16 (each worker holds numpy/scipy, ~100 MB).
    workers = min(os.cpu_count() or 1, len(paths), MAX_WORKERS) if workers is None else workers
    height = prepared_line_height(recognizer)
    if workers <= 0 or len(paths) == 1:  # crops cut for `height`; the recognizer prepares them (its threads)
        segmented: Iterator = (_segment_or_error(str(p), height, False) for p in paths)
        yield from _read_segmented(recognizer, paths, segmented, pages_per_read, batch_size)
        return
    import multiprocessing

    # spawn, not fork: the parent holds ONNX Runtime / torch thread pools that a forked child would inherit broken.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        ahead = 2 * workers + pages_per_read  # bounded, so segmented pages never pile up in memory
        # Workers also prepare the lines for a compact recognizer: the resize runs beside the model, and 48 px
        # arrays instead of full-resolution crops come back through the pipe.
        pending: deque[Future] = deque(pool.submit(_segment_or_error, str(p), height) for p in paths[:ahead])
        queued = len(pending)

        def results() -> Iterator:
            nonlocal queued
            while pending:
                done = pending.popleft().result()
                if queued < len(paths):
                    pending.append(pool.submit(_segment_or_error, str(paths[queued]), height))
                    queued += 1
                yield done

        yield from _read_segmented(recognizer, paths, results(), pages_per_read, batch_size)


def _read_segmented(recognizer: Recognizer, paths: Sequence[Path], segmented: Iterator, pages_per_read: int,
                    batch_size: int) -> Iterator[tuple[Path, PageResult | str]]:
    group: list[tuple[Path, SegmentedPage | str]] = []
    for path, page in zip(paths, segmented):
        group.append((path, page))
        if len(group) == pages_per_read:
            yield from _read_group(recognizer, group, batch_size)
            group = []
    if group:
        yield from _read_group(recognizer, group, batch_size)


def _read_group(recognizer: Recognizer, group: list, batch_size: int) -> Iterator[tuple[Path, PageResult | str]]:
    crops = [crop for _, page in group if not isinstance(page, str) for crop in page.crops]
    try:
        if crops and not isinstance(crops[0], Image.Image):  # prepared in the worker (arrays or error messages)
            good = [c for c in crops if isinstance(c, np.ndarray)]
            read = iter(recognizer.recognize_arrays(good, batch_size=batch_size) if good else [])
            reads = iter([next(read) if isinstance(c, np.ndarray) else Recognition(text="", confidence=0.0, error=c)
                          for c in crops])
        else:
            reads = iter(recognizer.recognize(crops, batch_size=batch_size) if crops else [])
    except Exception as exc:  # noqa: BLE001 - reported for each page of the group, the next group goes on
        message = " ".join(str(exc).split()) or type(exc).__name__
        for path, _ in group:
            yield path, message
        return
    for path, page in group:
        if isinstance(page, str):
            yield path, page
            continue
        lines = []
        for box in page.boxes:
            r = next(reads)
            refine_role(box, r.text)
            lines.append(PageLine(box, r.text, float(r.confidence), list(r.char_confidences), list(r.char_positions)))
        yield path, PageResult(path.name, page.width, page.height, lines)


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
