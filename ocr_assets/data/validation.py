"""Judge raw lines: accept a LinePair (8-bit gray PNG + normalized text) or quarantine it with a reason."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from ocr_assets.data.images import MAX_PIXELS, MIN_SIDE, ImageRejected, line_png
from ocr_assets.data.records import PAIR_SCHEMA, QUARANTINE_SCHEMA, RawLine
from ocr_assets.text import arabic_ratio, normalize


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds for accepting a line; defaults admit every line of the shared printed books."""

    min_arabic_ratio: float = 0.5  # share of letters in Arabic script, when the text has letters at all
    max_chars: int = 500  # a printed line holds ~100 characters; more means a page or a paragraph
    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE
    # (width / height) / characters: real lines span 0.15-1.95; outside these bounds text and image disagree.
    min_aspect_per_char: float = 0.03
    max_aspect_per_char: float = 10.0
    check_aspect: bool = True

    def __post_init__(self):
        if not 0.0 <= self.min_arabic_ratio <= 1.0:
            raise ValueError(f"min_arabic_ratio {self.min_arabic_ratio} must lie in 0..1")
        if self.max_chars < 1 or self.min_side < 1 or self.max_pixels < self.min_side**2:
            raise ValueError(f"limits must be positive and consistent: {self}")


# Reason prefixes by kind, for the quarantine histogram; every reason starts with one of them.
REASON_KINDS = {
    "orphan_image": "image has no transcription",
    "orphan_text": "transcription has no image",
    "no_data": "source gave neither image nor text",
    "not_utf8": "text is not valid UTF-8",
    "empty_text": "text is empty",
    "bad_chars": "text contains",
    "not_arabic": "text is not Arabic script",
    "too_long": "text is too long",
    "duplicate": "duplicate line_id",
    "blank_image": "image is blank",
    "aspect": "image shape",
    "error": "could not judge",
}
IMAGE_REASON_KIND = "image"  # everything decode_line_image says


def reason_kind(reason: str) -> str:
    """The kind of a quarantine reason (a REASON_KINDS key, or 'image' for image decoding problems)."""
    for kind, prefix in REASON_KINDS.items():
        if reason.startswith(prefix):
            return kind
    return IMAGE_REASON_KIND


