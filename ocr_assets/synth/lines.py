"""Synthetic classical Arabic line images: corpus text drawn right-to-left with raqm, then scan-degraded.

Every line is a pure function of (seed, index): its own `random.Random`, so a shard rendered by any
number of workers holds identical bytes. The label is exactly what is drawn: a font that lacks a glyph of
the text is never used for it (no tofu), and neighbouring-line fragments stay inside the crop margins.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ocr_assets.synth.text import LineSampler
from ocr_assets.synth.fonts import FontError, FontSpec, discover_fonts, select_fonts
from ocr_assets.data.records import RawLine

SHARD_COLUMNS = ("line_id", "document", "text", "image")


@dataclass(frozen=True)
class Degradation:
    """Scan-degradation probabilities and strengths; `strength` scales all magnitudes (0 = clean)."""

    strength: float = 1.0
    rotate_p: float = 0.5
    rotate_deg: float = 0.7
    shear_p: float = 0.1  # italic-like slant of some typefaces and skewed scans
    shear: float = 0.12
    neighbour_p: float = 0.3  # fragments of the line above or below, as real crops show
    justify_p: float = 0.3  # wider word spaces of justified lines
    stroke_gamma: float = 0.5  # ink thickness variation (gamma 1±this on the coverage)
    spread_p: float = 0.15
    erode_p: float = 0.12
    blur_p: float = 0.6
    blur_radius: float = 1.0
    lowres_p: float = 0.25
    noise_p: float = 0.7
    noise_sigma: float = 10.0
    texture_p: float = 0.6
    binarize_p: float = 0.25
    jpeg_p: float = 0.3

    def __post_init__(self):
        for name, value in vars(self).items():
            if value < 0 or (name.endswith("_p") and value > 1):
                raise ValueError(
                    f"Degradation.{name}={value!r} is out of range; probabilities lie in [0, 1] and strengths >= 0"
                )


DEFAULT_DEGRADATION = Degradation()


@functools.lru_cache(maxsize=256)
def _pil_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.RAQM)


def _text_mask(text: str, font: ImageFont.FreeTypeFont, pad: int = 0) -> Image.Image:
    """Coverage mask (255 = ink) of `text` drawn RTL, with `pad` pixels of empty border."""
    left, top, right, bottom = font.getbbox(text, direction="rtl", language="ar", anchor="ls")
    mask = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), text, font=font, fill=255, anchor="ls",
                              direction="rtl", language="ar")
    return mask


def _geometry(text: str, font: ImageFont.FreeTypeFont, rng: random.Random, deg: Degradation) -> Image.Image:
    """The text mask, slightly rotated and sheared as a line sits in a real scan (one bilinear warp)."""
    s = deg.strength
    angle = rng.uniform(-1, 1) * math.radians(deg.rotate_deg) * s if rng.random() < deg.rotate_p * min(s, 1) else 0.0
    shear = rng.uniform(-1, 1) * deg.shear * s if rng.random() < deg.shear_p * min(s, 1) else 0.0
    if not angle and not shear:
        return _text_mask(text, font)
    left, top, right, bottom = font.getbbox(text, direction="rtl", language="ar", anchor="ls")
    # Deskewed pages leave a line drifting a fraction of its height end to end, whatever its length.
    limit = math.atan(0.2 * (bottom - top) / max(1, right - left))
    angle = max(-limit, min(limit, angle))
    # Only as much border as the warp moves ink: the crop later pads whatever it needs.
    pad = 2 + math.ceil((right - left) / 2 * abs(math.sin(angle)) + (bottom - top) / 2 * abs(shear))
    mask = _text_mask(text, font, pad)
    cx, cy = mask.width / 2, mask.height / 2
    a, b, d, e = math.cos(angle), math.sin(angle) + shear, -math.sin(angle), math.cos(angle)
    coeffs = (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)
    return mask.transform(mask.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)


def _justify(text: str, rng: random.Random, deg: Degradation) -> str:
    """Wider word spaces, as justified book lines have; only whitespace changes, so the label still holds."""
    if not text.count(" ") or rng.random() >= deg.justify_p * min(deg.strength, 1):
        return text
    return "".join(" " * (2 + (rng.random() < 0.25)) if ch == " " else ch for ch in text)


def _ink_box(mask: Image.Image) -> tuple[int, int, int, int]:
    box = mask.point(lambda v: 255 if v > 60 else 0).getbbox()
    if box is None:
        raise FontError("the text rendered no ink; the font draws blanks for it")
    return box


def _paste_neighbour(canvas: np.ndarray, neighbour: Image.Image, above: bool, limit: int, rng: random.Random):
    """Max-composite a neighbouring line so its ink ends at row `limit` (above) or starts there (below)."""
    nbox = neighbour.getbbox()
    if nbox is None:
        return
    arr = np.asarray(neighbour.crop(nbox), dtype=np.uint8)
    nh, nw = arr.shape
    h, w = canvas.shape
    top = limit - nh if above else limit
    x0 = rng.randint(min(0, w - nw), max(0, w - nw))
    y_lo, y_hi = max(top, 0), min(top + nh, h)
    x_lo, x_hi = max(x0, 0), min(x0 + nw, w)
    if y_lo >= y_hi or x_lo >= x_hi:
        return
    part = arr[y_lo - top : y_hi - top, x_lo - x0 : x_hi - x0]
    np.maximum(canvas[y_lo:y_hi, x_lo:x_hi], part, out=canvas[y_lo:y_hi, x_lo:x_hi])


def _smooth_field(shape: tuple[int, int], nrng: np.random.Generator, cell: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (paper texture, uneven inking)."""
    h, w = shape
    small = nrng.uniform(-1, 1, size=(max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), dtype=np.float32)


