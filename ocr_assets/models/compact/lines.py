"""The compact recognizer's line chain without torch: image -> prepared line, batches of similar widths, and the
greedy CTC read of a batch's best labels. The torch recognizer and the ONNX Runtime reader share it, so both read
exactly the same pixels.

`prepare_line` is the same in training and inference: grayscale, resized to the model's height keeping the aspect
ratio, inverted to ink = 255 on background 0 and contrast stretched, as uint8.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ocr_assets.data.images import to_gray  # the one grayscale converter
from ocr_assets.models.compact.labels import BLANK_ID

MAX_WIDTH_PER_HEIGHT = 100  # a line 100x longer than tall is squeezed to that, so one bad crop cannot eat memory
PAD_MULTIPLE = 8  # batch widths are rounded up to this (the conv front end halves the width three times)


def open_image(source: Image.Image | bytes | str | Path) -> Image.Image:
    """A loaded PIL image from an image, encoded bytes or a path (decoding errors raise here, not later)."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(source)))
    elif isinstance(source, (str, Path)):
        image = Image.open(source)
    else:
        raise TypeError(f"expected a PIL image, encoded image bytes or a path; got {type(source).__name__}")
    image.load()
    return image


def _ink_lut(histogram: list[int]) -> list[int]:
    """Gray value -> ink (0 background .. 255 ink): inverted (or not, for light text on dark), contrast stretched."""
    counts = np.asarray(histogram, dtype=np.int64)
    ink_counts = counts[::-1]  # index = 255 - gray
    total = int(counts.sum())
    cdf = np.cumsum(ink_counts)
    background = int(np.searchsorted(cdf, total / 2))
    inverted = background <= 127
    if not inverted:  # light text on a dark ground: the gray value itself is the ink
        cdf = np.cumsum(counts)
        background = int(np.searchsorted(cdf, total / 2))
    ink = int(np.searchsorted(cdf, 0.995 * total))
    values = 255 - np.arange(256) if inverted else np.arange(256)
    if ink - background > 25:  # stretch grey scans so background -> 0 and ink -> 255 (binary scans stay as they are)
        values = np.clip((values - background) * 255.0 / (ink - background), 0, 255)
    return np.rint(values).astype(np.uint8).tolist()


def prepare_line(source: Image.Image | bytes | str | Path, height: int) -> np.ndarray:
    """(height, width) uint8 array, ink = 255 on background 0, aspect ratio kept (the model scales it to 0..1)."""
    image = to_gray(open_image(source))
    w, h = image.size
    if w < 1 or h < 1:
        raise ValueError(f"image is {w}x{h} pixels; a line image needs at least 1x1")
    return resize_and_ink(image, target_width(w, h, height), height)


def target_width(w: int, h: int, height: int) -> int:
    """The width a w x h line has once prepared at `height` (aspect ratio kept, capped at MAX_WIDTH_PER_HEIGHT)."""
    return min(max(1, round(w * height / h)), height * MAX_WIDTH_PER_HEIGHT)


def resize_and_ink(image: Image.Image, width: int, height: int) -> np.ndarray:
    """An 8-bit grey line at (width, height), ink = 255 on background 0: the last step of `prepare_line` (also run by
    the GPU feed's workers, `line_feed.prepare_into`)."""
    # BILINEAR in Pillow filters over the whole footprint when shrinking, so thin strokes are not dropped.
    small = image.resize((width, height), Image.BILINEAR)
    return np.asarray(small.point(_ink_lut(small.histogram())), dtype=np.uint8)