def decode_text(data: bytes) -> str:
    """UTF-8 with or without BOM, or ValueError with a reason naming the bad byte."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ValueError("text is not valid UTF-8 (it starts with a UTF-16 byte-order mark); re-save the file as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        hint = ""
        try:
            if arabic_ratio(data.decode("cp1256")) > 0.5:
                hint = " (it looks like Windows-1256 Arabic)"
        except UnicodeDecodeError:
            pass
        raise ValueError(
            f"text is not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}){hint}; "
            "re-save the file as UTF-8"
        ) from err


def _bad_char(text: str) -> str | None:
    for ch in text:
        if ch == "\ufffd":
            return "text contains U+FFFD (a character lost in an earlier conversion); restore it from the source"
        category = unicodedata.category(ch)
        if category in ("Cc", "Co", "Cs", "Cn"):
            kind = {"Cc": "control", "Co": "private-use", "Cs": "surrogate", "Cn": "unassigned"}[category]
            return f"text contains {kind} character U+{ord(ch):04X}; replace it with the real character"
    return None


def judge_text(data: bytes, config: ValidationConfig) -> str:
    """Normalized text, or ValueError with a reason."""
    text = normalize(decode_text(data))
    if not text:
        raise ValueError("text is empty after normalization (only whitespace or bidi marks); transcribe the line")
    bad = _bad_char(text)
    if bad:
        raise ValueError(bad)
    if len(text) > config.max_chars:
        raise ValueError(
            f"text is too long: {len(text)} characters, more than the {config.max_chars} allowed for one line; "
            "is it a whole page or paragraph?"
        )
    letters = sum(ch.isalpha() for ch in text)
    ratio = arabic_ratio(text)
    # Lines without letters (page numbers, digits, punctuation) are real print; only letters are judged.
    if letters and ratio < config.min_arabic_ratio:
        raise ValueError(
            f"text is not Arabic script: {ratio:.0%} of its {letters} letters are Arabic "
            f"(minimum {config.min_arabic_ratio:.0%}); is this the right transcription? ({text[:40]!r})"
        )
    return text


def judge(raw: RawLine, config: ValidationConfig | None = None) -> tuple[dict | None, str | None]:
    """(LinePair row, None) for an acceptable line, else (None, reason); never raises."""
    config = config or ValidationConfig()
    try:
        return _judge(raw, config)
    except Exception as err:  # one bad item must never stop a run; say what happened instead
        return None, f"could not judge this line ({type(err).__name__}: {err})"


def _judge(raw: RawLine, config: ValidationConfig) -> tuple[dict | None, str | None]:
    name = raw.origin.rsplit("/", 1)[-1]
    if raw.image is None and raw.text_bytes is None:
        return None, f"source gave neither image nor text ({raw.origin})"
    if raw.text_bytes is None:
        if raw.source == "gt_folder":
            return None, f"image has no transcription (expected {name.rsplit('.', 1)[0]}.gt.txt beside it)"
        return None, f"image has no transcription ({raw.origin})"
    if raw.image is None:
        if raw.source == "gt_folder":
            stem = name[: -len(".gt.txt")] if name.lower().endswith(".gt.txt") else name
            return None, f"transcription has no image (expected {stem}.png, .jpg or .tif beside it)"
        return None, f"transcription has no image ({raw.origin})"
    try:
        text = judge_text(raw.text_bytes, config)
    except ValueError as err:
        return None, str(err)
    try:
        img, png = line_png(raw.image, max_pixels=config.max_pixels, min_side=config.min_side)
    except ImageRejected as err:
        return None, err.reason
    low, high = img.getextrema()
    if low == high:
        return None, f"image is blank (every pixel is {low}); check the crop"
    if config.check_aspect:
        per_char = img.width / img.height / len(text)
        if not config.min_aspect_per_char <= per_char <= config.max_aspect_per_char:
            return None, (
                f"image shape {img.width}x{img.height} is implausible for {len(text)} characters "
                f"((width/height)/chars = {per_char:.3f}, allowed {config.min_aspect_per_char}.."
                f"{config.max_aspect_per_char}); is the text for this image?"
            )
    row = {
        "line_id": raw.line_id,
        "document": raw.document,
        "source": raw.source,
        "image": png,
        "text": text,
        "width": img.width,
        "height": img.height,
    }
    return row, None


def judge_all(
    raws: Iterable[RawLine], config: ValidationConfig | None = None, origins: dict[str, list[str]] | None = None
) -> Iterator[tuple[RawLine, dict | None, str | None]]:
    """(raw, pair row, reason) for each raw line. One rule for a repeated line_id, whatever the source: every
    line on it is quarantined, since which image or text the id really names is unknown.

    `origins` (line_id → origins, from a first pass over the ids alone) lets a large dataset stream; without it
    the lines are held in memory to find the repeats.
    """
    config = config or ValidationConfig()
    if origins is None:
        raws = list(raws)
        origins = id_origins((raw.line_id, raw.origin) for raw in raws)
    for raw in raws:
        shared = origins.get(raw.line_id, [raw.origin])
        if len(shared) > 1:
            others = ", ".join(o for o in shared if o != raw.origin) or raw.origin
            yield raw, None, f"duplicate line_id {raw.line_id!r}: also used by {others}; keep one"
        else:
            yield (raw, *judge(raw, config))


def id_origins(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """line_id → the origins that claim it."""
    out: dict[str, list[str]] = {}
    for line_id, origin in pairs:
        out.setdefault(line_id, []).append(origin)
    return out


def quarantine_row(raw: RawLine, reason: str) -> dict:
    """A QUARANTINE_SCHEMA row."""
    return {
        "line_id": raw.line_id,
        "document": raw.document,
        "source": raw.source,
        "origin": raw.origin,
        "reason": reason,
    }


def validate_lines(
    raws: Iterable[RawLine], config: ValidationConfig | None = None
) -> tuple[pa.Table, pa.Table]:
    """(pairs as PAIR_SCHEMA, quarantine as QUARANTINE_SCHEMA) for all raw lines."""
    pairs, quarantine = [], []
    for raw, row, reason in judge_all(raws, config):
        if row is not None:
            pairs.append(row)
        else:
            quarantine.append(quarantine_row(raw, reason))
    return pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA), pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA)


def validate_gt_dir(gt_dir: str | os.PathLike, config: ValidationConfig | None = None) -> dict:
    """The `ocr-assets validate` report: {"accepted": [stem, ...], "quarantined": {stem: reason}}."""
    from ocr_assets.data.gt_folder import iter_gt_folder

    accepted: set[str] = set()
    quarantined: dict[str, str] = {}
    for raw, row, reason in judge_all(iter_gt_folder(gt_dir), config):
        if row is not None:
            accepted.add(raw.line_id)
        else:
            quarantined.setdefault(raw.line_id, reason)
    return {"accepted": sorted(accepted), "quarantined": dict(sorted(quarantined.items()))}
