"""Line OCR over folders and tables: the code behind `ocr-assets recognize` and the inference assets."""

from __future__ import annotations

import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from ocr_assets.data.gt_folder import IMAGE_EXTENSIONS
from ocr_assets.models.base import Recognizer

logger = logging.getLogger(__name__)


def find_images(root: Path) -> list[Path]:
    """Image files under `root` (recursively; symbolic links to folders not followed), in path order (`Path`
    order, by parts): a depth-first `os.scandir` walk with each folder's entries sorted by name yields that order
    without comparing paths (`sorted(root.rglob(...))` took 3.3 s over 52,960 files on a GPU host)."""
    found: list[Path] = []

    def walk(folder: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:  # gone, not a folder, or not ours to read: skipped, as rglob skips it
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                walk(entry.path)
            elif _suffix(entry.name) in IMAGE_EXTENSIONS and entry.is_file():
                found.append(Path(entry.path))

    walk(str(root))
    return found


def _suffix(name: str) -> str:
    """`Path(name).suffix.lower()` without a Path (a name of dots only, e.g. "..png", still has ".png")."""
    i = name.rfind(".")
    return name[i:].lower() if 0 < i < len(name) - 1 else ""


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


def _open_or_error(path: Path) -> tuple[Image.Image | None, str | None]:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        return None, str(exc) or type(exc).__name__
    return _decoded_or_error(blob)


CPU_BATCH, GPU_BATCH = 64, 1024  # recognize_dir's default lines per batch: the CPU readers, the GPU line path
CPU_CHUNK = 1024  # files per chunk on the CPU path
# A GPU chunk is one call of the batched line path: each pays a pipeline fill and drain, so chunks are as large
# as memory allows: files in listing order until GPU_CHUNK_BYTES of encoded images (one shared copy per chunk) or
# GPU_CHUNK_MAX files.
GPU_CHUNK_MAX, GPU_CHUNK_BYTES = 65536, 256 << 20


def gpu_chunks(paths: list[Path]) -> list[list[Path]]:
    """`paths` cut into GPU chunks by their sizes now (a file that cannot be stat'ed counts as empty: it becomes
    an error row when its chunk is read)."""
    return [chunk for chunk, _ in _cut_by_size(paths)]


def gpu_files(paths: list[Path]) -> list:
    """`gpu_chunks` as `line_feed.EncodedFiles` with the sizes taken for the cut (each file stat'ed once)."""
    from ocr_assets.models.compact.line_feed import EncodedFiles

    return [EncodedFiles(chunk, sizes) for chunk, sizes in _cut_by_size(paths)]


def _cut_by_size(paths: list[Path]) -> list[tuple[list[Path], list[int]]]:
    from ocr_assets.models.compact.line_feed import file_size

    chunks: list[tuple[list[Path], list[int]]] = []
    current: list[Path] = []
    sizes: list[int] = []
    held = 0
    for path in paths:
        size = file_size(path)
        if current and (held + max(0, size) > GPU_CHUNK_BYTES or len(current) >= GPU_CHUNK_MAX):
            chunks.append((current, sizes))
            current, sizes, held = [], [], 0
        current.append(path)
        sizes.append(size)
        held += max(0, size)
    return chunks + ([(current, sizes)] if current else [])


def streams_on_gpu(recognizer: Recognizer) -> bool:
    """Whether `recognize_dir` uses the batched GPU line path: a reader that has it, on a CUDA device."""
    return hasattr(recognizer, "recognize_encoded") and str(getattr(recognizer, "device", "")).startswith("cuda")


def recognize_dir(recognizer: Recognizer, root: Path, batch_size: int | None = None, chunk_size: int | None = None,
                  on_progress: Callable[[Progress], None] | None = None, gpu_stream: bool | None = None,
                  paths: list[Path] | None = None, feed_pool=None, files: list | None = None) -> Iterator[dict]:
    """One row per image found recursively, in path order; an unreadable image gives a row with `error`, not a crash.

    Images are read `chunk_size` at a time so the recognizer can group similar widths into its batches; threads
    decode the next chunk (one per core; Pillow releases the GIL) while the recognizer reads the current one.
    `gpu_stream` (default: `streams_on_gpu`): the batched GPU line path instead — one `FeedPool` for the whole
    folder, whose worker processes read each chunk's files into shared memory and decode them for the GPU (chunks
    cut by `gpu_chunks` unless `chunk_size` is given).
    `paths`: the images under `root` when the caller has found them already (`find_images`), so that a folder is
    walked once. `feed_pool`: a `line_feed.FeedPool` the caller started (and closes) for the GPU path, e.g. forked
    while the model loads; by default one is made here. On that path each chunk's files are read into shared
    memory and probed ahead, on the pool's read-ahead thread, while the chunk before is read; `files`: the chunks
    as `gpu_files(paths)` cut them, when the caller has cut them and started the first one's read-ahead (the CLI
    does, while the model loads).
    """
    from contextlib import ExitStack

    paths = find_images(root) if paths is None else paths
    stream = streams_on_gpu(recognizer) if gpu_stream is None else gpu_stream
    batch_size = batch_size or (GPU_BATCH if stream else CPU_BATCH)
    start = time.perf_counter()
    if stream and (files is not None or not chunk_size):
        files = gpu_files(paths) if files is None else files
        if sum(len(f) for f in files) != len(paths):
            raise ValueError(f"files hold {sum(len(f) for f in files)} images but paths {len(paths)}: cut them from "
                             "the same list (gpu_files(paths))")
        ends = list(accumulate(len(f) for f in files))
        chunks = [paths[lo:hi] for lo, hi in zip([0] + ends[:-1], ends)]
    else:
        chunk_size = chunk_size or CPU_CHUNK
        chunks = [paths[offset : offset + chunk_size] for offset in range(0, len(paths), chunk_size)]
    under = str(root) + os.sep

    def name(path: Path) -> str:  # Path.relative_to costs ~10 us a row; slicing the string well under 1 us
        text = str(path)
        return text[len(under):].replace(os.sep, "/") if text.startswith(under) else path.relative_to(root).as_posix()

    with ExitStack() as stack:
        if stream:
            from ocr_assets.models.compact.line_feed import EncodedFiles, FeedPool, default_workers

            # The pool's workers read each chunk's files straight into the feed's shared copy: reader threads here
            # had made the thread that drives the GPU wait for the GIL around every file, and bytes sent back from
            # worker processes cost it an estimated ~30 us a file (docs/NOTES.md, session 10). Sizes are taken
            # when the folder is cut into chunks; unreadable files come back as the feed's error rows.
            if feed_pool is None:
                feed_pool = stack.enter_context(FeedPool(default_workers()))
            if files is None:
                files = [EncodedFiles(chunk) for chunk in chunks]
            reader = None
            if len(files) > 1:  # the GPU reads the next chunk while this thread turns one into rows
                feed_pool.start()  # workers forked here, not from the reading thread
                reader = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="ocr-assets-gpu-reader"))
            readings = _read_chunks_streamed(recognizer, files, batch_size, feed_pool, reader)
        else:
            io_pool = stack.enter_context(ThreadPoolExecutor(os.cpu_count() or 1))
            readings = _read_decoded(recognizer, chunks, batch_size, io_pool)
        done = 0
        for chunk, results in zip(chunks, readings):
            for path, r in zip(chunk, results):
                row = {"image": name(path), "text": r.text, "confidence": round(float(r.confidence), 4)}
                if r.error:
                    row["error"] = r.error
                yield row
            done += len(chunk)
            if on_progress:
                on_progress(Progress(done, len(paths), time.perf_counter() - start))


