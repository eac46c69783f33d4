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

The same fold/apply pattern carries habits found in the shared books, where the print and its transcription
disagree one character at a time: digits (the prints set «٥٨» and footnote markers «(١)», the transcriptions write
«58» and «(1)») and vowel marks (the print is partly vocalised, the transcription drops the marks). A model
trained on one series learns that series' habits and then imposes them on the next book; learned per book, the
digits are folded to what the base model reads and written back in the book's system, and marks are dropped on
output when the book's transcription never writes them. Spacing around punctuation: two of the five shared books put a space
before «،», «.», «:» and inside «« »», the other three do not, and a model trained on one kind imposes it on the
other. Per mark and side, a candidate rule (a space always, or never) comes from the ground truth where the book's
lines are consistent (`SPACING_SHARE`); it is kept only where it makes the base model's readings of the same lines
closer to their transcription (in one shared book the transcription follows the print's own uneven spacing, which
the model already reads: forcing the book's majority there adds errors). A fine-tune leaves the spacing in its
targets (the model may learn it) and judges the rules again afterwards on its held-out lines read by the fine-tuned
model (`rejudge_spacing`). Applied to the gap between two read characters; gaps without a kept rule stay as read.

Words: some prints set a word so that the model reads it as another, the same way each time — an old Egyptian print
sets word-final «ي» dotless, so «في» reads «فى» and «الذي» «الذى», and its ligatures turn «حتى» into «حى»; one
transcriber writes «صعلم» for the honorific the model reads «صلعم». From the base model's readings of the book's
lines aligned word by word with their transcription (`learn_words`), a word read as X is written Y when the lines
show X at least `MIN_WORD_COUNT` times and `WORD_SHARE` of them transcribed as Y. Applied to whole words of the
output (Arabic letter runs, marks ignored for matching); after a fine-tune the rules are judged again on its
held-out lines and a rule that adds more edits than it removes there is dropped (`rejudge`).

Stored as `conventions.json` in the model directory, so a merged, registered or served model keeps them.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from difflib import SequenceMatcher
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
# Spacing: marks whose neighbouring space a book decides; a side is learned from MIN_GAPS occurrences with a
# character on that side, as "always" when at least SPACING_SHARE of them have a space, "never" when at most 1 - it.
SPACED_MARKS = "«»()[]{}،.:؛؟!-…,;?\""
MIN_GAPS = 8
MAX_SPACING_LINES = 300  # lines read by the base model to judge the rules (a big fine-tune reads no more)
MAX_WORD_LINES = 300  # lines without punctuation read besides, for the word rules
_WORD = re.compile("[\u0621-\u064A\u064B-\u0652\u0670]+")  # a word: a run of Arabic letters and marks
MIN_WORD_COUNT = 2  # readings of a word before a rule rewrites it
WORD_SHARE = 0.75  # share of a word's readings that the book must transcribe as the one other word
SPACING_SHARE = 0.85
_DIGIT = re.compile("[0-9\u0660-\u0669]")


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
    spacing: dict[str, dict[str, bool]] = field(default_factory=dict)  # mark -> {"before"/"after": space or not}
    words: dict[str, str] = field(default_factory=dict)  # word as read (no marks) -> the word the book writes

    def __bool__(self) -> bool:
        return bool(self.expansions or self.digits or self.drop_marks or self.spacing or self.words)

    def fold(self, text: str) -> str:
        """Training target: every surface form of a learned ligature becomes the ligature character, digits are
        written in the system the base model reads (spacing is left as the book writes it: a fine-tune may learn
        it, and `rejudge_spacing` keeps only the rules that still help the fine-tuned model)."""
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
        text = "".join(out)
        if self.spacing:
            text, confs, poss = self._space(text, confs, poss)
        if self.words:
            text, confs, poss = self._rewrite_words(text, confs, poss)
        return text, confs, poss

    def _rewrite_words(self, text: str, confs: list[float], poss: list[float]
                       ) -> tuple[str, list[float], list[float]]:
        """Each word with a rule written as the book writes it; a rewritten word's characters take its lowest
        confidence (the same ones when the length is kept) and positions spread over the old word's."""
        has_conf, has_pos = len(confs) == len(text), len(poss) == len(text)
        out, out_c, out_p = [], [], []
        last = 0
        for match in _WORD.finditer(text):
            new = self.words.get(strip_tashkeel(match.group(0)))
            if new is None:
                continue
            new = _with_marks_of(match.group(0), new)
            a, b = match.span()
            out.append(text[last:a] + new)
            if has_conf:
                kept = len(new) == b - a
                out_c += confs[last:a] + (confs[a:b] if kept else [min(confs[a:b])] * len(new))
            if has_pos:
                out_p += poss[last:a] + [poss[a + k * (b - a) // len(new)] for k in range(len(new))]
            last = b
        if not last:
            return text, confs, poss
        out.append(text[last:])
        return ("".join(out), (out_c + confs[last:]) if has_conf else confs,
                (out_p + poss[last:]) if has_pos else poss)

    def _gap(self, text: str, left: int, right: int) -> bool | None:
        """Whether the book puts a space between characters `left` and `right` of `text` (None: its lines do not
        say, or the mark is inside a number such as 3.5 or 1-2, which is never split)."""
        def in_number(i: int) -> bool:
            return 0 < i < len(text) - 1 and bool(_DIGIT.match(text[i - 1])) and bool(_DIGIT.match(text[i + 1]))

        if in_number(left) or in_number(right):
            return None
        after = self.spacing.get(text[left], {}).get("after")
        before = self.spacing.get(text[right], {}).get("before")
        if after is None:
            return before
        if before is None or before == after:
            return after
        return None  # the two marks disagree: leave the gap as read

    def _space(self, text: str, confs: list[float], poss: list[float]) -> tuple[str, list[float], list[float]]:
        """Every gap between two read characters spaced as the book does; an added space takes the confidence and
        position of the mark that asked for it, a removed one takes its own with it."""
        kept = [i for i, ch in enumerate(text) if ch != " "]
        if not kept:
            return text, confs, poss
        has_conf, has_pos = len(confs) == len(text), len(poss) == len(text)
        out, out_c, out_p = [], [], []

        def take(i: int) -> None:
            out.append(text[i])
            if has_conf:
                out_c.append(confs[i])
            if has_pos:
                out_p.append(poss[i])

        for k, i in enumerate(kept):
            if k:
                prev = kept[k - 1]
                spaces = range(prev + 1, i)
                want = self._gap(text, prev, i)
                if want is None or (want and len(spaces)):
                    for j in spaces:
                        take(j)
                elif want:
                    mark = prev if text[prev] in self.spacing else i
                    out.append(" ")
                    if has_conf:
                        out_c.append(confs[mark])
                    if has_pos:
                        out_p.append(poss[mark])
            else:
                for j in range(i):  # leading spaces (none after the text policy) stay as read
                    take(j)
            take(i)
        for j in range(kept[-1] + 1, len(text)):
            take(j)
        return "".join(out), (out_c if has_conf else confs), (out_p if has_pos else poss)

    def merged_with(self, other: "Conventions") -> "Conventions":
        """These conventions, overridden by `other` where both name a ligature (a newer fine-tune wins); spacing is
        one book's habit as a whole: `other`'s rules replace these once its lines showed any punctuation; so are the
        word rules, once `other` was learned from readings."""
        return Conventions({**self.expansions, **other.expansions}, {**self.forms, **other.forms},
                           {**self.evidence, **other.evidence}, other.keep_ligatures or self.keep_ligatures,
                           other.digits or self.digits, other.drop_marks or self.drop_marks,
                           other.spacing if (other.spacing or other.evidence.get("spacing")) else self.spacing,
                           other.words if (other.words or "words" in other.evidence) else self.words)

    def as_dict(self) -> dict:
        return {"expansions": self.expansions, "forms": self.forms, "evidence": self.evidence,
                "names": {ch: BY_CHAR[ch].name for ch in self.expansions if ch in BY_CHAR},
                "digits": self.digits, "drop_marks": self.drop_marks, "spacing": self.spacing, "words": self.words}

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
            spacing = {str(mark): {side: bool(v) for side, v in sides.items() if side in ("before", "after")}
                       for mark, sides in (data.get("spacing") or {}).items() if len(mark) == 1}
            words = {str(k): str(v) for k, v in (data.get("words") or {}).items() if k and v}
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            from ocr_assets.errors import ModelError

            raise ModelError(f"{path} is not a valid conventions file ({exc}); delete it or fine-tune again") from None
        return cls(expansions, data.get("forms", {}), data.get("evidence", {}), keep_ligatures, digits,
                   bool(data.get("drop_marks", False)), spacing, words)


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
    those with digits, enough others to judge the vowel marks (up to MIN_LETTERS * 5 letters), up to
    MAX_SPACING_LINES more with punctuation to judge the spacing rules and up to MAX_WORD_LINES others for the word
    rules."""
    wanted = {i for hits in occurrences(texts).values() for i, _ in hits}
    if habits:
        letters = spacing_lines = word_lines = 0
        for i, text in enumerate(texts):
            if any(d in text for d in LATIN_DIGITS + ARABIC_DIGITS):
                wanted.add(i)
            elif letters < MIN_LETTERS * 5:
                wanted.add(i)
                letters += len(_LETTER.findall(text))
            elif spacing_lines < MAX_SPACING_LINES and any(mark in text for mark in SPACED_MARKS):
                wanted.add(i)  # the spacing rules are judged on these readings (a few hundred lines suffice)
                spacing_lines += 1
            elif word_lines < MAX_WORD_LINES:
                wanted.add(i)  # and the word rules on these with the others
                word_lines += 1
    return sorted(wanted)


def learn(texts: Sequence[str], readings: dict[int, str] | None = None, min_share: float = 0.5) -> Conventions:
    """The book's conventions from its ground truth and the base model's readings of the same lines.

    A ligature is learned when at least `min_share` of the lines that spell it out were read without its letters
    (or as the ligature itself): the print shows a glyph there. `readings`: line index -> text read by the base
    model; None trusts the ground truth alone (every spelled-out honorific counts as a glyph).
    """
    conventions = Conventions()
    conventions.spacing, conventions.evidence["spacing"] = learn_spacing(texts)
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
        conventions.spacing, conventions.evidence["spacing_gain"] = _keep_spacing_that_helps(
            conventions.spacing, truths, reads)
        conventions.digits, digit_votes = _learn_digits(truths, reads)
        conventions.drop_marks, marks = _learn_marks(truths, reads)
        conventions.evidence["digits"], conventions.evidence["marks"] = digit_votes, marks
        # Word rules on what the other conventions leave: the readings as the book's conventions would write them.
        conventions.words, conventions.evidence["words"] = learn_words(
            truths, [conventions.apply(r)[0] for r in reads])
    return conventions


def _with_marks_of(read: str, new: str) -> str:
    """`new` (a rule's bare word) with the vowel marks the model read on `read`, letter for letter, when both have as
    many letters (a rule fixes letters, not the marks the print shows); else bare."""
    letters = [ch for ch in read if ch not in TASHKEEL]
    if len(letters) == len(read) or len(letters) != len(new):
        return new
    out, k = [], -1
    for ch in read:
        if ch in TASHKEEL:
            out.append(ch)
        else:
            k += 1
            out.append(new[k])
    return "".join(out)


def _bare_words(text: str) -> list[str]:
    """The words of a text without their marks (a mark read on its own is no word)."""
    return [bare for bare in map(strip_tashkeel, _WORD.findall(normalize(text))) if bare]


def learn_words(truths: Sequence[str], reads: Sequence[str]) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Words the model reads one way and the book writes another, consistently: each line's words (marks left out)
    aligned with its transcription's (difflib over the word lists; equal words and one-for-one replacements pair
    up), a rule X -> Y where X was read at least MIN_WORD_COUNT times and WORD_SHARE of its readings pair with Y.
    Returns the rules and their evidence: X -> [readings paired with Y, readings of X]."""
    paired: dict[str, Counter] = defaultdict(Counter)
    seen: Counter = Counter()
    for truth, read in zip(truths, reads):
        want, got = _bare_words(truth), _bare_words(read)
        seen.update(got)
        for op, a0, a1, b0, b1 in SequenceMatcher(a=got, b=want, autojunk=False).get_opcodes():
            if op == "equal" or (op == "replace" and a1 - a0 == b1 - b0):
                for x, y in zip(got[a0:a1], want[b0:b1]):
                    paired[x][y] += 1
    rules: dict[str, str] = {}
    evidence: dict[str, list[int]] = {}
    for x, targets in paired.items():
        y, n = targets.most_common(1)[0]
        if y != x and n >= MIN_WORD_COUNT and n >= WORD_SHARE * seen[x]:
            rules[x], evidence[x] = y, [n, seen[x]]
    return rules, evidence


def learn_spacing(texts: Sequence[str]) -> tuple[dict[str, dict[str, bool]], dict[str, dict[str, list[int]]]]:
    """Per punctuation mark and side, whether the book's lines put a space there (see SPACING_SHARE); and the counts
    behind it: mark -> side -> [gaps with a space, gaps]."""
    counts: dict[str, dict[str, list[int]]] = {}
    for text in texts:
        text = normalize(text)
        for i, ch in enumerate(text):
            if ch not in SPACED_MARKS:
                continue
            sides = counts.setdefault(ch, {"before": [0, 0], "after": [0, 0]})
            if i > 0:
                sides["before"][0] += text[i - 1] == " "
                sides["before"][1] += 1
            if i + 1 < len(text):
                sides["after"][0] += text[i + 1] == " "
                sides["after"][1] += 1
    rules: dict[str, dict[str, bool]] = {}
    for mark, sides in counts.items():
        for side, (spaced, gaps) in sides.items():
            if gaps >= MIN_GAPS and spaced >= SPACING_SHARE * gaps:
                rules.setdefault(mark, {})[side] = True
            elif gaps >= MIN_GAPS and spaced <= (1 - SPACING_SHARE) * gaps:
                rules.setdefault(mark, {})[side] = False
    return rules, counts


def _edit_gain(truths: list[str], reads: list[str]):
    """A judge of one rule on these lines (marks left out): `gain(key, change)` gives [edits removed, edits added]
    when `change` rewrites each reading that contains `key`."""
    from rapidfuzz.distance import Levenshtein

    truths = [strip_tashkeel(t) for t in truths]
    reads = [strip_tashkeel(r) for r in reads]
    before = [Levenshtein.distance(t, r) for t, r in zip(truths, reads)]

    def gain(key: str, change) -> list[int]:
        removed = added = 0
        for t, r, d0 in zip(truths, reads, before):
            if key in r:
                d1 = Levenshtein.distance(t, change(r))
                removed, added = removed + max(d0 - d1, 0), added + max(d1 - d0, 0)
        return [removed, added]

    return gain


def _keep_spacing_that_helps(rules: dict[str, dict[str, bool]], truths: list[str], reads: list[str]
                             ) -> tuple[dict[str, dict[str, bool]], dict[str, list[int]]]:
    """The candidate rules that bring the readings closer to the transcription: each alone must remove at least
    two edits and twice as many as it adds, over the lines read. Returns the kept rules and, per "mark side", the
    [edits removed, edits added]."""
    gain = _edit_gain(truths, reads)
    kept: dict[str, dict[str, bool]] = {}
    votes: dict[str, list[int]] = {}
    for mark, sides in rules.items():
        for side, value in sides.items():
            trial = Conventions(spacing={mark: {side: value}})
            removed, added = votes[f"{mark} {side}"] = gain(mark, lambda r: trial._space(r, [], [])[0])
            if removed >= 2 and removed >= 2 * added:
                kept.setdefault(mark, {})[side] = value
    return kept, votes


def rejudge_spacing(conventions: Conventions, truths: Sequence[str], reads: Sequence[str]) -> Conventions:
    """After a fine-tune: the spacing rules judged again on held-out lines read by the fine-tuned model (it may have
    learned the book's spacing itself, and a rule is only as right as the book is consistent). `truths`: those
    lines' training targets; `reads`: the fine-tuned model's raw readings. Rules that no longer help are dropped."""
    if not conventions.spacing:
        return conventions
    kept, votes = _keep_spacing_that_helps(conventions.spacing, list(truths), list(reads))
    conventions.spacing = kept
    conventions.evidence["spacing_gain_after_training"] = votes
    return conventions


def rejudge(conventions: Conventions, truths: Sequence[str], reads: Sequence[str]) -> Conventions:
    """After a fine-tune: `rejudge_spacing`, and each word rule judged on the same held-out lines — one that adds
    more edits than it removes there (the fine-tuned model reads that word right now, and something else the same
    way) is dropped; one that changes nothing stays."""
    conventions = rejudge_spacing(conventions, truths, reads)
    if not conventions.words:
        return conventions
    gain = _edit_gain(list(truths), list(reads))
    votes: dict[str, list[int]] = {}
    for x, y in list(conventions.words.items()):
        trial = Conventions(words={x: y})
        removed, added = votes[x] = gain(x, lambda r: trial._rewrite_words(r, [], [])[0])
        if added > removed:
            del conventions.words[x]
    conventions.evidence["words_gain_after_training"] = votes
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

        def recognize_encoded(self, blobs, **kwargs):
            for i, r in self.inner.recognize_encoded(blobs, **kwargs):
                r.text, r.char_confidences, r.char_positions = self.conventions.apply(
                    r.text, r.char_confidences, r.char_positions)
                yield i, r

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

    if not hasattr(recognizer, "recognize_encoded"):  # only readers with the batched GPU line path offer it
        del BookRecognizer.recognize_encoded
    return BookRecognizer()
