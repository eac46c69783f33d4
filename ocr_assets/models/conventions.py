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

The same fold/apply pattern carries two habits found in the shared books, where the print and its transcription
disagree one character at a time: digits (the prints set «٥٨» and footnote markers «(١)», the transcriptions write
«58» and «(1)») and vowel marks (the print is partly vocalised, the transcription drops the marks). A model
trained on one series learns that series' habits and then imposes them on the next book; learned per book, the
digits are folded to what the base model reads and written back in the book's system, and marks are dropped on
output when the book's transcription never writes them.

Stored as `conventions.json` in the model directory, so a merged, registered or served model keeps them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ocr_assets.text import TASHKEEL, normalize, strip_tashkeel

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


LATIN_DIGITS = "0123456789"
ARABIC_DIGITS = "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"  # ٠١٢٣٤٥٦٧٨٩
_TO_ARABIC = str.maketrans(LATIN_DIGITS, ARABIC_DIGITS)
_TO_LATIN = str.maketrans(ARABIC_DIGITS, LATIN_DIGITS)
_LETTER = re.compile("[\u0621-\u064A]")
MIN_DIGITS = 5  # digits a book's lines must show before its digit system is learned
MIN_LETTERS = 200  # letters before its habit about vowel marks is learned


def _digits(texts) -> tuple[int, int]:
    joined = "".join(texts)
    return sum(joined.count(d) for d in LATIN_DIGITS), sum(joined.count(d) for d in ARABIC_DIGITS)


def _mark_share(texts) -> tuple[float, int]:
    joined = "".join(texts)
    letters = len(_LETTER.findall(joined))
    return (sum(joined.count(m) for m in TASHKEEL) / letters if letters else 0.0), letters


def _squash(text: str) -> str:
    return strip_tashkeel(normalize(text)).replace(" ", "")


@dataclass
class Conventions:
    """ligature char -> the expansion this book writes for it; `forms` counts what its lines wrote."""

    expansions: dict[str, str] = field(default_factory=dict)
    forms: dict[str, dict[str, int]] = field(default_factory=dict)
    evidence: dict[str, dict[str, int]] = field(default_factory=dict)  # glyph / letters votes per ligature
    keep_ligatures: bool = False
    digits: str | None = None  # "latin" / "arabic": the system the book writes where the model reads the other
    drop_marks: bool = False  # the book's transcription writes no vowel marks where the model reads them

    def __bool__(self) -> bool:
        return bool(self.expansions or self.digits or self.drop_marks)

    def fold(self, text: str) -> str:
        """Training target: every surface form of a learned ligature becomes the ligature character, digits are
        written in the system the base model reads."""
        text = normalize(text)
        for lig in LIGATURES:
            if lig.char in self.expansions:
                text = lig.regex.sub(lig.char, text)
        if self.digits == "latin":
            text = text.translate(_TO_ARABIC)
        elif self.digits == "arabic":
            text = text.translate(_TO_LATIN)
        return text

    def _piece(self, ch: str) -> str:
        if ch in self.expansions and not self.keep_ligatures:
            return self.expansions[ch]
        if self.drop_marks and ch in TASHKEEL:
            return ""
        if self.digits == "latin":
            return ch.translate(_TO_LATIN)
        if self.digits == "arabic":
            return ch.translate(_TO_ARABIC)
        return ch

    def apply(self, text: str, confidences: Sequence[float] = (), positions: Sequence[float] = ()
              ) -> tuple[str, list[float], list[float]]:
        """Model output: ligature characters become the book's expansion (unless keep_ligatures), digits the
        book's system, marks dropped when the book writes none; each expanded character inherits the ligature's
        confidence and position, a dropped mark takes its own with it."""
        if not self:
            return text, list(confidences), list(positions)
        out, confs, poss = [], [], []
        for i, ch in enumerate(text):
            piece = self._piece(ch)
            out.append(piece)
            if i < len(confidences):
                confs.extend([confidences[i]] * len(piece))
            if i < len(positions):
                poss.extend([positions[i]] * len(piece))
        return "".join(out), confs, poss

    def merged_with(self, other: "Conventions") -> "Conventions":
        """These conventions, overridden by `other` where both name a ligature (a newer fine-tune wins)."""
        return Conventions({**self.expansions, **other.expansions}, {**self.forms, **other.forms},
                           {**self.evidence, **other.evidence}, other.keep_ligatures or self.keep_ligatures,
                           other.digits or self.digits, other.drop_marks or self.drop_marks)

    def as_dict(self) -> dict:
        return {"expansions": self.expansions, "forms": self.forms, "evidence": self.evidence,
                "names": {ch: BY_CHAR[ch].name for ch in self.expansions if ch in BY_CHAR},
                "digits": self.digits, "drop_marks": self.drop_marks}

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
            digits = data.get("digits")
            if digits not in (None, "latin", "arabic"):
                raise ValueError(f"digits {digits!r} is not latin, arabic or null")
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            from ocr_assets.errors import ModelError

            raise ModelError(f"{path} is not a valid conventions file ({exc}); delete it or fine-tune again") from None
        return cls(expansions, data.get("forms", {}), data.get("evidence", {}), keep_ligatures, digits,
                   bool(data.get("drop_marks", False)))


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


def lines_to_read(texts: Sequence[str], habits: bool = True) -> list[int]:
    """Indices of the lines whose readings `learn` needs: those that spell out an honorific, and with `habits`
    those with digits and enough others to judge the vowel marks (up to MIN_LETTERS * 5 letters)."""
    wanted = {i for hits in occurrences(texts).values() for i, _ in hits}
    if habits:
        letters = 0
        for i, text in enumerate(texts):
            if any(d in text for d in LATIN_DIGITS + ARABIC_DIGITS):
                wanted.add(i)
            elif letters < MIN_LETTERS * 5:
                wanted.add(i)
                letters += len(_LETTER.findall(text))
    return sorted(wanted)


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
    if readings:
        read_idx = sorted(readings)
        truths, reads = [normalize(texts[i]) for i in read_idx], [readings[i] for i in read_idx]
        conventions.digits, digit_votes = _learn_digits(truths, reads)
        conventions.drop_marks, marks = _learn_marks(truths, reads)
        conventions.evidence["digits"], conventions.evidence["marks"] = digit_votes, marks
    return conventions


def _learn_digits(truths: list[str], reads: list[str]) -> tuple[str | None, dict]:
    """The book writes one digit system (>= 90 %) where the base model mostly reads the other."""
    (gt_latin, gt_arabic), (read_latin, read_arabic) = _digits(truths), _digits(reads)
    votes = {"truth_latin": gt_latin, "truth_arabic": gt_arabic, "read_latin": read_latin, "read_arabic": read_arabic}
    if gt_latin + gt_arabic < MIN_DIGITS or read_latin + read_arabic < MIN_DIGITS:
        return None, votes
    if gt_latin >= 0.9 * (gt_latin + gt_arabic) and read_arabic > read_latin:
        return "latin", votes
    if gt_arabic >= 0.9 * (gt_latin + gt_arabic) and read_latin > read_arabic:
        return "arabic", votes
    return None, votes


def _learn_marks(truths: list[str], reads: list[str]) -> tuple[bool, dict]:
    """The book's transcription drops vowel marks: under a fifth of the marks per letter the model reads."""
    (gt_share, letters), (read_share, _) = _mark_share(truths), _mark_share(reads)
    info = {"truth_per_letter": round(gt_share, 4), "read_per_letter": round(read_share, 4), "letters": letters}
    return letters >= MIN_LETTERS and read_share > 0.02 and gt_share < 0.2 * read_share, info


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