def width_batches(widths: Sequence[int], batch_size: int, waste: float = 0.08,
                  multiple: int = PAD_MULTIPLE) -> list[list[int]]:
    """Indices grouped into batches of similar widths: sorted by width, a batch ends when it holds `batch_size`
    lines or when the next line would make padding more than `waste` of the batch's pixels. Lines of a few
    widths thus share batches and a long line never pads a batch of short ones."""
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        w = int(widths[i])
        padded = -(-w // multiple) * multiple  # sorted: the newest line is the widest
        if current and (len(current) >= batch_size or padded * (len(current) + 1) > (1 + waste) * (total + w)):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += w
    if current:
        batches.append(current)
    return batches


def pad_batch(arrays: Sequence[np.ndarray], multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad prepared lines to one width (a multiple of `multiple`): (batch, 1, H, W) uint8 and true widths."""
    widths = np.array([a.shape[1] for a in arrays], dtype=np.int64)
    width = -(-int(widths.max()) // multiple) * multiple
    batch = np.zeros((len(arrays), 1, arrays[0].shape[0], width), dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        batch[i, 0, :, : a.shape[1]] = a
    return batch, widths


def decode_best(best: np.ndarray, probs: np.ndarray, lengths: np.ndarray) -> list[tuple]:
    """Greedy CTC read of a batch from each frame's best label and its probability, (batch, frames) each:
    per line (label ids, per-label confidence, line confidence 0..1, each label's place across the line image).

    The same rules as the torch `greedy_decode`: a label's confidence is its highest frame probability, the line's
    the mean over its labels (or the mean blank probability when nothing was read); positions are the centre of
    the frame where the label's run starts, 0 = left edge, 1 = right edge (frames run right to left).
    """
    batch, frames = best.shape
    valid = np.arange(frames)[None, :] < lengths[:, None]
    blank = (best == BLANK_ID) & valid
    blank_count = blank.sum(1)
    blank_conf = np.where(blank_count == 0, 1.0, (probs * blank).sum(1) / np.maximum(blank_count, 1))
    previous = np.pad(best[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    previous_valid = np.pad(valid[:, :-1], ((0, 0), (1, 0)))
    starts = ((best != previous) & valid) | (~valid & previous_valid)
    starts[:, 0] = True
    best, probs, valid, starts = best.ravel(), probs.ravel(), valid.ravel(), starts.ravel()
    first = np.flatnonzero(starts)
    run_conf = np.maximum.reduceat(probs, first) if first.size else np.zeros(0, dtype=probs.dtype)
    keep = valid[first] & (best[first] != BLANK_ID)
    ids, confs, line_of = best[first][keep], run_conf[keep].astype(float), first[keep] // frames
    counts = np.bincount(line_of, minlength=batch)
    means = np.bincount(line_of, weights=confs, minlength=batch) / np.maximum(counts, 1)
    return split_reads(ids, confs, line_of, first[keep] % frames, np.where(counts > 0, means, blank_conf), lengths)


def split_reads(ids: np.ndarray, confs: np.ndarray, line_of: np.ndarray, frame_of: np.ndarray,
                line_conf: np.ndarray, lengths: np.ndarray, details: bool = True) -> list[tuple]:
    """`decode_best`'s result from the read labels of a batch in line order (label id, confidence, line, frame) and
    each line's confidence: whole-batch arithmetic, then per line only list slices (per-line numpy calls cost
    ~20 us a line). Shared with the GPU path, which finds the labels on the device (`device_prep`).
    `details=False`: each character's confidence and position are left empty (two thirds of the per-line cost,
    ~10 us a line, for callers that write only the text and the line's confidence)."""
    batch = len(line_conf)
    bounds = np.searchsorted(line_of, np.arange(batch + 1))
    if not details:
        ids, b, line_conf = ids.tolist(), bounds.tolist(), np.asarray(line_conf, dtype=float).tolist()
        return [(ids[b[i] : b[i + 1]], [], line_conf[i], []) for i in range(batch)]
    where = (1.0 - (frame_of + 0.5) / np.maximum(np.asarray(lengths)[line_of], 1)).round(4).tolist()
    ids, confs, b, line_conf = ids.tolist(), confs.tolist(), bounds.tolist(), np.asarray(line_conf, dtype=float).tolist()
    return [(ids[b[i] : b[i + 1]], confs[b[i] : b[i + 1]], line_conf[i], where[b[i] : b[i + 1]]) for i in range(batch)]
