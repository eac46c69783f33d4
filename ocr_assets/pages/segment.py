"""Printed page → line boxes with roles: Otsu binarisation (capped below watermark grey), deskew by projection
profile, horizontal ink profile split at the line pitch, thin bands of dots and tashkeel folded into their line,
separator rules found and removed, running header / page number / footnotes told apart by position, size and
the footnote rule. Boxes are in the coordinates of the image given; crops are straightened."""

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
    skew: float = 0.0  # degrees the page was turned to straighten it (PIL's counter-clockwise sense)
    inner: tuple[int, int] | None = None  # (width, height) of the straightened line inside this bounding box
    pad: int = 0  # paper kept around the ink when cropping (the recognizer was trained on lines with a margin)

    def crop(self, page: Image.Image, target_height: int | None = None) -> Image.Image:
        """The line's pixels with `pad` of paper around them; on a skewed page, the straightened line cut from
        around its centre. `target_height`: the height the line will be resized to next (a recognizer's input); a
        skewed line more than twice that is first reduced by a whole factor (box filter) that keeps it at least twice
        the target, so the rotation runs on a fraction of the pixels (an archive line of ~300 px read at 48: 1/9)."""
        p = self.pad
        x0, y0, x1, y1 = self.x0 - p, self.y0 - p, self.x1 + p, self.y1 + p
        region = Image.new("L", (x1 - x0, y1 - y0), 255)  # paper beyond the page edge, never black
        inside = page.crop((max(0, x0), max(0, y0), min(page.width, x1), min(page.height, y1)))
        if inside.mode != "L":  # converting the cut, not the page (convert would copy a whole 18 MP scan per line)
            inside = inside.convert("L")
        region.paste(inside, (max(0, x0) - x0, max(0, y0) - y0))
        if not self.skew or self.inner is None:
            return region
        w, h = self.inner[0] + 2 * p, self.inner[1] + 2 * p
        factor = max(1, h // (2 * target_height)) if target_height else 1
        if factor > 1:
            region = region.reduce(factor)
            w, h = w / factor, h / factor
        region = region.rotate(self.skew, resample=Image.BILINEAR, fillcolor=255)
        cx, cy = region.width / 2, region.height / 2
        return region.crop((round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2)))


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
    # A bilevel scan ties every cut between its two values: take the middle of the tie, not the first (0).
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return int(best[len(best) // 2])


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
    # Leave the central lobe: past its first zero crossing (or, on a profile that never crosses, its first dip
    # after halving); small bumps on the lobe are marks within one line, not the next line.
    below = np.flatnonzero(ac[low:high] <= 0)
    if below.size:
        start = low + int(below[0])
    else:
        start = low + int(np.argmax(ac[low:high] < 0.5 * ac[0]))
        while start < high and ac[start + 1] <= ac[start]:
            start += 1
    if start >= high:
        return None
    window = ac[start:high]
    if window.size < 3 or window.max() <= 0:
        return None
    # The first strong peak, not the highest: multiples of the pitch can score higher on pages with a gap.
    peaks = [i for i in range(1, window.size - 1) if window[i] >= window[i - 1] and window[i] > window[i + 1]]
    strong = [i for i in peaks if window[i] >= 0.6 * window.max()]
    return start + (strong[0] if strong else int(np.argmax(window)))


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


def split_touching(band: list[int], profile: np.ndarray, single: float) -> list[list[int]]:
    """Split a band that is clearly taller than one line (lines of smaller type, e.g. footnotes, touching
    through their marks) at the profile minimum between its two strongest ink peaks (baselines)."""
    a, b = band
    if b - a < 1.35 * single:
        return [band]
    win = max(3, int(single / 5))
    smooth = np.convolve(profile[a:b], np.ones(win) / win, mode="same")
    peaks = [i for i in range(1, len(smooth) - 1) if smooth[i] >= smooth[i - 1] and smooth[i] > smooth[i + 1]
             and smooth[i] >= 0.4 * smooth.max()]
    if len(peaks) < 2:
        return [band]
    p1 = max(peaks, key=lambda i: smooth[i])
    others = [i for i in peaks if abs(i - p1) >= 0.45 * single]
    if not others:
        return [band]
    p2 = max(others, key=lambda i: smooth[i])
    lo, hi = sorted((p1, p2))
    valley = lo + int(np.argmin(smooth[lo:hi]))
    if smooth[valley] > 0.5 * min(smooth[p1], smooth[p2]):
        return [band]  # no real gap between the peaks: one line with strong marks
    cut = a + valley
    return [*split_touching([a, cut], profile, single), *split_touching([cut, b], profile, single)]


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


MIN_SKEW = 0.15  # degrees; below this straightening costs more than it brings


def estimate_skew(ink: np.ndarray, max_angle: float = 3.0) -> float:
    """The rotation (degrees, PIL's sense) that makes text rows horizontal: the angle whose row profile has the
    sharpest edges, searched coarse (0.5°) then fine (0.1°) on a copy at most 800 px wide.

    Each angle's profile is a weighted histogram of where the inked pixels land when the page is turned, each
    pixel split between its two nearest rows as a bilinear rotation would (no image is rotated: ~7x faster than
    rotating the copy per angle, and the same angles on pages_dev and on skewed synthetic pages)."""
    h, w = ink.shape
    scale = min(1.0, 800 / w)
    small = np.asarray(Image.fromarray(ink.astype(np.uint8) * 255).resize(
        (max(1, int(w * scale)), max(1, int(h * scale))), Image.BILINEAR), dtype=np.float64)
    ys, xs = np.nonzero(small)
    weights = small[ys, xs]
    rows = small.shape[0]
    dy, dx = ys + 0.5 - rows / 2, xs + 0.5 - small.shape[1] / 2

    def sharpness(angle: float) -> float:
        a = np.deg2rad(angle)
        y = rows / 2 + dy * np.cos(a) - dx * np.sin(a) - 0.5  # the pixel's row after turning, PIL's sense
        low = np.floor(y)
        frac = y - low
        low = low.astype(np.int64) + 1  # shifted so row -1 (half in the frame) has a bin
        keep = (low >= 0) & (low <= rows)
        profile = (np.bincount(low[keep], weights[keep] * (1 - frac[keep]), minlength=rows + 2)
                   + np.bincount(low[keep] + 1, weights[keep] * frac[keep], minlength=rows + 2))[1 : rows + 1]
        return float(np.sum(np.diff(profile) ** 2))

    best = max(np.arange(-max_angle, max_angle + 1e-9, 0.5), key=sharpness)
    best = max(np.arange(best - 0.4, best + 0.4 + 1e-9, 0.1), key=sharpness)
    return round(float(best), 2)


def _unrotate(box: LineBox, angle: float, size: tuple[int, int]) -> LineBox:
    """A box found on the page turned by `angle` about its centre, as a bounding box on the original page."""
    w, h = size
    cx, cy = w / 2, h / 2
    a = np.deg2rad(angle)
    xs = np.array([box.x0, box.x1, box.x1, box.x0], dtype=float) - cx
    ys = np.array([box.y0, box.y0, box.y1, box.y1], dtype=float) - cy
    ox = cx + xs * np.cos(a) - ys * np.sin(a)
    oy = cy + xs * np.sin(a) + ys * np.cos(a)
    return LineBox(max(0, int(np.floor(ox.min()))), max(0, int(np.floor(oy.min()))), min(w, int(np.ceil(ox.max()))),
                   min(h, int(np.ceil(oy.max()))), box.role, angle, (box.x1 - box.x0, box.y1 - box.y0), box.pad)


def find_rules(faint: np.ndarray, pitch: int) -> list[tuple[int, int, int, int]]:
    """Separator rules (y0, y1, x0, x1): a few rows holding one long unbroken stroke, with paper just above and
    below it. Looked for in a lenient ink mask, since printed hairlines are often lighter than the text."""
    counts = faint.sum(axis=1)
    rules = []
    y, height = 0, faint.shape[0]
    while y < height:
        if counts[y] < 1.2 * pitch:
            y += 1
            continue
        y1 = y
        while y1 + 1 < height and counts[y1 + 1] >= 1.2 * pitch and y1 + 1 - y < max(4, pitch // 10):
            y1 += 1
        cols = np.flatnonzero(faint[y : y1 + 1].any(axis=0))
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
        solid = faint[y : y1 + 1, x0:x1].any(axis=0).mean() >= 0.9
        margin = 3
        above = faint[max(0, y - margin) : y, x0:x1].mean() if y else 0.0
        below = faint[y1 + 1 : y1 + 1 + margin, x0:x1].mean() if y1 + 1 < height else 0.0
        if solid and above < 0.3 and below < 0.3 and x1 - x0 >= 1.2 * pitch:
            rules.append((y, y1 + 1, x0, x1))
        y = y1 + 1
    return rules


def split_row(ink: np.ndarray, box: LineBox, text_w: float) -> list[LineBox]:
    """A header row may hold a page number at its corner: split it at a wide blank gap, right part first."""
    cols = np.flatnonzero(ink[box.y0 : box.y1, box.x0 : box.x1].any(axis=0)) + box.x0
    if cols.size == 0:
        return [box]
    wide = max(3 * (box.y1 - box.y0), 0.12 * text_w)
    cuts = np.flatnonzero(np.diff(cols) > wide)
    if cuts.size == 0:
        return [box]
    starts, ends = np.concatenate([[cols[0]], cols[cuts + 1]]), np.concatenate([cols[cuts] + 1, [cols[-1] + 1]])
    parts = []
    for a, b in zip(starts, ends):
        rows = np.flatnonzero(ink[box.y0 : box.y1, a:b].any(axis=1)) + box.y0  # each part's own height
        parts.append(LineBox(int(a), int(rows[0]), int(b), int(rows[-1]) + 1, pad=box.pad))
    return parts[::-1]  # right to left


def assign_roles(boxes: list[LineBox], rules: list[tuple[int, int, int, int]]) -> None:
    """Running header (top row: short, centred or small, set apart), page number (a short block in the top or
    bottom row, set apart), footnotes (below a short rule in the lower half, or a run of smaller lines after a
    wider gap)."""
    if len(boxes) < 3:
        return
    left = float(np.percentile([b.x0 for b in boxes], 20))
    right = float(np.percentile([b.x1 for b in boxes], 80))
    text_w = max(right - left, 1.0)
    heights = np.array([b.y1 - b.y0 for b in boxes], dtype=float)
    full = [i for i, b in enumerate(boxes) if b.x1 - b.x0 > 0.6 * text_w] or list(range(len(boxes)))
    body_h = float(np.median(heights[full]))
    gaps = [boxes[i + 1].y0 - boxes[i].y1 for i in range(len(boxes) - 1)]
    gap = float(np.median([g for g in gaps if g > -0.5 * body_h] or [0]))

    def apart(g: float) -> bool:
        return g > gap + 0.25 * body_h

    def short(b: LineBox) -> bool:
        return b.x1 - b.x0 < 0.25 * text_w and b.x1 - b.x0 < 5 * (b.y1 - b.y0)

    def row(start: int, step: int) -> list[int]:
        """Indices of the boxes sharing the first (step 1) or last (step -1) row."""
        out, i = [start], start + step
        while 0 <= i < len(boxes) and min(boxes[i].y1, boxes[start].y1) - max(boxes[i].y0, boxes[start].y0) > 0.3 * body_h:
            out.append(i)
            i += step
        return out

    top, bottom = row(0, 1), row(len(boxes) - 1, -1)
    if len(top) + len(bottom) >= len(boxes):
        return
    top_gap = boxes[max(top) + 1].y0 - max(boxes[i].y1 for i in top)
    bottom_gap = min(boxes[i].y0 for i in bottom) - boxes[min(bottom) - 1].y1
    if len(top) > 1:  # a header row split at a wide gap: its narrowest short block is the page number
        narrow = min(top, key=lambda i: boxes[i].x1 - boxes[i].x0)
        for i in top:
            boxes[i].role = "page-number" if i == narrow and short(boxes[i]) else "header"
    else:
        b = boxes[0]
        centred_full = abs((b.x0 + b.x1) / 2 - (left + right) / 2) < 0.1 * text_w and b.y1 - b.y0 > 0.9 * body_h
        if short(b) and apart(top_gap) and not centred_full:
            b.role = "page-number"
        elif apart(top_gap) and (b.x1 - b.x0 < 0.85 * text_w or b.y1 - b.y0 < 0.85 * body_h):
            b.role = "header"
    for i in bottom:
        if short(boxes[i]) and apart(bottom_gap):
            boxes[i].role = "page-number"
    lower = boxes[0].y1 + 0.3 * (boxes[-1].y0 - boxes[0].y1)  # a footnote rule sits in the lower part of the text
    for y, _, x0, x1 in rules:
        if y > lower and x1 - x0 < 0.7 * text_w:
            for b in boxes:
                if b.y0 >= y and b.role == "body":
                    b.role = "footnote"
            return
    # No rule: a run of clearly smaller lines at the bottom, after a wider gap, is a footnote block.
    body = [i for i, b in enumerate(boxes) if b.role == "body"]
    for k in range(max(1, len(body) // 2), len(body)):
        tail = body[k:]
        if all(heights[i] < 0.8 * body_h for i in tail) and apart(boxes[body[k]].y0 - boxes[body[k] - 1].y1):
            for i in tail:
                boxes[i].role = "footnote"
            return


def longest_runs(mask: np.ndarray, axis: int) -> np.ndarray:
    """Length of the longest unbroken run of True along `axis`, for every column (axis 0) or row (axis 1)."""
    m = mask if axis == 0 else mask.T
    count = np.cumsum(m, axis=0, dtype=np.int32)
    last_reset = np.maximum.accumulate(np.where(m, 0, count), axis=0)
    return (count - last_reset).max(axis=0) if m.shape[0] else np.zeros(m.shape[1], dtype=np.int32)


def despeckle(ink: np.ndarray) -> np.ndarray:
    """Drop specks (connected components of a few pixels, scaled to the page width) so scan noise does not make
    rows of ink; dots and tashkeel are larger than a speck at any resolution that can still be read."""
    from scipy import ndimage

    min_area = max(2, round(6 * (ink.shape[1] / 1200) ** 2))
    labels, count = ndimage.label(ink)
    if count == 0:
        return ink
    sizes = np.bincount(labels.ravel())
    keep = sizes > min_area
    keep[0] = False
    return keep[labels]


def _thicken(mask: np.ndarray, axis: int, by: int = 2) -> np.ndarray:
    """The mask grown by `by` pixels both ways along `axis` (1: across vertical strokes, 0: across horizontal)."""
    out = mask.copy()
    for d in range(1, by + 1):
        if axis == 1:
            out[:, d:] |= mask[:, :-d]
            out[:, :-d] |= mask[:, d:]
        else:
            out[d:, :] |= mask[:-d, :]
            out[:-d, :] |= mask[d:, :]
    return out


def remove_frames(ink: np.ndarray) -> np.ndarray:
    """Frame rules and page borders would join every row into one band and be read as brackets: drop columns
    holding a vertical stroke longer than any letter (a fifth of the page) and rows holding a horizontal stroke
    over 40 % of the width (words break at spaces), or inked over most of the page. Runs are measured on the ink
    thickened by 2 px across the stroke, so a rule that drifts by a pixel (slight skew, low resolution) still
    counts as one stroke; the rule's neighbouring columns/rows go with it."""
    height, width = ink.shape
    cols = (ink.mean(axis=0) > 0.35) | (longest_runs(_thicken(ink, axis=1), axis=0) > 0.2 * height)
    rows = (ink.mean(axis=1) > 0.6) | (longest_runs(_thicken(ink, axis=0), axis=1) > 0.4 * width)
    ink = ink.copy()
    ink[:, np.convolve(cols, np.ones(5), mode="same") > 0] = False
    ink[np.convolve(rows, np.ones(5), mode="same") > 0, :] = False
    return ink


def _bands_and_pitch(ink: np.ndarray) -> tuple[list[list[int]], np.ndarray, int]:
    """Runs of inked rows, the smoothed row profile and the line pitch (baseline to baseline)."""
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
    profile = np.convolve(ink.sum(axis=1).astype(float), np.ones(3) / 3, mode="same")
    if not bands:
        return [], profile, 0
    heights = sorted(b - a for a, b in bands)
    # Search pitches up to a third of the page: a 600 dpi scan of large type has lines ~250 px apart.
    pitch = line_pitch(profile, high=max(160, len(profile) // 3)) or heights[len(heights) // 2]
    return bands, profile, pitch


def _line_boxes(ink: np.ndarray, faint: np.ndarray, min_gap: int | None) -> tuple[list[LineBox], list[tuple[int, int, int, int]]]:
    """Line boxes top to bottom and the separator rules (y0, y1, x0, x1) on an upright page."""
    height, width = ink.shape
    ink = remove_frames(despeckle(ink))
    bands, profile, pitch = _bands_and_pitch(ink)
    if not bands:
        return [], []
    rules = find_rules(faint, pitch)
    if rules:  # take the rules out of the ink so they neither make a line nor join two
        for y0, y1, x0, x1 in rules:
            ink[y0:y1, x0:x1] = False
        ink = despeckle(ink)  # rule ends cut off by the rectangle
        bands, profile, pitch = _bands_and_pitch(ink)
        if not bands:
            return [], rules
    bands = [part for band in bands for part in split_band(band, profile, pitch)]
    single = float(np.median([b - a for a, b in bands]))
    bands = [part for band in bands for part in split_touching(band, profile, single)]
    merged = merge_marks(bands, pitch, min_gap)
    median = sorted(b - a for a, b in merged)[len(merged) // 2]
    boxes = []
    pad = max(2, median // 6)
    for a, b in merged:
        if b - a < 4:
            continue
        cols = np.flatnonzero(ink[a:b].any(axis=0))
        boxes.append(LineBox(int(cols[0]), int(a), int(cols[-1]) + 1, int(b), pad=int(pad)))  # tight on the ink
    return boxes, rules


SEGMENT_WIDTH = 1300  # pages wider than this are segmented at reduced scale (archive scans: 3,000-5,000 px) ...
REDUCED_WIDTH = 1000  # ... reduced by the whole factor that brings them to about this width (measured: docs/NOTES.md)


def segment_lines(page: Image.Image, min_gap: int | None = None, deskew: bool = True,
                  max_width: int | None = SEGMENT_WIDTH) -> list[LineBox]:
    """Line boxes in reading order (top to bottom) with roles; thin bands of dots and marks are folded into the
    nearest line closer than `min_gap` (default 0.6 pitch, in the page's own pixels). On a skewed page, lines are
    found on the straightened page and reported as bounding boxes on the page given (their crops come out straight).

    A page wider than `max_width` is segmented on a copy reduced by the whole factor that brings it to about
    REDUCED_WIDTH (box filter) and the boxes are scaled back, their ends fitted to the full-resolution ink: the crops
    are still cut from the full-resolution page. The layout steps cost per pixel, so a 3,400 px archive scan costs
    about what an 850 px page does."""
    gray = page if page.mode == "L" else page.convert("L")
    factor = max(2, -(-gray.width // min(max_width, REDUCED_WIDTH))) if max_width and gray.width > max_width else 1
    if factor == 1:
        return _segment(gray, min_gap, deskew)
    small = gray.reduce(factor)
    gap = None if min_gap is None else max(1, round(min_gap / factor))
    boxes = [_scaled(box, factor, gray.size) for box in _segment(small, gap, deskew)]
    if boxes and not boxes[0].skew:
        _fit_ends(boxes, np.asarray(gray), min(otsu_threshold(np.asarray(small)), 110))
    return boxes


def _fit_ends(boxes: list[LineBox], arr: np.ndarray, cut: int) -> None:
    """Line ends found at reduced scale, fitted to the full-resolution ink: a thin stroke or a dot at a line's end
    turns grey when the page is reduced and would be cut off. Each end moves at most two paddings, so the parts of
    a split header row stay apart."""
    for box in boxes:
        reach = 2 * box.pad
        lo, hi = max(0, box.x0 - reach), min(arr.shape[1], box.x1 + reach)
        cols = np.flatnonzero((arr[box.y0 : box.y1, lo:hi] < cut).any(axis=0))
        if cols.size:
            box.x0, box.x1 = lo + int(cols[0]), lo + int(cols[-1]) + 1


def _scaled(box: LineBox, factor: int, size: tuple[int, int]) -> LineBox:
    """A box found on the page reduced by `factor`, on the full page (its pad and straightened size too)."""
    w, h = size
    inner = None if box.inner is None else (box.inner[0] * factor, box.inner[1] * factor)
    return LineBox(box.x0 * factor, box.y0 * factor, min(w, box.x1 * factor), min(h, box.y1 * factor), box.role,
                   box.skew, inner, box.pad * factor)


def _segment(gray: Image.Image, min_gap: int | None, deskew: bool) -> list[LineBox]:
    arr = np.asarray(gray)
    if min(arr.shape, default=0) < 8:  # no line of text fits (and the 5-row filters below need room)
        return []
    # Ink is the dark class; a grey watermark or show-through sits between paper and ink, so the cut never goes
    # above 110 (Otsu alone put it at ~150 on the watermarked periodical pages and joined lines through the mark).
    cut = min(otsu_threshold(arr), 110)
    ink = arr < cut
    if ink.mean() < 1e-4:  # blank page: nothing to read
        return []
    angle = estimate_skew(ink) if deskew else 0.0
    if abs(angle) >= MIN_SKEW:
        arr = np.asarray(gray.rotate(angle, resample=Image.BILINEAR, fillcolor=255))
        ink = arr < cut
    else:
        angle = 0.0
    faint = arr < max(cut, min(otsu_threshold(arr) + 40, 200))
    boxes, rules = _line_boxes(ink, faint, min_gap)
    if len(boxes) >= 3:
        text_w = float(np.percentile([b.x1 for b in boxes], 80) - np.percentile([b.x0 for b in boxes], 20))
        boxes = [*split_row(ink, boxes[0], text_w), *boxes[1:-1], *split_row(ink, boxes[-1], text_w)]
    assign_roles(boxes, rules)
    return [_unrotate(b, angle, gray.size) for b in boxes] if angle else boxes
