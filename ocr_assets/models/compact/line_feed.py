"""Host side of the batched line path (issue 14): encoded line images -> one flat uint8 buffer per batch, decoded by
worker processes straight into shared memory. No torch here (the workers never import it).

The encoded lines are copied once into shared memory (a memfd). Their headers are read there (PNG's IHDR and chunk
list, JPEG's SOF marker, a few microseconds each; Pillow's header parser for anything else), by the workers in
parallel for large inputs; each header is checked against the size caps of `data.images`, and the line is placed in
its batch (`lines.width_batches` on the prepared widths) at an offset of its batch's buffer. Workers decode chunks of
a batch's lines into their offsets (per task only indices and offsets are pickled): plain 8-bit grey PNGs (no
transparency, no EXIF) with OpenCV when it is installed, else Pillow, both lossless, so the pixels equal
`data.images.decode_line_image`'s; every other image goes through `decode_line_image` itself (any mode, 16-bit,
transparency, EXIF rotation, corrupt files reported with the same messages). JPEG lines can be left undecoded for the
consumer (`device_kinds`: nvJPEG on a GPU, `device_prep`).

A batch's buffer is one of a few shared regions reused in turn; the consumer gives it back with `release` once it
has copied it (to a GPU: after the copy has finished). Workers and buffers live in a `FeedPool`, which a caller can
keep across feeds so that a process reading many calls forks and page-locks once; workers map regions created after
they started through /proc/<pid>/fd (Linux; elsewhere the feed decodes in its own process).
"""

from __future__ import annotations

import io
import itertools
import mmap
import multiprocessing
import os
import queue
import signal
import struct
import threading
import warnings
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Iterator, Sequence

import numpy as np

from ocr_assets.models.compact.lines import PAD_MULTIPLE, target_width, width_batches

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLAIN_PNG, JPEG, OTHER = 0, 1, 2  # line kinds: the fast lossless path, JPEG (host or device), the guarded decoder
_NOT_PLAIN_CHUNKS = (b"tRNS", b"eXIf", b"PLTE")  # transparency, EXIF orientation, palette: decode_line_image's work
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
TASK_LINES = 128  # lines per worker task: a batch is decoded by several workers at once
# prepare="auto": workers also resize when the median line is at most this many times the model's height (48 px
# lines: 17.2k lines/s end to end on an H200 against 10.6k resizing on the device; ~83 px lines: 4.9k against 6.3k).
AUTO_PREPARE_MAX_HEIGHT = 1.5