def _otsu(gray: np.ndarray) -> int:
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    cum, cum_mean = np.cumsum(hist), np.cumsum(hist * np.arange(256))
    w0 = cum / total
    m0 = cum_mean / np.maximum(cum, 1)
    m1 = (cum_mean[-1] - cum_mean) / np.maximum(total - cum, 1)
    between = w0 * (1 - w0) * (m0 - m1) ** 2
    return int(np.argmax(between))


def scan_effects(alpha: np.ndarray, rng: random.Random, nrng: np.random.Generator, deg: Degradation) -> Image.Image:
    """Coverage in [0, 1] to a scanned-looking grey image: paper, ink, blur, noise, binarisation, JPEG."""
    s = deg.strength
    h, w = alpha.shape
    # Mostly near-white paper and near-black ink, as 300 dpi grey scans of books show; some greyish scans.
    paper = rng.uniform(228, 255) - (rng.uniform(0, 45) * s if rng.random() < 0.15 else 0.0)
    ink = rng.uniform(0, 50 * s) * rng.random()
    paper_field = np.full(alpha.shape, paper, np.float32)
    if rng.random() < deg.texture_p * min(s, 1):
        paper_field += _smooth_field(alpha.shape, nrng, rng.randint(12, 60)) * rng.uniform(1, 8) * s
        # Uneven inking: some strokes print lighter.
        alpha = alpha * (1 - 0.2 * s * np.clip(_smooth_field(alpha.shape, nrng, rng.randint(6, 30)), 0, 1))
    gray = paper_field - alpha * (paper_field - ink)
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
    if rng.random() < deg.blur_p * min(s, 1):
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, deg.blur_radius * s)))
    if rng.random() < deg.lowres_p * min(s, 1):
        f = rng.uniform(0.45, 0.85)
        small = image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
        image = small.resize((w, h), rng.choice((Image.BILINEAR, Image.BICUBIC, Image.NEAREST)))
    if rng.random() < deg.binarize_p * min(s, 1):
        gray8 = np.asarray(image, dtype=np.uint8)
        threshold = _otsu(gray8) + rng.randint(-25, 25)
        binary = np.where(gray8 > threshold, 255, 0).astype(np.uint8)
        if rng.random() < 0.3:  # isolated specks of dust survive a black-and-white scan
            specks = nrng.random(binary.shape) < 0.0015 * s
            binary[specks] = 0
        return Image.fromarray(binary)
    if rng.random() < deg.noise_p * min(s, 1):
        sigma = 1 + deg.noise_sigma * s * rng.random() ** 2  # mostly light sensor noise, now and then heavy
        noisy = np.asarray(image, dtype=np.float32) + nrng.normal(0, sigma, size=(h, w)).astype(np.float32)
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if rng.random() < deg.jpeg_p * min(s, 1):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(max(5, int(85 - 55 * s)), 90))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    return image


