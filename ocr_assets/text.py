"""The one Unicode policy for every loader, trainer, evaluator and exporter.

A declared chain of named steps: NFC, bidi controls and BOM removed, whitespace collapsed. Tashkeel is kept
in the stored text; `strip_tashkeel` gives the view that CER_norm is measured on (docs/ARCHITECTURE.md, "Measurement").
"""

from __future__ import annotations

import re
import unicodedata

# Bidi controls (LRM, RLM, ALM, embeddings, overrides, isolates), BOM / ZWNBSP, and soft hyphen.
_BIDI_AND_BOM = re.compile("[\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ufeff\u00ad]")
_WHITESPACE = re.compile(r"\s+")
# Tashkeel (fathatan .. sukun) and the superscript alef, plus tatweel: removed for the CER_norm view.
TASHKEEL = "".join(chr(c) for c in range(0x064B, 0x0653)) + "\u0670"
TATWEEL = "\u0640"
_TASHKEEL_RE = re.compile(f"[{TASHKEEL}{TATWEEL}]")
_ARABIC_LETTER = re.compile("[\u0621-\u064a\u0671-\u06d3\u06fa-\u06ff\ufb50-\ufdff\ufe70-\ufefc]")
_LATIN_LETTER = re.compile("[A-Za-z]")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def remove_bidi_marks(text: str) -> str:
    return _BIDI_AND_BOM.sub("", text)


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


# The policy, in order. Every loader calls `normalize`; nothing else edits ground truth.
STEPS = (nfc, remove_bidi_marks, collapse_whitespace)


def normalize(text: str) -> str:
    """NFC, no bidi marks or BOM, single spaces, tashkeel kept."""
    for step in STEPS:
        text = step(text)
    return text


def strip_tashkeel(text: str) -> str:
    """The metric view: normalized text without tashkeel and tatweel."""
    return collapse_whitespace(_TASHKEEL_RE.sub("", normalize(text)))


def arabic_ratio(text: str) -> float:
    """Share of letters that are Arabic script (0 when the text has no letters)."""
    arabic = len(_ARABIC_LETTER.findall(text))
    latin = len(_LATIN_LETTER.findall(text))
    letters = arabic + latin + sum(1 for ch in text if ch.isalpha() and not _ARABIC_LETTER.match(ch) and not _LATIN_LETTER.match(ch))
    return arabic / letters if letters else 0.0


def has_tashkeel(text: str) -> bool:
    return any(ch in TASHKEEL for ch in text)
