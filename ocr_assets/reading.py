"""Line OCR over folders and tables: the code behind `ocr-assets recognize` and the inference assets."""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from ocr_assets.data.gt_folder import IMAGE_EXTENSIONS
from ocr_assets.models.base import Recognizer


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _open(path: Path) -> Image.Image:
    from ocr_assets.data.images import decode_line_image

    return decode_line_image(path.read_bytes())


def _recognize_safely(recognizer: Recognizer, images: list[Image.Image], batch_size: int) -> list:
    """The recognizer's results, one per image; if the batch fails, image by image with error rows."""
    from ocr_assets.models.base import Recognition

    if not images:
        return []
    try:
        results = recognizer.recognize(images, batch_size=batch_size)
        if len(results) == len(images):
            return results
    except Exception:  # noqa: BLE001 - fall back to one image at a time below
        pass
    out = []
    for image in images:
        try:
            out.append(recognizer.recognize([image], batch_size=1)[0])
        except Exception as exc:  # noqa: BLE001 - an error row, not a crash
            out.append(Recognition(text="", confidence=0.0, error=f"{type(exc).__name__}: {exc}"))
    return out


@dataclass
class Progress:
    done: int
    total: int
    seconds: float


def _open_or_error(path: Path) -> tuple[Path, Image.Image | None, str | None]:
    try:
        return path, _open(path), None
    except Exception as exc:  # judged per image: report and go on
        return path, None, str(exc) or type(exc).__name__


def recognize_dir(recognizer: Recognizer, root: Path, batch_size: int = 64, chunk_size: int = 1024,
                  on_progress: Callable[[Progress], None] | None = None) -> Iterator[dict]:
    """One row per image found recursively; an unreadable image gives a row with `error`, not a crash.

    Images are read `chunk_size` at a time so the recognizer can group similar widths into its batches; threads
    decode the next chunk (one per core; Pillow releases the GIL) while the recognizer reads the current one.
    """
    paths = find_images(root)
    start = time.perf_counter()
    chunks = [paths[offset : offset + chunk_size] for offset in range(0, len(paths), chunk_size)]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pending = pool.map(_open_or_error, chunks[0]) if chunks else iter(())
        for k, chunk in enumerate(chunks):
            opened = list(pending)
            pending = pool.map(_open_or_error, chunks[k + 1]) if k + 1 < len(chunks) else iter(())
            good = [im for _, im, _ in opened if im is not None]
            results = iter(_recognize_safely(recognizer, good, batch_size))
            for path, im, err in opened:
                row = {"image": path.relative_to(root).as_posix()}
                if im is None:
                    row.update(text="", confidence=0.0, error=err)
                else:
                    r = next(results)
                    row.update(text=r.text, confidence=round(float(r.confidence), 4))
                    if r.error:
                        row["error"] = r.error
                yield row
            if on_progress:
                on_progress(Progress(min((k + 1) * chunk_size, len(paths)), len(paths), time.perf_counter() - start))


def images_from_png_bytes(blobs: list[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)).convert("L") for b in blobs]