def sample_height(rng: random.Random) -> int:
    """Line height as 200–300 dpi book scans give it (log-uniform 30–160 px, median about 70)."""
    return round(math.exp(rng.uniform(math.log(30), math.log(160))))


def render_line(
    text: str,
    font: FontSpec,
    rng: random.Random,
    height: int | None = None,
    degrade: bool = True,
    degradation: Degradation = DEFAULT_DEGRADATION,
    neighbours: tuple[str, ...] = (),
) -> Image.Image:
    """Draw `text` RTL in `font`, crop it like a segmented scan line and degrade it; grayscale ('L')."""
    if not font.covers(text):
        missing = sorted({f"U+{ord(c):04X}" for c in text if ord(c) not in font.codepoints})
        raise FontError(f"font {font.name!r} has no glyph for {missing} in {text!r}; pick a font that covers it")
    target_h = height or sample_height(rng)
    if target_h < 8:
        raise ValueError(f"height={target_h!r} is too small to draw a line; use at least 8 px (or None)")
    deg = degradation if degrade else Degradation(strength=0.0)
    # Draw larger than the target and scale down, as a scanner integrates ink over each pixel.
    size = max(12, min(200, round(target_h * rng.uniform(0.8, 1.2))))
    pil_font = _pil_font(font.path, size)
    mask = _geometry(_justify(text, rng, deg), pil_font, rng, deg)
    x0, y0, x1, y1 = _ink_box(mask)
    margin = lambda lo, hi: round(size * rng.uniform(lo, hi))  # noqa: E731 - local shorthand
    top, bottom = y0 - margin(0.03, 0.35), y1 + margin(0.03, 0.35)
    left, right = x0 - margin(0.0, 0.4), x1 + margin(0.0, 0.4)
    canvas = np.zeros((bottom - top, right - left), np.uint8)
    # The crop may reach past the mask's padding; copy the overlap.
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(right, mask.width), min(bottom, mask.height)
    canvas[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = np.asarray(mask.crop((sx0, sy0, sx1, sy1)))
    for k, other in enumerate(neighbours[:2]):
        if degrade and rng.random() < degradation.neighbour_p and other and font.covers(other):
            above = (k == 0) == (rng.random() < 0.5)
            gap = (y0 - top) if above else (bottom - y1)
            if gap > 3:
                # Real crops catch the neighbour's descenders or dots, not half of its line.
                reach = rng.randint(1, max(1, min(gap - 2, round(0.18 * size))))
                limit = reach if above else canvas.shape[0] - reach
                _paste_neighbour(canvas, _text_mask(other, pil_font, 0), above, limit, rng)
    line = Image.fromarray(canvas)
    scale = target_h / line.height
    # Bilinear with Pillow's area-aware support: a scanner's pixel integration at a third of Lanczos' cost.
    line = line.resize((max(1, round(line.width * scale)), target_h), Image.BILINEAR)
    alpha = np.asarray(line, dtype=np.float32) / 255.0
    if not degrade:
        return Image.fromarray(np.round(255 - 255 * alpha).astype(np.uint8))
    # Rows of the line itself: neighbour fragments lie outside them, so legibility is judged here.
    band = slice(max(0, math.floor((y0 - top) * scale)), math.ceil((y1 - top) * scale) + 1)
    for _ in range(3):
        nrng = np.random.default_rng(rng.getrandbits(64))
        image = scan_effects(ink_effects(alpha, rng, deg), rng, nrng, deg)
        if _legible(alpha[band], np.asarray(image)[band]):
            return image
        # Too faint, thin or noisy to read: the label would lie. Degrade more gently.
        deg = dataclasses.replace(deg, strength=deg.strength / 2)
    return scan_effects(alpha, rng, np.random.default_rng(rng.getrandbits(64)), Degradation(strength=0.0))


def ink_effects(alpha: np.ndarray, rng: random.Random, deg: Degradation) -> np.ndarray:
    """Stroke weight as presses vary it: gamma on the coverage, ink spread (bleed) or erosion (worn type)."""
    s = min(deg.strength, 1)
    alpha = alpha ** (1 + rng.uniform(-1, 1) * deg.stroke_gamma * s)
    if rng.random() < deg.spread_p * s:
        bled = Image.fromarray((alpha * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0) * deg.strength))
        alpha = np.clip(np.asarray(bled, dtype=np.float32) / 255 * rng.uniform(1.4, 2.2), 0, 1)
    elif rng.random() < deg.erode_p * s:
        cut = rng.uniform(0.15, 0.4) * deg.strength
        alpha = np.clip((alpha - cut) / (1 - cut), 0, 1)
    return alpha


