"""Line OCR over folders and tables: the code behind `ocr-assets recognize` and the inference assets."""

from __future__ import annotations

import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from ocr_assets.data.gt_folder import IMAGE_EXTENSIONS
from ocr_assets.models.base import Recognizer

logger = logging.getLogger(__name__)


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _decoded_or_error(blob: bytes) -> tuple[Image.Image | None, str | None]:
    """The guarded decoder's image, or why it refused it (judged per image: report and go on)."""
    from ocr_assets.data.images import decode_line_image

    try:
        return decode_line_image(blob), None
    except Exception as exc:  # noqa: BLE001 - an error row
        return None, str(exc) or type(exc).__name__


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
        blob = path.read_bytes()
    except OSError as exc:
        return path, None, str(exc) or type(exc).__name__
    return (path, *_decoded_or_error(blob))


def _bytes_or_error(path: Path) -> tuple[Path, bytes | None, str | None]:
    try:
        return path, path.read_bytes(), None
    except OSError as exc:
        return path, None, str(exc) or type(exc).__name__


CPU_BATCH, GPU_BATCH = 64, 1024  # recognize_dir's default lines per batch: the CPU readers, the GPU line path
CPU_CHUNK, GPU_CHUNK = 1024, 16384  # files per chunk (a GPU chunk is one call of the batched line path)


def streams_on_gpu(recognizer: Recognizer) -> bool:
    """Whether `recognize_dir` uses the batched GPU line path: a reader that has it, on a CUDA device."""
    return hasattr(recognizer, "recognize_encoded") and str(getattr(recognizer, "device", "")).startswith("cuda")


def recognize_dir(recognizer: Recognizer, root: Path, batch_size: int | None = None, chunk_size: int | None = None,
                  on_progress: Callable[[Progress], None] | None = None, gpu_stream: bool | None = None
                  ) -> Iterator[dict]:
    """One row per image found recursively, in path order; an unreadable image gives a row with `error`, not a crash.

    Images are read `chunk_size` at a time so the recognizer can group similar widths into its batches; threads
    decode the next chunk (one per core; Pillow releases the GIL) while the recognizer reads the current one.
    `gpu_stream` (default: `streams_on_gpu`): the batched GPU line path instead — threads read the next chunk's
    bytes while worker processes (one `FeedPool` for the whole folder) decode the current one and the GPU reads it.
    """
    from contextlib import ExitStack

    paths = find_images(root)
    stream = streams_on_gpu(recognizer) if gpu_stream is None else gpu_stream
    batch_size = batch_size or (GPU_BATCH if stream else CPU_BATCH)
    chunk_size = chunk_size or (GPU_CHUNK if stream else CPU_CHUNK)
    start = time.perf_counter()
    chunks = [paths[offset : offset + chunk_size] for offset in range(0, len(paths), chunk_size)]
    with ExitStack() as stack:
        if stream:
            from ocr_assets.models.compact.line_feed import FeedPool, default_workers

            feed_pool = stack.enter_context(FeedPool(default_workers()))
            # Two reader threads: file reads release the GIL, and more threads only contend for it with the main
            # thread, which launches the GPU work (16,384 page-cached files: 0.45 s with 1-2 threads, 0.82 s with 8
            # on 2 cores).
            load, io_pool = _bytes_or_error, stack.enter_context(ThreadPoolExecutor(2))

            def read(blobs: list) -> list:
                return _read_streamed(recognizer, blobs, batch_size, feed_pool)
        else:
            load, io_pool = _open_or_error, stack.enter_context(ThreadPoolExecutor(os.cpu_count() or 1))

            def read(images: list) -> list:
                return _recognize_safely(recognizer, images, batch_size)

        pending = io_pool.map(load, chunks[0]) if chunks else iter(())
        for k in range(len(chunks)):
            loaded = list(pending)
            pending = io_pool.map(load, chunks[k + 1]) if k + 1 < len(chunks) else iter(())
            results = iter(read([item for _, item, _ in loaded if item is not None]))
            for path, item, err in loaded:
                row = {"image": path.relative_to(root).as_posix()}
                if item is None:
                    row.update(text="", confidence=0.0, error=err)
                else:
                    r = next(results)
                    row.update(text=r.text, confidence=round(float(r.confidence), 4))
                    if r.error:
                        row["error"] = r.error
                yield row
            if on_progress:
                on_progress(Progress(min((k + 1) * chunk_size, len(paths)), len(paths), time.perf_counter() - start))


def _read_streamed(recognizer, blobs: list[bytes], batch_size: int, feed_pool) -> list:
    """The batched GPU line path's readings of encoded images, in their order; if a call fails (e.g. out of GPU
    memory on a wide batch), the per-chunk path's instead: the guarded decoder, then `_recognize_safely`."""
    from ocr_assets.models.base import Recognition

    try:
        got = dict(recognizer.recognize_encoded(blobs, batch_size=batch_size, pool=feed_pool))
        return [got[i] for i in range(len(blobs))]
    except Exception as exc:  # noqa: BLE001 - this chunk the other way, no row lost
        logger.warning("batched GPU read of %d files failed (%s: %s); reading them image by image",
                       len(blobs), type(exc).__name__, exc)
    opened = [_decoded_or_error(blob) for blob in blobs]
    results = iter(_recognize_safely(recognizer, [im for im, _ in opened if im is not None], min(batch_size, CPU_BATCH)))
    return [next(results) if im is not None else Recognition(text="", confidence=0.0, error=err) for im, err in opened]


def images_from_png_bytes(blobs: list[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)).convert("L") for b in blobs]
