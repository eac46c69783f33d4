"""A book's transcription conventions, learned at fine-tune time and applied to what the model reads.

Classical prints set honorifics as one glyph (ﷺ, ﷻ, «رضي الله عنه» as a small ligature) where the transcription
writes an expansion of its choice («صلى الله عليه وسلم», «صلي الله عليه و سلم», «صلعم»...). A CTC recognizer
cannot emit a 20-character expansion from a glyph a few frames wide, so the model reads the glyph as one label
(the Unicode ligature) and the expansion is a property of the book, kept beside the weights:

1. `learn(texts, readings)`: which honorifics a book's ground truth spells out, in which surface form, and —
   from the base model's readings of the same lines — whether the print shows them as a glyph (the reading
   misses the spelled letters) or as ordinary letters (the reading has them; nothing to learn then).
2. `Conventions.fold(text)`: training targets get the ligature where the book writes an expansion of a glyph.
3. `Conventions.apply(...)`: model output gets the book's own expansion back (or keeps the Unicode ligature
   when the user asks), character confidences and positions following the characters they belong to.

Stored as `conventions.json` in the model directory, so a merged, registered or served model keeps them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ocr_assets.text import normalize, strip_tashkeel

FILE = "conventions.json"
_END = r"(?![\u0621-\u064A])"  # the phrase ends at a word end (عنه is not the start of عنهما)


@dataclass(frozen=True)
class Ligature:
    char: str
    name: str
    pattern: str  # surface forms a transcription may use, on NFC text with spaces collapsed

    @property
    def regex(self) -> re.Pattern:
        return re.compile(self.pattern + _END)


# Longer phrases first: a text is folded in this order.
LIGATURES: tuple[Ligature, ...] = (
    Ligature("\ufdfa", "sallallahu alayhi wa-sallam",
             r"(?:صل[ىي] ?الله ?عل[يى]ه(?: ?و ?[آا]له)?(?: ?و ?سلم)|صلعم)"),
    Ligature("\ufd4a", "alayhi as-salatu wa-s-salam", r"عل[يى]ه ?الصلاة ?و ?السلام"),
    Ligature("\ufd44", "radi allahu anhuma", r"رض[يى] ?الله ?عنهما"),
    Ligature("\ufd43", "radi allahu anhum", r"رض[يى] ?الله ?عنهم"),
    Ligature("\ufd45", "radi allahu anhunna", r"رض[يى] ?الله ?عنهن"),
    Ligature("\ufd42", "radi allahu anha", r"رض[يى] ?الله ?عنها"),
    Ligature("\ufd41", "radi allahu anhu", r"رض[يى] ?الله ?عنه"),
    Ligature("\ufd40", "rahimahu allahu ta'ala", r"رحمه ?الله ?تعال[ىي]"),
    Ligature("\ufd4f", "rahimahumu allah", r"رحمهم ?الله"),
    Ligature("\ufd48", "alayhimu s-salam", r"عل[يى]هم ?السلام"),
    Ligature("\ufd47", "alayhi s-salam", r"عل[يى]ه ?السلام"),
    Ligature("\ufdfe", "subhanahu wa-ta'ala", r"سبحانه ?و ?تعال[ىي]"),
    Ligature("\ufdfb", "jalla jalaluhu", r"جل ?جلاله"),
    Ligature("\ufdff", "azza wa-jall", r"عز ?و ?جل"),
)
BY_CHAR = {lig.char: lig for lig in LIGATURES}
LIGATURE_CHARS = tuple(BY_CHAR) + ("\ufdf2",)  # ﷲ: a codec label (read as itself), never folded from «الله»


def _squash(text: str) -> str:
    return strip_tashkeel(normalize(text)).replace(" ", "")


@dataclass
class Conventions:
    """ligature char -> the expansion this book writes for it; `forms` counts what its lines wrote."""

    expansions: dict[str, str] = field(default_factory=dict)
    forms: dict[str, dict[str, int]] = field(default_factory=dict)
    evidence: dict[str, dict[str, int]] = field(default_factory=dict)  # glyph / letters votes per ligature
    keep_ligatures: bool = False

    def __bool__(self) -> bool:
        return bool(self.expansions)

    def fold(self, text: str) -> str:
        """Training target: every surface form of a learned ligature becomes the ligature character."""
        text = normalize(text)
        for lig in LIGATURES:
            if lig.char in self.expansions:
                text = lig.regex.sub(lig.char, text)
        return text

    def apply(self, text: str, confidences: Sequence[float] = (), positions: Sequence[float] = ()
              ) -> tuple[str, list[float], list[float]]:
        """Model output: ligature characters become the book's expansion (unless keep_ligatures); each expanded
        character inherits the ligature's confidence and position."""
        if self.keep_ligatures or not any(ch in self.expansions for ch in text):
            return text, list(confidences), list(positions)
        out, confs, poss = [], [], []
        for i, ch in enumerate(text):
            piece = self.expansions.get(ch, ch)
            out.append(piece)
            if i < len(confidences):
                confs.extend([confidences[i]] * len(piece))
            if i < len(positions):
                poss.extend([positions[i]] * len(piece))
        return "".join(out), confs, poss

    def merged_with(self, other: "Conventions") -> "Conventions":
        """These conventions, overridden by `other` where both name a ligature (a newer fine-tune wins)."""
        return Conventions({**self.expansions, **other.expansions}, {**self.forms, **other.forms},
                           {**self.evidence, **other.evidence}, other.keep_ligatures or self.keep_ligatures)

    def as_dict(self) -> dict:
        return {"expansions": self.expansions, "forms": self.forms, "evidence": self.evidence,
                "names": {ch: BY_CHAR[ch].name for ch in self.expansions if ch in BY_CHAR}}

    def save(self, model_dir: str | Path) -> Path | None:
        """Write conventions.json into the model directory (nothing when there is nothing learned)."""
        if not self:
            return None
        path = Path(model_dir) / FILE
        path.write_text(json.dumps(self.as_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, model_dir: str | Path, keep_ligatures: bool = False) -> "Conventions":
        """The conventions stored with a model (none: an empty set)."""
        path = Path(model_dir) / FILE
        if not path.is_file():
            return cls(keep_ligatures=keep_ligatures)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            expansions = {k: str(v) for k, v in data.get("expansions", {}).items() if len(k) == 1}
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            from ocr_assets.errors import ModelError

            raise ModelError(f"{path} is not a valid conventions file ({exc}); delete it or fine-tune again") from None
        return cls(expansions, data.get("forms", {}), data.get("evidence", {}), keep_ligatures)


def occurrences(texts: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """ligature char -> (line index, surface form) of every honorific the texts spell out."""
    found: dict[str, list[tuple[int, str]]] = {}
    for i, text in enumerate(texts):
        text = normalize(text)
        for lig in LIGATURES:
            for match in lig.regex.finditer(text):
                found.setdefault(lig.char, []).append((i, match.group(0)))
            text = lig.regex.sub(lig.char, text)  # a longer phrase is not counted again as a shorter one
    return found


def lines_to_read(texts: Sequence[str]) -> list[int]:
    """Indices of the lines whose readings `learn` needs (those that spell out an honorific)."""
    return sorted({i for hits in occurrences(texts).values() for i, _ in hits})


def learn(texts: Sequence[str], readings: dict[int, str] | None = None, min_share: float = 0.5) -> Conventions:
    """The book's conventions from its ground truth and the base model's readings of the same lines.

    A ligature is learned when at least `min_share` of the lines that spell it out were read without its letters
    (or as the ligature itself): the print shows a glyph there. `readings`: line index -> text read by the base
    model; None trusts the ground truth alone (every spelled-out honorific counts as a glyph).
    """
    conventions = Conventions()
    for char, hits in occurrences(texts).items():
        votes = Counter()
        for i, form in hits:
            reading = None if readings is None else readings.get(i)
            if reading is None:
                votes["glyph"] += 1
            elif char in reading or _squash(form) not in _squash(reading):
                votes["glyph"] += 1
            else:
                votes["letters"] += 1
        forms = Counter(form for _, form in hits)
        conventions.forms[char] = dict(forms.most_common())
        conventions.evidence[char] = dict(votes)
        if votes["glyph"] >= min_share * len(hits):
            conventions.expansions[char] = forms.most_common(1)[0][0]
    return conventions


def with_conventions(recognizer, conventions: Conventions):
    """The recognizer whose output follows `conventions` (the recognizer itself when there are none)."""
    if not conventions:
        return recognizer
    from ocr_assets.models.base import Recognizer

    class BookRecognizer(Recognizer):
        """Reads with the wrapped recognizer, then writes the book's expansions for ligatures."""

        def __init__(self):
            self.inner, self.conventions = recognizer, conventions
            self.backend = recognizer.backend

        def recognize(self, images, batch_size: int = 32):
            results = self.inner.recognize(images, batch_size=batch_size)
            for r in results:
                r.text, r.char_confidences, r.char_positions = self.conventions.apply(
                    r.text, r.char_confidences, r.char_positions)
            return results

        def save(self, path):
            out = self.inner.save(path)
            self.conventions.save(out)
            return out

        @property
        def lora_target_modules(self):
            return self.inner.lora_target_modules

        def to(self, device: str):
            self.inner.to(device)
            return self

        def parameters_count(self) -> int:
            return self.inner.parameters_count()

        def __getattr__(self, name):  # backend-specific extras (batching options, the torch model)
            return getattr(self.inner, name)

    return BookRecognizer()