def _legible(alpha: np.ndarray, gray: np.ndarray) -> bool:
    """True when every stretch of the clean line still shows most of its ink, dark against the paper."""
    ink = alpha > 0.6
    if not ink.any():
        return True
    paper = float(np.median(gray[alpha < 0.05])) if (alpha < 0.05).any() else 255.0
    dark = gray < paper - 50
    if dark[ink].mean() < 0.7:
        return False
    # No glyph may vanish: each stretch about a third of the line height wide keeps part of its ink.
    step = max(4, alpha.shape[0] // 3)
    ink_cols = np.add.reduceat(ink.sum(axis=0), np.arange(0, ink.shape[1], step))
    dark_cols = np.add.reduceat((dark & ink).sum(axis=0), np.arange(0, ink.shape[1], step))
    needed = ink_cols >= 4
    return bool(np.all(dark_cols[needed] >= 0.35 * ink_cols[needed]))


def choose_font(text: str, fonts: list[FontSpec], rng: random.Random, naskh_share: float = 0.7) -> FontSpec | None:
    """A font for `text`: book faces `naskh_share` of the time, family before file; None if none covers it."""
    by_kind: dict[str, dict[str, list[FontSpec]]] = {}
    for spec in fonts:
        by_kind.setdefault(spec.kind, {}).setdefault(spec.family or spec.name, []).append(spec)
    kinds = sorted(by_kind)
    kind = "naskh" if "naskh" in by_kind and (len(kinds) == 1 or rng.random() < naskh_share) else None
    if kind is None:
        kind = rng.choice([k for k in kinds if k != "naskh"] or kinds)
    families = by_kind[kind]
    family = families[rng.choice(sorted(families))]
    spec = rng.choice(family)
    if spec.covers(text):
        return spec
    # The drawn text must equal the label: fall back to a font that has every glyph, same kind first.
    covering = [f for f in fonts if f.covers(text)]
    same_kind = [f for f in covering if f.kind == kind]
    pool = same_kind or covering
    return rng.choice(pool) if pool else None


_SAMPLER: list[LineSampler] = []


def _sampler() -> LineSampler:
    if not _SAMPLER:
        _SAMPLER.append(LineSampler())
    return _SAMPLER[0]


def use_sampler(sampler: LineSampler) -> None:
    """Draw this process's synthetic line texts from `sampler` (a benchmark's text mix; training keeps the default)."""
    _SAMPLER[:] = [sampler]


# Honorific ligatures as classical prints set them (one glyph), drawn where the font has the glyph; the label is
# the Unicode ligature, so a model learns one label per glyph and a book's expansion is applied on output
# (ocr_assets.models.conventions). «ﷲ» is left out: fonts draw «الله» with the same ligature, one image two labels.
LIGATURE_SHARE = 0.08  # of lines
_LIGATURE_PHRASES = (("رسول الله", "\ufdfa"), ("النبي", "\ufdfa"), ("الله", "\ufdfb"), ("محمد", "\ufdfa"))


def _with_ligature(text: str, font: FontSpec, fonts: list[FontSpec], rng: random.Random) -> tuple[str, FontSpec]:
    """`text` with an honorific ligature after a word (sometimes with its usual phrase), drawn in `font` or, when
    that face lacks the glyph, in one of the same kind that has it (unchanged when no face has it)."""
    phrase, glyph = _LIGATURE_PHRASES[rng.randrange(len(_LIGATURE_PHRASES))]
    words = text.split(" ")
    at = rng.randrange(len(words) + 1)
    insert = [phrase, glyph] if rng.random() < 0.5 else [glyph]
    new = " ".join(words[:at] + insert + words[at:])
    if font.covers(new):
        return new, font
    covering = [f for f in fonts if f.covers(new)]
    pool = [f for f in covering if f.kind == font.kind] or covering
    return (new, rng.choice(pool)) if pool else (text, font)


def _plan(seed: int, index: int, fonts: list[FontSpec], vocalised_fraction: float):
    """Text, font, neighbour texts and the rng left for drawing, for line `index` of stream `seed`."""
    rng = random.Random(f"ocr_assets.synthetic:{seed}:{index}")
    sampler = _sampler()
    vocalised = rng.random() < vocalised_fraction
    for _ in range(20):
        text = sampler.sample(rng, vocalised)
        font = choose_font(text, fonts, rng)
        if font is not None:
            break
    else:
        raise FontError(
            f"none of the fonts {[f.name for f in fonts]} covers the corpus text (last: {text!r}); "
            "add a font with Arabic punctuation and digits (e.g. fontpkg-amiri)"
        )
    neighbours = (sampler.sample(rng, vocalised), sampler.sample(rng, vocalised))
    # Its own rng: the other lines of a stream stay what they were before ligatures were drawn.
    lig = random.Random(f"ocr_assets.synthetic.ligature:{seed}:{index}")
    if lig.random() < LIGATURE_SHARE:
        text, font = _with_ligature(text, font, fonts, lig)
    return text, font, neighbours, rng


def line_text(seed: int, index: int, fonts: list[FontSpec], vocalised_fraction: float = 0.5) -> tuple[str, FontSpec]:
    """The label and font of line `index` of stream `seed`, without drawing it."""
    text, font, _, _ = _plan(seed, index, fonts, vocalised_fraction)
    return text, font


def synthetic_line(
    seed: int,
    index: int,
    fonts: list[FontSpec],
    vocalised_fraction: float = 0.5,
    degradation: Degradation = DEFAULT_DEGRADATION,
) -> tuple[str, FontSpec, bytes]:
    """Line `index` of the stream `seed`: (text, font, PNG bytes); a pure function of its arguments."""
    text, font, neighbours, rng = _plan(seed, index, fonts, vocalised_fraction)
    image = render_line(text, font, rng, degradation=degradation, neighbours=neighbours)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)  # as small as level 6 on noisy scans, twice as fast
    return text, font, buffer.getvalue()


