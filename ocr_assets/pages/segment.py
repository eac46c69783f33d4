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
    role: str = "body"  # header | page-number | body | footnote

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


def line_pitch(profile: np.ndarray, low: int = 10, high: int = 160) -> int | None:
    """Baseline-to-baseline distance: the strongest autocorrelation peak of the row ink profile after the
    central lobe (the autocorrelation falls from lag 0 until it leaves a line's own height)."""
    x = profile - profile.mean()
    if len(x) < 2 * low or not x.any():
        return None
    ac = np.correlate(x, x, mode="full")[len(x) - 1 :]
    high = min(high, len(ac) - 1)
    if high <= low:
        return None
    start = low
    while start < high and ac[start + 1] <= ac[start]:  # still on the central lobe
        start += 1
    if start >= high:
        return None
    lag = start + int(np.argmax(ac[start:high]))
    return lag if ac[lag] > 0 else None


def split_band(band: list[int], profile: np.ndarray, pitch: int) -> list[list[int]]:
    """Split a band taller than ~1.6 line pitches at the emptiest row near each expected line boundary."""
    a, b = band
    if b - a < 1.6 * pitch:
        return [band]
    lo, hi = a + int(0.6 * pitch), min(b - int(0.5 * pitch), a + int(1.4 * pitch))
    if hi <= lo:
        return [band]
    cut = lo + int(np.argmin(profile[lo:hi]))
    return [[a, cut], *split_band([cut, b], profile, pitch)]


def merge_marks(bands: list[list[int]], pitch: int, min_gap: int | None = None) -> list[list[int]]:
    """Fold thin bands (dots, tashkeel, descenders: under 40 % of a typical band) into the nearest full line."""
    gap_limit = min_gap if min_gap is not None else int(0.6 * pitch)
    out = [list(b) for b in bands]
    heights = sorted(b - a for a, b in out)
    thin = 0.4 * heights[(3 * len(heights)) // 4]
    changed = True
    while changed and len(out) > 1:
        changed = False
        for i, (a, b) in enumerate(out):
            if b - a >= thin:
                continue
            gaps = []
            if i > 0:
                gaps.append((a - out[i - 1][1], i - 1))
            if i + 1 < len(out):
                gaps.append((out[i + 1][0] - b, i + 1))
            gap, j = min(gaps)
            if gap < gap_limit:
                lo, hi = min(i, j), max(i, j)
                out[lo] = [out[lo][0], out[hi][1]]
                del out[hi]
                changed = True
                break
    return out


def segment_lines(page: Image.Image, min_gap: int | None = None) -> list[LineBox]:
    """Line boxes top to bottom: bands of inked rows, tall bands split at the line pitch (autocorrelation of the
    row profile), thin bands of dots and marks folded into the nearest line closer than `min_gap` (default
    0.6 pitch)."""
    gray = np.asarray(page.convert("L"))
    if gray.size == 0:
        return []
    # Ink is the dark class; a grey watermark or show-through sits between paper and ink, so the cut never goes
    # above 110 (Otsu alone put it at ~150 on the watermarked periodical pages and joined lines through the mark).
    ink = gray < min(otsu_threshold(gray), 110)
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
    profile = np.convolve(ink.sum(axis=1).astype(float), np.ones(3) / 3, mode="same")
    heights = sorted(b - a for a, b in bands)
    pitch = line_pitch(profile, high=max(160, len(profile) // 3)) or heights[len(heights) // 2]
    bands = [part for band in bands for part in split_band(band, profile, pitch)]
    merged = merge_marks(bands, pitch, min_gap)
    median = sorted(b - a for a, b in merged)[len(merged) // 2]
    boxes = []
    pad = max(2, median // 6)
    for a, b in merged:
        if b - a < 4:
            continue
        cols = np.flatnonzero(ink[a:b].any(axis=0))
        y0, y1 = max(0, a - pad), min(gray.shape[0], b + pad)
        boxes.append(LineBox(int(max(0, cols[0] - pad)), int(y0), int(min(gray.shape[1], cols[-1] + 1 + pad)), int(y1)))
    return boxes