def _jpeg_header(blob: bytes) -> tuple[int, int, int, bool] | None:
    """(width, height, components, rotated by EXIF) from a JPEG's markers, or None when they cannot be read."""
    pos, size, rotated = 2, len(blob), False
    while pos + 4 <= size:
        if blob[pos] != 0xFF:
            return None
        marker = blob[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", blob, pos + 2)
        if marker == 0xE1 and blob[pos + 4 : pos + 10] == b"Exif\x00\x00":
            rotated = _exif_orientation(blob[pos + 10 : pos + 2 + length]) not in (None, 1)
        elif marker in _JPEG_SOF:
            if pos + 10 > size:
                return None
            h, w = struct.unpack_from(">HH", blob, pos + 5)
            return w, h, blob[pos + 9], rotated
        elif marker in (0xDA, 0xD9):  # scan data before any frame header
            return None
        pos += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for k in range(count):
            tag, _, _, value = struct.unpack_from(order + "HHIH", tiff, ifd + 2 + 12 * k)
            if tag == 0x0112:
                return value
    except (KeyError, struct.error):
        return None
    return None


def probe(blob: bytes) -> tuple[int, int, int]:
    """(width, height, kind) of an encoded line from its header alone; raises ImageRejected as the guarded decoder
    would (empty, not an image, over the size cap, too small)."""
    from ocr_assets.data import images

    if blob[:8] == PNG_SIGNATURE and len(blob) >= 33 and blob[12:16] == b"IHDR":
        w, h = struct.unpack_from(">II", blob, 16)
        kind = PLAIN_PNG if blob[24] == 8 and blob[25] == 0 else OTHER  # 8-bit, colour type 0 (grey)
        pos = 33
        while kind == PLAIN_PNG and pos + 8 <= len(blob):
            (length,) = struct.unpack_from(">I", blob, pos)
            name = blob[pos + 4 : pos + 8]
            if name == b"IDAT":
                break
            if name in _NOT_PLAIN_CHUNKS:
                kind = OTHER
            pos += 12 + length
        images._check_size(SimpleNamespace(size=(w, h)), images.MAX_PIXELS, images.MIN_SIDE)
        return w, h, kind
    if blob[:3] == b"\xff\xd8\xff":
        header = _jpeg_header(blob)
        if header is not None:
            w, h, components, rotated = header
            images._check_size(SimpleNamespace(size=(w, h)), images.MAX_PIXELS, images.MIN_SIDE)
            return w, h, (JPEG if components in (1, 3) and not rotated else OTHER)
    image = images._open_header(blob)
    images._check_size(image, images.MAX_PIXELS, images.MIN_SIDE)
    w, h = image.size
    return w, h, OTHER


# --- decoding (worker side) --------------------------------------------------------------------------------


def _cv2():
    try:
        import cv2  # noqa: PLC0415 - optional, present on GPU images

        cv2.setNumThreads(1)
        return cv2
    except Exception:  # noqa: BLE001 - not installed, or a broken build: Pillow does it
        return None


def decoder_name(choice: str = "auto") -> str:
    """Which decoder reads plain grey PNGs: 'cv2' (OpenCV's libpng, ~2x Pillow) when installed, else 'pillow'."""
    choice = choice or "auto"
    if choice not in ("auto", "cv2", "pillow"):
        raise ValueError(f"decoder must be auto, cv2 or pillow; got {choice!r}")
    if choice == "auto":
        choice = os.environ.get("OCR_ASSETS_LINE_DECODER", "auto") or "auto"
    if choice in ("auto", "cv2"):
        return "cv2" if _cv2() is not None else "pillow"
    return "pillow"


def decode_into(blob: bytes, kind: int, out: np.ndarray, decoder: str = "pillow") -> tuple[int, int]:
    """Decode one line into `out` (a flat uint8 array of exactly height x width from its header): the 8-bit grey
    pixels `decode_line_image` gives. Returns the decoded (height, width) (EXIF rotation swaps them)."""
    from ocr_assets.data.images import decode_line_image
    from ocr_assets.errors import ImageRejected

    pixels = None
    if kind == PLAIN_PNG:
        if decoder == "cv2":
            cv2 = _cv2()
            pixels = cv2.imdecode(np.frombuffer(blob, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            if pixels is not None and (pixels.dtype != np.uint8 or pixels.ndim != 2):
                pixels = None
        else:
            from PIL import Image

            try:
                image = Image.open(io.BytesIO(blob))
                if image.mode == "L":
                    image.load()
                    pixels = np.asarray(image)
            except Exception:  # noqa: BLE001 - the guarded decoder below gives the reason
                pixels = None
    if pixels is None:  # any other image, or a PNG the fast path refused: the guarded decoder and its messages
        pixels = np.asarray(decode_line_image(blob))
    if pixels.size != out.size:
        raise ImageRejected(f"decoded image is {pixels.shape[1]}x{pixels.shape[0]}, its header said "
                            f"{out.size} pixels; re-export the image")
    out[:] = pixels.reshape(-1)
    return int(pixels.shape[0]), int(pixels.shape[1])


# --- shared memory the workers map by path ---------------------------------------------------------------


class SharedBuffer:
    """A region of shared memory (a memfd) that worker processes map by path, also ones started before it existed:
    what lets a `FeedPool` keep its workers across feeds. `view` is the whole region as uint8."""

    _serials = itertools.count(1)  # next() is atomic: buffers are also made on a pool's read-ahead thread

    def __init__(self, size: int):
        serial = next(SharedBuffer._serials)
        self.size = max(1, int(size))
        if SHARED_BY_PATH:
            fd = os.memfd_create("ocr_assets_feed")
            os.ftruncate(fd, self.size)
            self.map = mmap.mmap(fd, self.size)
            # The path names the memfd while this process holds `fd`; the inode tells a reused fd number apart.
            self.key = (f"/proc/{os.getpid()}/fd/{fd}", os.fstat(fd).st_ino, serial)
        else:  # no memfd (not Linux): an anonymous mapping, read in this process only (FeedPool has no workers)
            fd, self.map = -1, mmap.mmap(-1, self.size)
            self.key = (None, 0, serial)
        self.view = np.frombuffer(self.map, dtype=np.uint8)
        _OWN[self.key] = self.view
        # Closed with the object too: a feed that is never closed leaks no descriptor and no memory.
        self._release = weakref.finalize(self, _release_shared, self.key, fd)

    def close(self) -> None:
        """Forget the region: the memory goes once the last mapping of it (views, workers' maps) is gone."""
        self._release()
        self.view = None


def _release_shared(key, fd: int) -> None:
    _OWN.pop(key, None)
    if fd >= 0:
        os.close(fd)


SHARED_BY_PATH = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")  # workers can map later buffers
_OWN: dict = {}  # this process's own buffers by key (workers=0 reads them here, not through /proc)
_WORKER: dict = {"maps": {}}  # feed -> {key: view}, the two latest feeds (a feed and the next one read ahead)


def _worker_init() -> None:
    # The kernel's SIGTERM, not a Python handler inherited from the parent (a worker that outlives a close is
    # still stopped by a plain `kill`). `FeedPool.close` itself stops the workers with SIGKILL (`_killing_fork`).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _OWN.clear()  # the parent's, copied by the fork: mapped again by path like any later one
    _WORKER.update(maps={})
    # What decoding and preparing import, now: a pool forked early (the CLI forks it while the model loads) would
    # otherwise import them in every worker at its first batch, with the GPU waiting.
    _cv2()
    from PIL import Image, PngImagePlugin  # noqa: F401, PLC0415

    from ocr_assets.data import images  # noqa: F401, PLC0415
    from ocr_assets.models.compact import lines  # noqa: F401, PLC0415


def _buffer(key, feed: int) -> np.ndarray:
    """A shared buffer by key: this process's own, or mapped by path. Maps of feeds older than the two latest are
    dropped (their regions' memory goes once the parent closed them): a feed and the next one, whose files are
    read ahead while it is decoded, take turns on the workers without mapping their regions again each time."""
    own = _OWN.get(key)
    if own is not None:
        return own
    maps = _WORKER["maps"].get(feed)
    if maps is None:
        while len(_WORKER["maps"]) >= 2:
            del _WORKER["maps"][next(iter(_WORKER["maps"]))]
        maps = _WORKER["maps"][feed] = {}
    view = maps.get(key)
    if view is None:
        fd = os.open(key[0], os.O_RDWR)
        try:
            if os.fstat(fd).st_ino != key[1]:  # the parent closed that region and reused its fd number
                raise RuntimeError(f"shared buffer {key[0]} is gone (its feed was closed)")
            view = np.frombuffer(mmap.mmap(fd, 0), dtype=np.uint8)
        finally:
            os.close(fd)
        maps[key] = view
    return view


def _probe_task(feed: int, blob_key, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, list]:
    """`probe` of lines stored at blob_key[starts:ends]: ((lines, 3) width, height, kind; kind -1 = failed) and
    the failed lines' [(position, message)]."""
    blobs = _buffer(blob_key, feed)
    out = np.full((len(starts), 3), -1, dtype=np.int64)
    errors = []
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        try:
            out[k] = probe(blobs[a:b].tobytes())
        except Exception as exc:  # noqa: BLE001 - reported as the line's error row
            errors.append((k, f"{type(exc).__name__}: {exc}"))
    return out, errors


def prepare_into(pixels: np.ndarray, height: int, out: np.ndarray) -> int:
    """`lines.prepare_line` on decoded grey pixels, written into `out` ((height, W) of a batch, its padding zeroed);
    the prepared width. A line wider than W (only when EXIF rotation turned it) is squeezed to W."""
    from PIL import Image

    from ocr_assets.models.compact.lines import resize_and_ink

    h, w = pixels.shape
    new_w = min(target_width(w, h, height), out.shape[1])
    out[:, :new_w] = resize_and_ink(Image.fromarray(pixels), new_w, height)
    out[:, new_w:] = 0
    return new_w


def _decode_task(feed: int, blob_key, slot_key, indices: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 kinds: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, decoder: str,
                 prepare: tuple[int, int] | None = None) -> tuple[list, list]:
    """Decode lines `indices` (stored at blob_key[starts:ends], `sizes` pixels each) into buffer slot_key at
    `offsets`: (errors [(index, message)], shapes [(h, w)]). With `prepare` (height, batch width), each line is
    prepared as well and written as (height, batch width) rows at its offset; shapes then give (height, prepared
    width)."""
    blobs, buffer = _buffer(blob_key, feed), _buffer(slot_key, feed)
    errors, shapes = [], []
    for i, a, b, kind, off, n in zip(indices.tolist(), starts.tolist(), ends.tolist(), kinds.tolist(),
                                     offsets.tolist(), sizes.tolist()):
        blob = blobs[a:b].tobytes()
        try:
            if prepare is None:
                shapes.append(decode_into(blob, kind, buffer[off : off + n], decoder))
            else:
                height, width = prepare
                raw = np.empty(n, dtype=np.uint8)
                h, w = decode_into(blob, kind, raw, decoder)
                rows = buffer[off : off + height * width].reshape(height, width)
                shapes.append((height, prepare_into(raw.reshape(h, w), height, rows)))
        except Exception as exc:  # noqa: BLE001 - one bad image gives an error row
            errors.append((i, f"{type(exc).__name__}: {exc}"))
            shapes.append((0, 0))
    return errors, shapes


# --- the feed (main process) --------------------------------------------------------------------------------


class EncodedFiles:
    """Encoded line images named by file path: a `LineFeed` given these has its workers read the files straight
    into its shared copy, so no image's bytes pass through the consuming process (whose Python time bounds a GPU
    reader). Sizes are taken now (-1: could not stat; the worker's read then says why). `files[i]` reads a file
    (OSError when it cannot); `read(i)` gives (bytes, None) or (None, why). `sizes`: the sizes when the caller has
    just taken them (`reading.gpu_files`), so that each file is stat'ed once.
    `read_ahead(pool)` starts reading the files into shared memory and probing their headers on the pool's workers
    (from its read-ahead thread), so that a `LineFeed` made of them later starts at its batches: the first chunk of
    a folder while the model loads, the next one while this one is read."""

    def __init__(self, paths: Sequence, sizes: Sequence[int] | None = None):
        self.paths = [os.fspath(p) for p in paths]
        if sizes is None:
            sizes = [file_size(p) for p in self.paths]
        self.sizes = np.asarray(sizes, dtype=np.int64)
        if len(self.sizes) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.sizes)} sizes")
        self._ahead: Future | None = None

    def read_ahead(self, pool: "FeedPool") -> None:
        """Start `FileIndex(self, pool)` on the pool's read-ahead thread (once)."""
        if self._ahead is None:
            self._ahead = pool.ahead(FileIndex, self, pool, ("ahead", next(_AHEAD_IDS)))

    def take_index(self) -> "FileIndex | None":
        """The index read ahead (waits for it; its error, if it failed, is raised here), else None."""
        ahead, self._ahead = self._ahead, None
        return ahead.result() if ahead is not None else None

    def drop_ahead(self) -> None:
        """Forget what was read ahead (its shared copy closed): the files are being read another way."""
        try:
            index = self.take_index()
        except Exception:  # noqa: BLE001 - a failed read-ahead holds nothing
            return
        if index is not None:
            index.store.close()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> bytes:
        with open(self.paths[i], "rb") as f:
            return f.read()

    def read(self, i: int) -> tuple[bytes | None, str | None]:
        try:
            return self[i], None
        except OSError as exc:
            return None, str(exc) or type(exc).__name__


_AHEAD_IDS = itertools.count(1)


def file_size(path) -> int:
    """Bytes of the file at `path`, -1 when it cannot be stat'ed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _read_task(feed: int, store_key, paths: list[str], starts: np.ndarray, sizes: np.ndarray) -> list[tuple[int, str]]:
    """Read files into the store at `starts` (`sizes` bytes each, from a stat before); [(position, why)] of those
    that could not be read whole."""
    store = memoryview(_buffer(store_key, feed))
    errors = []
    for k, (path, a, size) in enumerate(zip(paths, starts.tolist(), sizes.tolist())):
        try:
            with open(path, "rb") as f:
                got = f.readinto(store[a : a + max(size, 0)]) if size > 0 else 0
                if size < 0 or got != size or f.read(1):
                    errors.append((k, f"{path}: changed while being read ({size} bytes at its stat, "
                                      f"{got} read{' and more' if size >= 0 and got == size else ''})"))
        except OSError as exc:
            errors.append((k, str(exc) or type(exc).__name__))
    return errors


@dataclass
class FeedBatch:
    """One batch, decoded: lines `indices` (into the blobs) with their decoded sizes, host lines' pixels at
    `offsets` of `pixels` (a view of shared buffer `slot`), `device` lines (JPEG left to the consumer) after them:
    their offsets continue past `host_bytes`. `errors`: (index, message) of lines that failed (not in indices)."""

    slot: int
    indices: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    offsets: np.ndarray
    pixels: np.ndarray
    host_bytes: int
    device: list[tuple[int, bytes]] = field(default_factory=list)  # (position in the batch, encoded bytes)
    errors: list[tuple[int, str]] = field(default_factory=list)
    width: int = 0  # prepared feeds: every line is (height, width) at its offset, `widths` its prepared width


PROBE_LINES = 2048  # lines per header task; inputs of fewer lines than this are probed in the main process


def default_workers() -> int:
    """Decode workers when a caller names none: every core but the one the consumer runs on."""
    return max(1, (os.cpu_count() or 2) - 1)


def _run_ahead(work: queue.SimpleQueue) -> None:
    """A read-ahead thread: (future, function, args) from its queue until None."""
    while (item := work.get()) is not None:
        future, function, args = item
        item = None  # nothing of a done item stays reachable (a FileIndex holds a chunk's shared copy)
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(function(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the result
                future.set_exception(exc)
        future = function = args = None


def _killing_fork():
    """A fork context whose pool workers `Pool.terminate()` stops with SIGKILL. SIGTERM could be lost: a parent with
    a Python SIGTERM handler (Dagster leaves `default_int_handler` there after an in-process run) forks workers that
    run that handler until `_worker_init` resets it, and a SIGTERM landing in that window (a pool closed right after
    it started, on a loaded machine) was swallowed, e.g. as a KeyboardInterrupt inside `threading._after_fork`, whose
    errors are only printed. The worker then waited for a task forever and so did `terminate()`
    (benchmarks/feed_pool_close.py). The workers own nothing to clean up: the buffers are the parent's."""

    class Killed(multiprocessing.context.ForkProcess):
        def terminate(self) -> None:
            self.kill()

    class KillingFork(multiprocessing.context.ForkContext):
        Process = Killed

    return KillingFork()


class FeedPool:
    """Decode workers and batch buffers kept across `LineFeed`s: a process that reads many calls (a service, a
    library read in parts) forks its workers and sizes (and, for a GPU, page-locks) its buffers once. Workers are
    forked at the first feed; buffers grow when a feed needs more or bigger ones. `workers=0`: in this process.
    A consumer that pins buffers (`pin`) gets its `unpin` called before a buffer is dropped. Close it when done
    (a context manager); a `LineFeed` given no pool makes one of its own and closes it with itself."""

    def __init__(self, workers: int = 0, decoder: str = "auto"):
        usable = "fork" in multiprocessing.get_all_start_methods() and SHARED_BY_PATH
        self.workers = max(0, int(workers)) if usable else 0
        self.decoder = decoder_name(decoder)
        self.pool = None
        self.slots: list[SharedBuffer] = []
        self._pinned: dict = {}  # buffer key -> unpin callable
        self.feeds = 0
        self.busy = False  # one feed at a time: feeds share the buffers
        self._lock = threading.Lock()
        self._ahead_thread: threading.Thread | None = None
        self._ahead_queue: queue.SimpleQueue | None = None  # each read-ahead thread has its own

    def __enter__(self) -> "FeedPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if self.workers > 0 and self.pool is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process: workers use no threads
                self.pool = _killing_fork().Pool(self.workers, _worker_init)

    def ahead(self, function, *args) -> Future:
        """`function(*args)` on this pool's read-ahead thread (one thread: work asked for runs in the order asked),
        e.g. the next chunk's files read into shared memory while the consumer reads this one. The workers are
        forked here first (never from that thread); `close` waits for what was asked."""
        self.start()
        future: Future = Future()
        with self._lock:
            if self._ahead_thread is None:
                self._ahead_queue = queue.SimpleQueue()
                self._ahead_thread = threading.Thread(target=_run_ahead, args=(self._ahead_queue,),
                                                      name="ocr-assets-read-ahead", daemon=True)
                self._ahead_thread.start()
            self._ahead_queue.put((future, function, args))
        return future

    def run(self, function, args_list: list[tuple]) -> list:
        """`function(*args)` for each, on the workers (in order) or here."""
        return [handle.get() for handle in [self.submit(function, args) for args in args_list]]

    def submit(self, function, args: tuple):
        """A handle with `.get()`: on a worker, or the result computed here."""
        if self.pool is None:
            result = function(*args)
            return SimpleNamespace(get=lambda: result, wait=lambda: None)
        return self.pool.apply_async(function, args)

    def buffers(self, count: int, size: int) -> list[SharedBuffer]:
        """`count` buffers of at least `size` bytes: the kept ones when they fit, else new ones (old ones dropped)."""
        if len(self.slots) < count or any(b.size < size for b in self.slots[:count]):
            self._drop()
            size = -(-max(1, size) // (1 << 20)) * (1 << 20)  # whole MiB: a slightly larger feed reuses them
            self.slots = [SharedBuffer(size) for _ in range(count)]
        return self.slots[:count]

    def pin(self, pin, unpin) -> list[np.ndarray]:
        """Call `pin(view)` once per kept buffer (True when it took); `unpin(view)` runs before a pinned one is
        dropped. Returns the views that could not be pinned."""
        failed = []
        for b in self.slots:
            if b.key not in self._pinned:
                if pin(b.view):
                    self._pinned[b.key] = (unpin, b.view)
                else:
                    failed.append(b.view)
                    self._pinned[b.key] = (None, b.view)
        return failed

    def _drop(self) -> None:
        for b in self.slots:
            unpin, view = self._pinned.pop(b.key, (None, None))
            if unpin is not None:
                unpin(view)
            b.close()
        self.slots = []

    def close(self) -> None:
        with self._lock:
            thread, self._ahead_thread = self._ahead_thread, None
            if thread is not None:
                self._ahead_queue.put(None)  # after what was asked: it finishes first, its tasks are on the workers
        if thread is not None:
            thread.join()
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        self._drop()


class FileIndex:
    """What a feed needs before any model: the lines in one shared store (bytes copied here; `EncodedFiles` read into
    it by the workers) and each line's header — `headers` (n, 3) width, height, kind (kind -1: failed, its message in
    `errors`, a file that could not be read saying so). Built by a `LineFeed`, or ahead of it
    (`EncodedFiles.read_ahead`); the feed that takes it owns (and closes) the store."""

    def __init__(self, blobs: Sequence[bytes], pool: "FeedPool", feed_id):
        self.pool, self.feed_id = pool, feed_id
        self.errors: list[tuple[int, str]] = []
        n = len(blobs)
        files = isinstance(blobs, EncodedFiles)
        lengths = np.maximum(blobs.sizes, 0) if files else np.fromiter((len(b) for b in blobs), dtype=np.int64, count=n)
        self.ends = np.cumsum(lengths)
        self.starts = self.ends - lengths
        self.store = SharedBuffer(int(self.ends[-1]) if n and self.ends[-1] else 1)
        try:
            if files:
                unread = dict(self._read_all(blobs))
            else:
                unread = {}
                for blob, a, b in zip(blobs, self.starts.tolist(), self.ends.tolist()):
                    self.store.map[a:b] = blob
            self.headers = self._probe_all(n)
        except BaseException:
            self.store.close()
            raise
        if unread:  # a file that could not be read says so, not that its zero bytes are no image
            self.headers[list(unread)] = -1
            self.errors = sorted([(i, m) for i, m in self.errors if i not in unread] + list(unread.items()))

    def _in_parts(self, n: int, function, args) -> list[tuple[int, object]]:
        """(first line, result) of `function(self.feed_id, self.store.key, *args(lo, hi))` over the lines in parts
        of PROBE_LINES, on the workers when there are many (the pool started for it), else here in one part."""
        if n >= 2 * PROBE_LINES:
            self.pool.start()
        chunk = PROBE_LINES if self.pool.pool is not None else max(1, n)
        starts = list(range(0, n, chunk))
        parts = self.pool.run(function, [(self.feed_id, self.store.key, *args(lo, lo + chunk)) for lo in starts])
        return list(zip(starts, parts))

    def _read_all(self, files: EncodedFiles) -> list[tuple[int, str]]:
        """Files into the store, on the workers (in parallel when there are many); [(line, why)] unread."""
        parts = self._in_parts(len(files), _read_task,
                               lambda lo, hi: (files.paths[lo:hi], self.starts[lo:hi], files.sizes[lo:hi]))
        return [(lo + k, message) for lo, errors in parts for k, message in errors]

    def _probe_all(self, n: int) -> np.ndarray:
        parts = self._in_parts(n, _probe_task, lambda lo, hi: (self.starts[lo:hi], self.ends[lo:hi]))
        out = np.concatenate([p[0] for _, p in parts]) if parts else np.zeros((0, 3), dtype=np.int64)
        for lo, (_, errors) in parts:
            self.errors += [(lo + k, message) for k, message in errors]
        return out


class LineFeed:
    """Batches of decoded lines from encoded bytes, in order. `workers` processes (0: in this process) decode
    ahead into `slots` reusable shared buffers; lines whose kind is in `device_kinds` stay encoded for the
    consumer. Use as a context manager; call `release(batch.slot)` when a batch's pixels have been consumed.
    `prepare`: workers also prepare each line as `lines.prepare_line` does (Pillow's resize and ink table, the same
    pixels as the CPU path) and a batch arrives as (lines, height, width) rows, zero-padded (no device kinds then).
    `pool`: a `FeedPool` to use (its workers and buffers outlive this feed); `workers`/`decoder` are then its own.
    `width_multiple`: prepared rows are padded to a multiple of it (batches are still grouped by `multiple`).
    The encoded lines are copied once into shared memory, the workers read their headers (in parallel when there
    are many) and decode from there."""

    def __init__(self, blobs: Sequence[bytes], height: int, batch_size: int = 1024, workers: int = 0,
                 slots: int = 6, device_kinds: Sequence[int] = (), decoder: str = "auto", waste: float = 0.15,
                 multiple: int = PAD_MULTIPLE, task_lines: int = TASK_LINES, prepare: bool | str = False,
                 pool: FeedPool | None = None, width_multiple: int | None = None):
        if prepare not in (True, False, "auto"):
            raise ValueError(f"prepare must be True, False or 'auto'; got {prepare!r}")
        if pool is not None and pool.busy:
            raise RuntimeError("this FeedPool is feeding another LineFeed; close that one first (one at a time)")
        self.own_pool = pool is None
        self.feed_pool = FeedPool(workers, decoder) if pool is None else pool
        self.feed_pool.feeds += 1
        self.feed_pool.busy = True
        self.feed_id = (os.getpid(), id(self.feed_pool), self.feed_pool.feeds)
        self.store = None
        self.tasks: list = []  # every decode task handed to the workers: close() waits for them
        self.views = []
        try:
            self._setup(blobs, height, batch_size, slots, device_kinds, waste, multiple, task_lines, prepare,
                        width_multiple)
        except BaseException:
            self.close()
            raise

    def _setup(self, blobs, height, batch_size, slots, device_kinds, waste, multiple, task_lines, prepare,
               width_multiple) -> None:
        self.height = height
        self.decoder = self.feed_pool.decoder
        self.workers = self.feed_pool.workers
        index = blobs.take_index() if isinstance(blobs, EncodedFiles) else None
        if index is None:
            index = FileIndex(blobs, self.feed_pool, self.feed_id)
        else:  # read ahead: its store is mapped in the workers under its own feed id, which this feed keeps
            self.feed_id = index.feed_id
        self.store, self.starts, self.ends = index.store, index.starts, index.ends
        self.errors: list[tuple[int, str]] = list(index.errors)
        headers = index.headers
        self.w, self.h = headers[:, 0].copy(), headers[:, 1].copy()
        self.kinds = headers[:, 2].astype(np.int8)
        good = np.flatnonzero(self.kinds >= 0).tolist()
        prepared = [target_width(int(self.w[i]), int(self.h[i]), height) for i in good]
        if prepare == "auto":  # measured on an H200 (docs/NOTES.md): worth it for lines near the model's height
            heights = self.h[good]
            device_share = float(np.isin(self.kinds[good], list(device_kinds)).mean()) if good and device_kinds else 0.0
            prepare = bool(good) and float(np.median(heights)) <= AUTO_PREPARE_MAX_HEIGHT * height and device_share < 0.5
        self.prepare = bool(prepare)
        if self.prepare:
            device_kinds = ()
        groups = width_batches(prepared, batch_size, waste=waste, multiple=multiple)
        self.batches = [np.asarray([good[k] for k in b], dtype=np.int64) for b in groups]
        step = max(multiple, width_multiple or multiple)  # grouped by `multiple`, prepared rows padded to `step`
        self.batch_widths = [-(-max(prepared[k] for k in b) // step) * step for b in groups]
        self.device_kinds = tuple(device_kinds)
        self.task_lines = max(1, task_lines)
        sizes = [self._layout(b, k)[3] for k, b in enumerate(self.batches)]
        self.slot_bytes = max(sizes, default=0) or 1
        self.shared = self.feed_pool.buffers(max(1, min(slots, len(self.batches) or 1)), self.slot_bytes)
        self.views = [b.view for b in self.shared]
        self.free = list(range(len(self.shared)))

    def _host(self, batch: np.ndarray) -> np.ndarray:
        if not self.device_kinds:
            return np.ones(len(batch), dtype=bool)
        return ~np.isin(self.kinds[batch], self.device_kinds)

    def __enter__(self) -> "LineFeed":
        if self.batches:
            self.feed_pool.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Drop this feed's copy of the lines; its own pool (none was given) goes too, a given one stays. Decode
        tasks still running (a consumer that stopped early) are waited for first: they write into the pool's
        buffers, which the next feed reuses."""
        if self.own_pool:
            self.feed_pool.close()
        else:
            for task in self.tasks:
                task.wait()
        self.tasks = []
        self.feed_pool.busy = False
        if self.store is not None:
            self.store.close()
        self.views = []

    def _bytes(self, i: int) -> bytes:
        """Line i's encoded bytes (from the shared copy: also for lines given as files)."""
        return self.store.map[int(self.starts[i]) : int(self.ends[i])]

    def release(self, slot: int) -> None:
        self.free.append(slot)

    def _layout(self, batch: np.ndarray, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(host lines, decoded pixels per line, offsets in the buffer, bytes of host lines in the buffer)."""
        host = self._host(batch)
        sizes = self.h[batch] * self.w[batch]
        if self.prepare:  # every line gets a (height, batch width) slot
            row = self.height * self.batch_widths[number]
            return host, sizes, np.arange(len(batch), dtype=np.int64) * row, row * len(batch)
        order = np.concatenate([np.flatnonzero(host), np.flatnonzero(~host)])  # host lines first, then device ones
        offsets = np.zeros(len(batch), dtype=np.int64)
        offsets[order] = np.concatenate([[0], np.cumsum(sizes[order])[:-1]]) if len(batch) else []
        return host, sizes, offsets, int(sizes[host].sum())

    def _submit(self, number: int, slot: int):
        batch = self.batches[number]
        host, sizes, offsets, host_bytes = self._layout(batch, number)
        where = np.flatnonzero(host)
        prepare = (self.height, self.batch_widths[number]) if self.prepare else None
        tasks = []
        for lo in range(0, len(where), self.task_lines):
            part = where[lo : lo + self.task_lines]
            lines = batch[part]
            args = (self.feed_id, self.store.key, self.shared[slot].key, lines, self.starts[lines], self.ends[lines],
                    self.kinds[lines], offsets[part], sizes[part], self.decoder, prepare)
            tasks.append((part, self.feed_pool.submit(_decode_task, args)))
            self.tasks.append(tasks[-1][1])
        return batch, slot, host, offsets, host_bytes, tasks, (prepare[1] if prepare else 0)

    def __iter__(self) -> Iterator[FeedBatch]:
        pending: list = []
        following = 0
        for _ in range(len(self.batches)):
            while self.free and following < len(self.batches) and (len(pending) < len(self.shared)):
                pending.append(self._submit(following, self.free.pop(0)))
                following += 1
            if not pending:
                raise RuntimeError("LineFeed: every buffer is held; release(batch.slot) consumed batches")
            batch, slot, host, offsets, host_bytes, tasks, width = pending.pop(0)
            heights, widths = self.h[batch].copy(), self.w[batch].copy()
            failed = np.zeros(len(batch), dtype=bool)
            errors: list[tuple[int, str]] = []
            for part, task in tasks:
                task_errors, shapes = task.get()
                errors += task_errors
                shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
                heights[part], widths[part] = shapes[:, 0], shapes[:, 1]
                failed[part] = shapes[:, 0] == 0
            keep = ~failed
            device = [(int(k), self._bytes(int(batch[k]))) for k in np.flatnonzero(keep & ~host)]
            yield FeedBatch(slot, batch[keep], heights[keep], widths[keep], offsets[keep],
                            self.views[slot][:host_bytes], host_bytes,
                            [(int(np.count_nonzero(keep[:k])), blob) for k, blob in device], errors, width)
