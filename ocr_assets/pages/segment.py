"""Printed page → line boxes: Otsu binarisation, horizontal ink profile, bands merged so dots and tashkeel stay
with their line. A first slice of issue 5 (no deskew, no columns, no header/footnote roles yet)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class LineBox:
    x0: int
    y0: int
    x1: int
    y1: int

    def crop(self, page: Image.Image) -> Image.Image:
        return page.crop((self.x0, self.y0, self.x1, self.y1))


def otsu_threshold(gray: np.ndarray) -> int:
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    cum, cum_mean = np.cumsum(hist), np.cumsum(hist * np.arange(256))
    w0, w1 = cum, total - cum
    valid = (w0 > 0) & (w1 > 0)
    between = np.zeros(256)
    m0 = np.divide(cum_mean, w0, out=np.zeros(256), where=w0 > 0)
    m1 = np.divide(cum_mean[-1] - cum_mean, w1, out=np.zeros(256), where=w1 > 0)
    between[valid] = w0[valid] * w1[valid] * (m0[valid] - m1[valid]) ** 2
    return int(np.argmax(between))


def segment_lines(page: Image.Image, min_gap: int | None = None) -> list[LineBox]:
    """Line boxes top to bottom. Bands of ink rows closer than `min_gap` (default: a third of the median band
    height) are merged, which keeps dots and vowel marks above or below a line with it."""
    gray = np.asarray(page.convert("L"))
    if gray.size == 0:
        return []
    ink = gray < otsu_threshold(gray)
    if ink.mean() < 1e-4:  # blank page: nothing to read
        return []
    # Frame rules and page borders would join every row into one band: drop columns inked over most of the
    # page height and rows inked over most of its width before profiling.
    ink = ink.copy()
    ink[:, ink.mean(axis=0) > 0.35] = False
    ink[ink.mean(axis=1) > 0.6, :] = False
    rows = ink.sum(axis=1) > max(1, int(0.002 * ink.shape[1]))
    bands, start = [], None
    for y, on in enumerate(rows):
        if on and start is None:
            start = y
        elif not on and start is not None:
            bands.append([start, y])
            start = None
    if start is not None:
        bands.append([start, len(rows)])
    if not bands:
        return []
    heights = sorted(b - a for a, b in bands)
    median = heights[len(heights) // 2]
    gap = min_gap if min_gap is not None else max(2, median // 3)
    merged = [bands[0]]
    for a, b in bands[1:]:
        small = (b - a) < median * 0.5 or (merged[-1][1] - merged[-1][0]) < median * 0.5
        if a - merged[-1][1] < gap and small:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    boxes = []
    pad = max(2, median // 6)
    for a, b in merged:
        if b - a < 4:
            continue
        cols = np.flatnonzero(ink[a:b].any(axis=0))
        y0, y1 = max(0, a - pad), min(gray.shape[0], b + pad)
        boxes.append(LineBox(int(max(0, cols[0] - pad)), int(y0), int(min(gray.shape[1], cols[-1] + 1 + pad)), int(y1)))
    return boxes
