"""Synthetic printed pages of classical Arabic with ground-truth line boxes, to measure line detection.

A page is laid out as an octavo edition sets it: a running header (book or chapter title, sometimes over a
rule) with the page number in the outer top corner or centred at the foot, justified right-to-left body
prose in paragraphs, and footnotes in a smaller size under a short rule at the right, each opening with a
(١) marker that the body text also carries. Text comes from the corpus sampler (`ocr_assets.synth.text`):
vocalised pages keep its tashkeel in the body (their footnotes mostly bare, as editors' notes are), bare
pages go through `strip_tashkeel`.

Every line is drawn on its own layer, so its box is the bounding box of its own ink (dots and tashkeel
included, threshold `INK_LEVEL` on the coverage), measured, never estimated from font metrics. The page may
then be turned by up to ±2° (each box becomes the axis-aligned bounding box of its line's rotated ink) and
scan-degraded (paper, uneven inking, show-through, blur, noise, binarisation, JPEG) by the same `scan_effects`
as synthetic lines. Everything is a pure function of the seed and the machine's font set.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ocr_assets.synth.fonts import FontError, FontSpec, discover_fonts, inspect_font
from ocr_assets.synth.lines import Degradation, ink_effects, scan_effects
from ocr_assets.text import normalize, strip_tashkeel

ROLES = ("header", "page-number", "body", "footnote")
INK_LEVEL = 100  # coverage (0-255) from which a pixel counts as ink of its line
BASE_DPI = 300
BASE_WIDTH = 1200  # an octavo page at 300 dpi is about 1200 x 1700 px

_DIGITS = "٠١٢٣٤٥٦٧٨٩"
PAGE_CHARS = _DIGITS + "()"  # page numbers and footnote markers: a page font must draw them
_SLANTED = re.compile(r"italic|slanted|oblique", re.IGNORECASE)
_REFERENCE = "لكل يوم رزق"  # ascender and descenders: its ink height sets the visual size of a face

# Running-header titles: classical works and chapter headings as editions print them in the header.
BOOK_TITLES = (
    "كتاب الحيوان", "البيان والتبيين", "العقد الفريد", "الكامل في اللغة والأدب", "عيون الأخبار", "الأغاني",
    "طبقات فحول الشعراء", "وفيات الأعيان", "تاريخ الرسل والملوك", "الكامل في التاريخ", "معجم البلدان",
    "الفهرست", "أدب الكاتب", "الأمالي", "المقدمة", "الشعر والشعراء", "زهر الآداب", "الإمتاع والمؤانسة",
    "مروج الذهب", "تاريخ بغداد", "الطبقات الكبرى", "سير أعلام النبلاء", "نفح الطيب", "صبح الأعشى",
    "خزانة الأدب", "الكتاب لسيبويه", "المقتضب", "الخصائص", "مجمع الأمثال", "رسائل الجاحظ",
)
_ORDINALS = ("الأول", "الثاني", "الثالث", "الرابع", "الخامس", "السادس", "السابع", "الثامن", "التاسع", "العاشر")
_CHAPTER_TOPICS = (
    "ذكر خلافة عمر بن الخطاب", "باب ما جاء في الشعر", "أخبار أبي نواس", "ذكر وقعة صفين", "باب النسب",
    "أخبار الخلفاء", "باب الأدب", "فصل في البلاغة", "ذكر من اسمه أحمد", "باب الحج", "باب الطهارة",
    "ذكر بناء بغداد", "أخبار المتنبي", "باب المبتدأ والخبر", "فصل في الكرم",
)


@dataclass(frozen=True)
class TruthLine:
    """One ground-truth line: the box of its ink (x1, y1 exclusive), its text and its role."""

    x0: int
    y0: int
    x1: int
    y1: int
    text: str
    role: str

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "text": self.text, "role": self.role}

    @classmethod
    def from_dict(cls, data: dict) -> TruthLine:
        x0, y0, x1, y1 = data["box"]
        return cls(int(x0), int(y0), int(x1), int(y1), data["text"], data["role"])


@dataclass
class SyntheticPage:
    image: Image.Image  # 'L'
    lines: list[TruthLine]  # reading order: header row, body, footnotes, a foot page number
    seed: int
    font: str
    vocalised: bool
    dpi: int
    skew_deg: float
    degraded: bool
    layout: dict = field(default_factory=dict)  # sizes, margins, spacing, what the page holds

    def lines_of(self, role: str) -> list[TruthLine]:
        return [line for line in self.lines if line.role == role]

    def to_json(self, image_name: str | None = None) -> dict:
        return {
            "image": image_name, "width": self.image.width, "height": self.image.height, "seed": self.seed,
            "font": self.font, "vocalised": self.vocalised, "dpi": self.dpi, "skew_deg": self.skew_deg,
            "degraded": self.degraded, "layout": self.layout, "lines": [line.to_dict() for line in self.lines],
        }


# --- fonts ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _pil_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.RAQM)


@functools.lru_cache(maxsize=256)
def _reference_height(path: str) -> float:
    """Ink height of `_REFERENCE` at size 100: faces differ a lot in how big a given point size looks."""
    top, bottom = _pil_font(path, 100).getbbox(_REFERENCE, direction="rtl", language="ar", anchor="ls")[1::2]
    return float(bottom - top)


def _size_for(spec: FontSpec, visual: float) -> int:
    """Font size whose reference ink height is `visual` pixels."""
    return max(8, round(100 * visual / _reference_height(spec.path)))


def page_fonts(fonts: list[FontSpec] | None = None) -> list[FontSpec]:
    """Upright faces that draw page numbers and footnote markers (Arabic-Indic digits and parentheses)."""
    pool = fonts if fonts is not None else discover_fonts()
    kept = [f for f in pool if f.covers(PAGE_CHARS) and not _SLANTED.search(f.name)]
    if not kept:
        raise FontError(
            f"none of {[f.name for f in pool]} draws Arabic-Indic digits and parentheses upright; "
            "install fontpkg-amiri (pip install fontpkg-amiri)"
        )
    return kept


def _pick_font(rng: random.Random, pool: list[FontSpec]) -> FontSpec:
    """A book face three times in four, family before file, so a seven-weight family does not dominate."""
    naskh = [f for f in pool if f.kind == "naskh"]
    other = [f for f in pool if f.kind != "naskh"]
    kind_pool = naskh if naskh and (not other or rng.random() < 0.75) else other
    families: dict[str, list[FontSpec]] = {}
    for spec in kind_pool:
        families.setdefault(spec.family or spec.name, []).append(spec)
    return rng.choice(families[rng.choice(sorted(families))])


def _bold_of(spec: FontSpec, pool: list[FontSpec]) -> FontSpec:
    """The plain bold face of the same family when there is one (headers are set bold), else `spec`."""
    bold = [f for f in pool if f.family == spec.family and re.search(r"-bold$", f.name, re.I)]
    return bold[0] if bold and bold[0].covers(PAGE_CHARS) else spec


# --- text ----------------------------------------------------------------------------------------

_SAMPLER: list = []


def _sampler():
    if not _SAMPLER:
        from ocr_assets.synth.text import LineSampler

        _SAMPLER.append(LineSampler())
    return _SAMPLER[0]


def _arabic_number(value: int) -> str:
    return "".join(_DIGITS[int(d)] for d in str(value))


class _WordStream:
    """Corpus words one at a time (vocalised, or stripped of tashkeel), only those the fonts can draw."""

    def __init__(self, rng: random.Random, vocalised: bool, fonts: list[FontSpec]):
        self.rng, self.vocalised, self.fonts = rng, vocalised, fonts
        self.buffer: list[str] = []

    def next(self) -> str:
        while not self.buffer:
            text = _sampler().sample(self.rng, True)
            if not self.vocalised:
                text = strip_tashkeel(text)
            self.buffer = [w for w in text.split() if all(f.covers(w) for f in self.fonts)]
        return self.buffer.pop(0)


# --- drawing -------------------------------------------------------------------------------------


@dataclass
class _Drawn:
    """A line drawn on its own layer: ink coverage of a full-width strip placed at page row `top`."""

    mask: np.ndarray  # uint8 coverage, strip height x page width
    top: int
    text: str
    role: str
    order: int  # reading-order group: header row 0, body 1, footnotes 2, a page number at the foot 3


class _Layout:
    """Draws lines onto strips the width of the page; the caller gives baselines in page coordinates."""

    def __init__(self, width: int):
        self.width = width
        self.order = 0  # the reading-order group of the lines drawn next
        self.lines: list[_Drawn] = []
        self.rules: list[tuple[int, int, int, int]] = []  # x0, y0, x1, y1 of printed rules (not text lines)

    def _strip(self, size: int) -> tuple[Image.Image, int]:
        height = round(3.6 * size)
        return Image.new("L", (self.width, height), 0), round(2.2 * size)

    def words(self, words: list[str], font: ImageFont.FreeTypeFont, size: int, right: float, width: float,
              baseline: int, justify: bool, role: str) -> None:
        """Words right to left from x = `right`; justified lines spread their spaces to fill `width`."""
        strip, base = self._strip(size)
        draw = ImageDraw.Draw(strip)
        widths = [font.getlength(w, direction="rtl", language="ar") for w in words]
        space = font.getlength(" ", direction="rtl", language="ar")
        gap = (width - sum(widths)) / (len(words) - 1) if justify and len(words) > 1 else space
        x = right
        for word, w in zip(words, widths):
            draw.text((round(x), base), word, font=font, fill=255, anchor="rs", direction="rtl", language="ar")
            x -= w + gap
        self._keep(strip, base, baseline, " ".join(words), role)

    def text(self, text: str, font: ImageFont.FreeTypeFont, size: int, x: float, baseline: int, anchor: str,
             role: str) -> None:
        """A whole string at `x`: anchor 'rs' (right edge), 'ms' (centre) or 'ls' (left edge) on the baseline."""
        strip, base = self._strip(size)
        ImageDraw.Draw(strip).text((round(x), base), text, font=font, fill=255, anchor=anchor, direction="rtl",
                                   language="ar")
        self._keep(strip, base, baseline, text, role)

    def _keep(self, strip: Image.Image, base: int, baseline: int, text: str, role: str) -> None:
        mask = np.asarray(strip)
        rows = np.flatnonzero((mask >= INK_LEVEL).any(axis=1))
        if len(rows) == 0:
            raise FontError(f"{text!r} drew no ink")
        if rows[0] == 0 or rows[-1] == mask.shape[0] - 1:
            raise FontError(f"{text!r} drew past its layer; the face's marks reach beyond 2.2 em / 1.4 em")
        self.lines.append(_Drawn(mask, baseline - base, normalize(text), role, self.order))

    def rule(self, x0: float, x1: float, y: float, thickness: int) -> None:
        self.rules.append((round(x0), round(y), round(x1), round(y) + thickness))


def _fill(stream: _WordStream, font: ImageFont.FreeTypeFont, width: float, first: list[str] | None = None
          ) -> list[str]:
    """As many words as fit in `width` at one space between them (at least one word)."""
    space = font.getlength(" ", direction="rtl", language="ar")
    words = list(first or [])
    used = sum(font.getlength(w, direction="rtl", language="ar") for w in words) + space * max(0, len(words) - 1)
    while True:
        word = stream.next()
        if not words and not any(ch.isalnum() for ch in word):
            continue  # a line never opens with a detached punctuation mark
        w = font.getlength(word, direction="rtl", language="ar")
        if words and used + space + w > width:
            stream.buffer.insert(0, word)  # it opens the next line
            return words
        used += (space if words else 0) + w
        words.append(word)


def _paragraph_lines(stream: _WordStream, font: ImageFont.FreeTypeFont, width: float, count: int,
                     rng: random.Random, indent: float, marker_at: dict[int, str], ends: bool = True
                     ) -> list[tuple[list[str], bool, float]]:
    """`count` lines of one paragraph as (words, justified, right indent); when the paragraph `ends` here its
    last line is short and ragged. `marker_at` maps a line of the paragraph to a footnote marker for it."""
    out = []
    for k in range(count):
        line_indent = indent if k == 0 else 0.0
        words = _fill(stream, font, width - line_indent)
        last = ends and k == count - 1
        if last and len(words) > 1:
            keep = rng.randint(1, max(1, round(len(words) * rng.uniform(0.2, 0.9))))
            stream.buffer[:0] = words[keep:]
            words = words[:keep]
        if k in marker_at:
            pick = rng.randrange(len(words))
            words[pick] += marker_at[k]
            if not last and len(words) > 1:
                # The marker widened the line; give back its last word if it no longer fits.
                space = font.getlength(" ", direction="rtl", language="ar")
                total = sum(font.getlength(w, direction="rtl", language="ar") for w in words) + space * (len(words) - 1)
                if total > width - line_indent:
                    stream.buffer.insert(0, words.pop())
        out.append((words, not last, line_indent))
    return out


# --- the page ------------------------------------------------------------------------------------


def _rotate_points(xs: np.ndarray, ys: np.ndarray, angle: float, cx: float, cy: float):
    """Where pixel centres land when the page turns by `angle` radians (clockwise on screen) about (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    px, py = xs + 0.5 - cx, ys + 0.5 - cy
    return cx + c * px - s * py, cy + s * px + c * py


def _rotate_image(image: Image.Image, angle: float) -> Image.Image:
    """The same turn as `_rotate_points`, bilinear, paper (0 coverage) brought in at the corners."""
    c, s = math.cos(angle), math.sin(angle)
    cx, cy = image.width / 2, image.height / 2
    # Output pixel -> source pixel: the inverse rotation. Pillow samples at pixel centres, as the points above.
    coeffs = (c, s, cx - c * cx - s * cy, -s, c, cy + s * cx - c * cy)
    return image.transform(image.size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)


def _ink_box(drawn: _Drawn, angle: float, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Axis-aligned box (x1, y1 exclusive) of the line's ink after the page turn, clipped to the page."""
    ys, xs = np.nonzero(drawn.mask >= INK_LEVEL)
    ys = ys + drawn.top
    w, h = size
    if angle:
        fx, fy = _rotate_points(xs.astype(np.float64), ys.astype(np.float64), angle, w / 2, h / 2)
        x0, x1 = math.floor(fx.min() - 0.5), math.ceil(fx.max() + 0.5)
        y0, y1 = math.floor(fy.min() - 0.5), math.ceil(fy.max() + 0.5)
    else:
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _choose(value, rng: random.Random, p: float) -> bool:
    """`value` when given, else a draw with probability `p` (always drawn, so the stream stays aligned)."""
    roll = rng.random() < p
    return bool(value) if value is not None else roll


def render_page(
    seed: int,
    font_path: str | Path | None = None,
    vocalised: bool | None = None,
    *,
    dpi: int = BASE_DPI,
    header: bool | None = None,
    page_number: bool | None = None,
    footnotes: bool | None = None,
    skew: float | None = None,
    degrade: bool = True,
    fonts: list[FontSpec] | None = None,
) -> SyntheticPage:
    """A printed page and its ground-truth lines, a pure function of the arguments (and installed fonts).

    None draws the choice from the seed: vocalised half the time; header 75 %, page number 85 %, footnotes
    50 % of pages; skew (degrees) 0, uniform in ±0.5 or uniform in ±2, a third of pages each. `dpi` scales
    everything from the 300-dpi octavo (about 1200 x 1700 px); 150 gives a 600 x 850 page. `degrade=False`
    gives clean black ink on white (skew still applies). `font_path` sets the face (header, body and notes);
    otherwise one is drawn from `fonts` (default: discovered) among the upright faces with Arabic-Indic digits
    and parentheses. A given seed draws the same layout choices whatever the font; text and line breaks
    follow the face's widths and glyph coverage.
    """
    if not 50 <= dpi <= 600:
        raise ValueError(f"dpi={dpi!r} is out of range; use 50-600 (300 gives a ~1200 x 1700 page)")
    if skew is not None and abs(skew) > 10:
        raise ValueError(f"skew={skew!r} degrees is not a slight skew; use |skew| <= 10")
    rng = random.Random(f"ocr_assets.synthetic_pages:{seed}")
    font_rng = random.Random(f"ocr_assets.synthetic_pages:{seed}:font")  # apart, so a font_path keeps the layout
    scale = dpi / BASE_DPI
    if font_path is not None:
        spec = inspect_font(font_path)
        if spec is None:
            raise FontError(f"{str(font_path)!r} is not an Arabic font that Pillow can draw with raqm")
        if not spec.covers(PAGE_CHARS):
            raise FontError(f"{spec.name} lacks Arabic-Indic digits or parentheses, which pages need")
        body_spec, head_spec = spec, spec
    else:
        pool = page_fonts(fonts)
        body_spec = _pick_font(font_rng, pool)
        head_spec = _bold_of(body_spec, pool) if font_rng.random() < 0.6 else body_spec
    voc = _choose(vocalised, rng, 0.5)
    has_header = _choose(header, rng, 0.75)
    has_number = _choose(page_number, rng, 0.85)
    has_notes = _choose(footnotes, rng, 0.5)
    # Scans sit straight, nearly straight or visibly skewed, a third each.
    skew_roll = (0.0, rng.uniform(-0.5, 0.5), rng.uniform(-2.0, 2.0))[min(2, int(rng.random() * 3))]
    skew_deg = float(skew) if skew is not None else round(skew_roll, 3)

    # Geometry: page, margins, type sizes and leading.
    width = round(rng.uniform(1120, 1280) * scale)
    height = round(width * rng.uniform(1.38, 1.46))
    margin_r, margin_l = (round(width * rng.uniform(0.08, 0.14)) for _ in range(2))
    margin_t, margin_b = round(height * rng.uniform(0.045, 0.08)), round(height * rng.uniform(0.05, 0.085))
    right, measure = width - margin_r, width - margin_r - margin_l
    visual = rng.uniform(38, 64) * scale  # reference ink height of the body face
    leading = rng.uniform(1.3, 1.8) + (0.15 if voc else 0.0)
    body_size = _size_for(body_spec, visual)
    body_font = _pil_font(body_spec.path, body_size)
    pitch = round(visual * leading)
    note_visual = visual * rng.uniform(0.7, 0.85)
    note_size = _size_for(body_spec, note_visual)
    note_font = _pil_font(body_spec.path, note_size)
    # Editors' notes are mostly unvocalised even under a vocalised text; marked notes get more leading.
    voc_notes = voc and rng.random() < 0.3
    note_pitch = round(note_visual * (rng.uniform(1.3, 1.6) + (0.15 if voc_notes else 0.0)))
    head_visual = visual * rng.uniform(0.85, 1.1)
    head_size = _size_for(head_spec, head_visual)
    head_font = _pil_font(head_spec.path, head_size)
    number_at_top = rng.random() < 0.6
    outer_left = rng.random() < 0.5  # a recto's outer corner is on the left of an Arabic book's page
    rule_under_header = rng.random() < 0.5
    number_value = rng.randint(3, 640)
    number_text = _arabic_number(number_value) if rng.random() < 0.8 else f"({_arabic_number(number_value)})"
    stream = _WordStream(rng, voc, [body_spec])
    note_stream = _WordStream(rng, voc_notes, [body_spec])
    layout = _Layout(width)
    line_px = max(1, round(rng.uniform(1.0, 3.0) * scale))

    # Header row: the title centred, the page number in the outer corner on the same baseline.
    y = margin_t
    if has_header or (has_number and number_at_top):
        head_base = y + round(head_visual * 0.85)
        if has_header:
            title = rng.choice(BOOK_TITLES) if rng.random() < 0.55 else (
                f"الجزء {rng.choice(_ORDINALS)}" if rng.random() < 0.25 else rng.choice(_CHAPTER_TOPICS))
            title_font, title_size = (head_font, head_size) if head_spec.covers(title) else (body_font, body_size)
            layout.text(title, title_font, title_size, margin_l + measure / 2, head_base, "ms", "header")
        if has_number and number_at_top:
            x, anchor = (margin_l, "ls") if outer_left else (right, "rs")
            layout.text(number_text, body_font, body_size, x, head_base, anchor, "page-number")
        y = head_base + round(head_visual * 0.45)
        if has_header and rule_under_header:
            y += round(visual * rng.uniform(0.2, 0.4))
            layout.rule(margin_l, right, y, line_px)
            y += line_px
        y += round(visual * rng.uniform(0.5, 0.9))

    # The foot: a centred page number under the text block.
    bottom = height - margin_b
    if has_number and not number_at_top:
        layout.order = 3
        layout.text(number_text, body_font, body_size, margin_l + measure / 2, bottom, "ms", "page-number")
        bottom -= round(visual * rng.uniform(1.4, 2.0))

    # Footnotes, laid out first to know how much room they take at the foot of the block.
    note_rows: list[tuple[list[str], bool, float]] = []
    n_notes = rng.randint(1, 3) if has_notes else 0
    if has_notes:
        for number in range(1, n_notes + 1):
            marker = f"({_arabic_number(number)})"
            rows = rng.choice((1, 1, 2, 2, 3))
            lines = [_fill(note_stream, note_font, measure, first=[marker])]
            lines += [_fill(note_stream, note_font, measure) for _ in range(rows - 1)]
            last = lines[-1]
            if len(last) > 2:
                keep = rng.randint(2, max(2, round(len(last) * rng.uniform(0.3, 0.9))))
                note_stream.buffer[:0] = last[keep:]
                lines[-1] = last[:keep]
            note_rows += [(words, k < len(lines) - 1, 0.0) for k, words in enumerate(lines)]
    notes_height = 0
    if note_rows:
        notes_height = len(note_rows) * note_pitch + round(visual * rng.uniform(0.6, 1.0))
    body_bottom = bottom - notes_height
    descent = round(visual * 0.45)
    first_base = y + round(visual * (0.95 if not voc else 1.15))
    n_body = max(1, (body_bottom - descent - first_base) // pitch + 1)

    # Body: paragraphs of justified lines, a short ragged last line, sometimes a centred section title.
    markers = [f"({_arabic_number(k + 1)})" for k in range(n_notes)]
    marker_lines = sorted(rng.sample(range(n_body), min(len(markers), n_body))) if markers else []
    title_at = rng.randrange(1, n_body) if n_body > 4 and rng.random() < 0.3 else None
    body_rows: list[tuple[list[str], bool, float] | str] = []
    while len(body_rows) < n_body:
        if title_at is not None and len(body_rows) >= title_at:
            topic = rng.choice(_CHAPTER_TOPICS)
            body_rows.append(topic if topic.startswith(("باب", "فصل")) or rng.random() < 0.5 else f"باب {topic}")
            title_at = None
            continue
        wanted = rng.randint(2, 9)
        count = min(wanted, n_body - len(body_rows))
        # A paragraph the page cuts off runs on overleaf: its last line here is full and justified.
        ends = count == wanted or rng.random() < 0.3
        indent = visual * rng.uniform(0.8, 2.0) if rng.random() < 0.5 else 0.0
        start = len(body_rows)
        marker_at = {k - start: markers[marker_lines.index(k)] for k in marker_lines if start <= k < start + count}
        body_rows += _paragraph_lines(stream, body_font, measure, count, rng, indent, marker_at, ends)
    layout.order = 1
    for k, row in enumerate(body_rows):
        baseline = first_base + k * pitch
        if isinstance(row, str):
            font, size = (head_font, head_size) if head_spec.covers(row) else (body_font, body_size)
            layout.text(row, font, size, margin_l + measure / 2, baseline, "ms", "body")
        else:
            words, justified, indent = row
            layout.words(words, body_font, body_size, right - indent, measure - indent, baseline, justified, "body")

    layout.order = 2
    if note_rows:
        rule_y = body_bottom + round(visual * rng.uniform(0.1, 0.3))
        layout.rule(right - measure * rng.uniform(0.2, 0.35), right, rule_y, max(1, line_px - 1))
        base = rule_y + round(note_visual * 1.3)
        for k, (words, justified, indent) in enumerate(note_rows):
            layout.words(words, note_font, note_size, right - indent, measure - indent, base + k * note_pitch,
                         justified, "footnote")

    # Compose the layers, then turn and degrade the page.
    alpha = np.zeros((height, width), np.uint8)
    for drawn in layout.lines:
        top, bottom_row = max(0, drawn.top), min(height, drawn.top + drawn.mask.shape[0])
        if bottom_row > top:
            part = drawn.mask[top - drawn.top : bottom_row - drawn.top]
            np.maximum(alpha[top:bottom_row], part, out=alpha[top:bottom_row])
    for x0, y0, x1, y1 in layout.rules:
        alpha[max(0, y0):y1, max(0, x0):x1] = 255
    angle = math.radians(skew_deg)
    nrng = np.random.default_rng(rng.getrandbits(64))
    coverage = alpha.astype(np.float32) / 255.0
    if degrade:
        coverage = ink_effects(coverage, rng, Degradation(strength=rng.uniform(0.3, 1.0)))
        if rng.random() < 0.2:  # show-through of the verso: mirrored, blurred, faint
            verso = Image.fromarray(np.fliplr(alpha)).filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 3.5) * scale))
            shift = round(rng.uniform(-0.02, 0.02) * height)
            ghost = np.roll(np.asarray(verso, dtype=np.float32) / 255.0, shift, axis=0) * rng.uniform(0.08, 0.22)
            coverage = np.maximum(coverage, ghost)
        if rng.random() < 0.15:  # the shadow of the binding or the scanner lid along one edge
            reach = max(2, round(width * rng.uniform(0.01, 0.04)))
            ramp = np.linspace(rng.uniform(0.3, 0.85), 0.0, reach, dtype=np.float32)
            edge = coverage[:, :reach] if rng.random() < 0.5 else coverage[:, ::-1][:, :reach]
            np.maximum(edge, ramp[None, :], out=edge)
    if angle:
        turned = _rotate_image(Image.fromarray(np.round(coverage * 255).astype(np.uint8)), angle)
        coverage = np.asarray(turned, dtype=np.float32) / 255.0
    if degrade:
        image = scan_effects(coverage, rng, nrng, Degradation(strength=rng.uniform(0.3, 1.0)))
    else:
        image = Image.fromarray(np.round(255 - 255 * coverage).astype(np.uint8))

    lines = []
    for drawn in layout.lines:
        box = _ink_box(drawn, angle, (width, height))
        if box is not None:
            lines.append((drawn.order, TruthLine(*box, text=drawn.text, role=drawn.role)))
    # Reading order: header row (title, corner number), body, footnotes, a foot page number; stable within.
    lines = [line for _, line in sorted(lines, key=lambda item: item[0])]
    layout_info = {
        "width": width, "height": height, "margins": [margin_r, margin_t, margin_l, margin_b],
        "body_size": body_size, "body_pitch": pitch, "note_size": note_size if note_rows else None,
        "header": has_header, "page_number": ("top" if number_at_top else "bottom") if has_number else None,
        "footnotes": n_notes, "header_rule": bool(has_header and rule_under_header),
        "header_font": head_spec.name,
    }
    return SyntheticPage(image=image, lines=lines, seed=seed, font=body_spec.name, vocalised=voc, dpi=dpi,
                         skew_deg=skew_deg, degraded=degrade, layout=layout_info)


def write_pages(out_dir: str | Path, n: int, seed: int = 0, **options) -> list[Path]:
    """Pages seed, seed+1, ... seed+n-1 as `<stem>.png` and `<stem>.lines.json`; returns the PNG paths.
    `options` go to `render_page` (dpi, vocalised, header, footnotes, page_number, skew, degrade, fonts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n):
        page = render_page(seed + index, **options)
        stem = f"synpage-{seed + index:06d}"
        png = out / f"{stem}.png"
        page.image.save(png, format="PNG", compress_level=3)
        data = page.to_json(image_name=png.name)
        (out / f"{stem}.lines.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        paths.append(png)
    return paths


def read_page_lines(json_path: str | Path) -> list[TruthLine]:
    """The ground-truth lines of a `<stem>.lines.json` written by `write_pages`."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    return [TruthLine.from_dict(line) for line in data["lines"]]