def _check_fraction(vocalised_fraction: float) -> None:
    if not 0 <= vocalised_fraction <= 1:
        raise ValueError(f"vocalised_fraction={vocalised_fraction!r} must lie in [0, 1]")


def iter_synthetic_lines(
    count: int,
    seed: int,
    fonts: list[FontSpec] | None = None,
    vocalised_fraction: float = 0.5,
    exclude_fonts: tuple[str, ...] = (),
    degradation: Degradation = DEFAULT_DEGRADATION,
) -> Iterator[RawLine]:
    """`count` synthetic RawLines (source "synthetic", document per font), identical for the same seed."""
    _check_fraction(vocalised_fraction)
    pool = select_fonts(fonts if fonts is not None else discover_fonts(), exclude_fonts)
    for index in range(count):
        text, font, png = synthetic_line(seed, index, pool, vocalised_fraction, degradation)
        yield RawLine(
            line_id=f"synthetic-{seed}-{index:08d}",
            document=f"synthetic-{font.name}",
            source="synthetic",
            origin=f"synthetic seed={seed} index={index} font={font.name}",
            image=png,
            text_bytes=text.encode("utf-8"),
        )


# --- bulk shards for GPU pretraining -------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(fonts: list[FontSpec], vocalised_fraction: float, degradation: Degradation,
                 sampler: LineSampler | None = None) -> None:
    _WORKER.update(fonts=fonts, vocalised_fraction=vocalised_fraction, degradation=degradation)
    if sampler is not None and not _SAMPLER:
        _SAMPLER.append(sampler)  # the parent's corpus: a worker need not rebuild the vocalised words
    _sampler()