def _readings(recognizer, opened: list[tuple[Image.Image | None, str | None]], batch_size: int) -> list:
    """One Recognition per (image, error) pair: the images read by `_recognize_safely`, an error row for the rest."""
    from ocr_assets.models.base import Recognition

    results = iter(_recognize_safely(recognizer, [im for im, _ in opened if im is not None], batch_size))
    return [next(results) if im is not None else Recognition(text="", confidence=0.0, error=err) for im, err in opened]


def _read_decoded(recognizer, chunks: list[list[Path]], batch_size: int, io_pool: ThreadPoolExecutor) -> Iterator[list]:
    """The CPU path, per chunk one Recognition per file: reader threads open and decode the next chunk while the
    recognizer reads this one."""
    pending = io_pool.map(_open_or_error, chunks[0]) if chunks else iter(())
    for k in range(len(chunks)):
        opened = list(pending)
        pending = io_pool.map(_open_or_error, chunks[k + 1]) if k + 1 < len(chunks) else iter(())
        yield _readings(recognizer, opened, batch_size)


def _read_chunks_streamed(recognizer, files: list, batch_size: int, feed_pool,
                          reader: ThreadPoolExecutor | None = None) -> Iterator[list]:
    """Per chunk (`line_feed.EncodedFiles`) its readings on the GPU line path; each chunk's files are read ahead
    while the one before is read. With `reader` (one thread), each chunk is read there while the caller turns the
    one before into rows — the pattern `_read_decoded` uses for the CPU path."""
    def read(k: int) -> list:
        files[k].read_ahead(feed_pool)  # nothing when it was started already (the CLI, or the chunk before)
        if k + 1 < len(files):
            files[k + 1].read_ahead(feed_pool)
        return _read_streamed(recognizer, files[k], batch_size, feed_pool)

    if reader is None:
        yield from map(read, range(len(files)))
        return
    pending = reader.submit(read, 0) if files else None
    for k in range(len(files)):
        got = pending.result()
        pending = reader.submit(read, k + 1) if k + 1 < len(files) else None
        yield got


def _read_streamed(recognizer, files, batch_size: int, feed_pool) -> list:
    """The batched GPU line path's readings of `files` (a `line_feed.EncodedFiles`), in their order; if a call fails
    (e.g. out of GPU memory on a wide batch), the per-chunk path's instead: the guarded decoder, then
    `_recognize_safely`."""
    try:
        # Rows carry the text and the line's confidence only: the per-character details are not computed.
        got = dict(recognizer.recognize_encoded(files, batch_size=batch_size, pool=feed_pool, details=False))
        return [got[i] for i in range(len(files))]
    except Exception as exc:  # noqa: BLE001 - this chunk the other way, no row lost
        logger.warning("batched GPU read of %d files failed (%s: %s); reading them image by image",
                       len(files), type(exc).__name__, exc)
        files.drop_ahead()  # a read-ahead no feed took (the read failed before its feed): its copy goes now
    opened = [_decoded_or_error(blob) if err is None else (None, err) for blob, err in map(files.read, range(len(files)))]
    return _readings(recognizer, opened, min(batch_size, CPU_BATCH))


def images_from_png_bytes(blobs: list[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)).convert("L") for b in blobs]