def _render_range(seed: int, start: int, stop: int) -> list[tuple[str, str, str, bytes]]:
    rows = []
    for index in range(start, stop):
        text, font, png = synthetic_line(
            seed, index, _WORKER["fonts"], _WORKER["vocalised_fraction"], _WORKER["degradation"]
        )
        rows.append((f"synthetic-{seed}-{index:08d}", f"synthetic-{font.name}", text, png))
    return rows


@dataclass(frozen=True)
class ShardSummary:
    path: str
    lines: int
    seconds: float
    workers: int

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else float("inf")


def render_shard(
    out_path,
    count: int,
    seed: int,
    fonts: list[FontSpec] | None = None,
    exclude_fonts: tuple[str, ...] = (),
    workers: int = 1,
    vocalised_fraction: float = 0.5,
    degradation: Degradation = DEFAULT_DEGRADATION,
    chunk: int = 16,
    row_group: int = 1024,
) -> ShardSummary:
    """Write `count` lines to Parquet (line_id, document, text, image PNG), rendered by `workers` processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_fraction(vocalised_fraction)
    if workers < 1:
        raise ValueError(f"workers={workers!r} must be at least 1")
    pool = select_fonts(fonts if fonts is not None else discover_fonts(), exclude_fonts)
    schema = pa.schema([("line_id", pa.string()), ("document", pa.string()), ("text", pa.string()),
                        ("image", pa.binary())])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ranges = [(seed, start, min(start + chunk, count)) for start in range(0, count, chunk)]
    started = time.perf_counter()
    written = 0
    buffer: list[tuple] = []
    with pq.ParquetWriter(str(out_path), schema) as writer:

        def write(rows, flush=False):
            nonlocal written
            buffer.extend(rows)
            # Row groups of about a thousand lines: small tasks balance workers, big groups read fast.
            if buffer and (flush or len(buffer) >= row_group):
                writer.write_table(pa.table(dict(zip(SHARD_COLUMNS, map(list, zip(*buffer)))), schema=schema))
                written += len(buffer)
                buffer.clear()

        if workers == 1:
            _init_worker(pool, vocalised_fraction, degradation)
            for args in ranges:
                write(_render_range(*args))
        else:
            # Spawned workers: safe when the caller holds threads or CUDA (Dagster steps, trainers).
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                     initargs=(pool, vocalised_fraction, degradation, _sampler())) as executor:
                pending = []
                for args in ranges:
                    pending.append(executor.submit(_render_range, *args))
                    if len(pending) >= 4 * workers:  # bounded look-ahead keeps memory flat on big shards
                        write(pending.pop(0).result())
                for future in pending:
                    write(future.result())
        write([], flush=True)
    return ShardSummary(str(out_path), written, time.perf_counter() - started, workers)
