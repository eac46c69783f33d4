"""Classical Arabic text lines for synthetic rendering, built from the `quran_text` package.

The package's vocalised words are in the ʿUthmānī script, whose special signs (small high letters, open
tanwīn, alef wasla) never appear in printed classical books; its `rasm_imlai` column has the modern spelling
without marks. `vocalised_words` moves the ʿUthmānī vowels onto the modern spelling, giving words as a
vocalised book edition prints them. Lines mix verse spans, shuffled vocabulary and prose formulae with the
digits, footnote markers and punctuation of real editions. Everything is drawn from a `random.Random`.
"""

from __future__ import annotations

import difflib
import functools
import random
import re
import unicodedata

from ocr_assets.errors import ConfigError
from ocr_assets.text import normalize, strip_tashkeel

ATTRIBUTION = (
    "Qurʾān text (Ḥafṣ, KFGQPC UthmanicHafs v3.0 release) from the `quran-text` Python package by quran-ws "
    "(https://quran.ws), licensed CC-BY-4.0; vowels moved onto the modern (imlāʾī) spelling by ocr_assets."
)

_SUKUN, _SHADDA = "\u0652", "\u0651"
# Standard tashkeel kept from the ʿUthmānī text; its open tanwīn and round sukun map to the print forms.
_MARK_MAP = {chr(c): chr(c) for c in range(0x064B, 0x0653)}
_MARK_MAP.update({"\u06e1": _SUKUN, "\u08f0": "\u064b", "\u08f1": "\u064c", "\u08f2": "\u064d"})
# ʿUthmānī base letters written differently (alef wasla) or not at all (small waw/yeh, tatweel) in print.
_BASE_MAP = {"\u0671": "\u0627"}
_BASE_SKIP = {"\u06e5", "\u06e6", "\u0640"}
_ALEFS = {"\u0627", "\u0622", "\u0649"}
# Letters the two spellings swap (hamza seats, alef forms, tāʾ marbūṭa): equal for alignment.
_ALIGN_FOLD = str.maketrans("آأإىءئؤة", "ااااايوت")

# Words and formulae of classical prose (biography, hadith, adab) that the Qurʾān rarely or never has,
# written here for this project, vocalised; the bare form is derived with strip_tashkeel.
PROSE_FORMULAE = (
    "قَالَ", "وَقَالَ", "فَقَالَ", "قُلْتُ", "حَدَّثَنَا", "أَخْبَرَنَا", "حَدَّثَنِي", "أَنْبَأَنَا", "عَنْ أَبِيهِ",
    "رَضِيَ اللَّهُ عَنْهُ", "صَلَّى اللَّهُ عَلَيْهِ وَسَلَّمَ", "رَحِمَهُ اللَّهُ", "بَابُ", "فَصْلٌ", "وَقِيلَ",
    "ثُمَّ", "سَنَةَ", "تُوُفِّيَ", "وُلِدَ", "بْنُ", "بْنِ", "ابْنُ", "أَبُو", "أَبِي", "الشَّيْخُ", "الْإِمَامُ",
    "الْحَافِظُ", "الْقَاضِي", "رَوَى عَنْهُ", "سَمِعَ", "وَكَانَ", "هَذَا", "ذَلِكَ", "الْكِتَابِ", "الشِّعْرِ",
    "الْعَرَبِ", "أَهْلِ", "الْمَدِينَةِ", "بَغْدَادَ", "دِمَشْقَ", "مِصْرَ", "الْكُوفَةِ", "الْبَصْرَةِ",
    "خُرَاسَانَ", "مُحَمَّدُ", "أَحْمَدُ", "عَلِيٌّ", "عُمَرُ", "عُثْمَانُ", "الْحَسَنُ", "الْحُسَيْنُ",
    "عَبْدِ اللَّهِ", "عَبْدُ الرَّحْمَنِ", "وَأَنْشَدَ", "يُقَالُ", "وَهُوَ", "وَهِيَ", "الَّذِي", "الَّتِي",
    "كَمَا", "أَيْضًا", "وَلَمْ", "إِلَّا", "حَتَّى", "بَعْدَ", "قَبْلَ", "الْخَلِيفَةُ", "الْأَمِيرُ", "الْوَزِيرُ",
    "الْجَيْشِ", "الْبَلَدِ", "الْمَسْجِدِ", "الْحَدِيثَ", "الْفِقْهِ", "اللُّغَةِ", "النَّحْوِ", "الشَّاعِرُ",
    "وَذَكَرَ", "وَرَوَى", "وَحَكَى", "قَالَ الْأَصْمَعِيُّ", "قَالَ أَبُو عُبَيْدَةَ", "وَيُرْوَى", "يَعْنِي",
    "فَلَمَّا", "وَلَمَّا", "إِذَا", "لِأَنَّ", "فَإِنَّ", "وَأَمَّا", "الْمَاءِ", "الْإِبِلِ", "الْخَيْلِ", "الْفَرَسِ",
)

_ARABIC_DIGITS = "٠١٢٣٤٥٦٧٨٩"
_PUNCT_AFTER = ("،", "،", "،", ".", ".", "؛", ":", "؟", "!")
_DASHES = ("-", "–", "—")


def _clusters(word: str) -> list[tuple[str, str]]:
    """ʿUthmānī word as (print base letter, print marks) pairs."""
    out: list[tuple[str, str]] = []
    skipping = False  # marks on a skipped base (tatweel, small waw) belong to no printed letter
    for ch in word:
        if unicodedata.category(ch) == "Mn":
            if out and not skipping and ch in _MARK_MAP:
                out[-1] = (out[-1][0], out[-1][1] + _MARK_MAP[ch])
            continue
        skipping = ch in _BASE_SKIP
        if not skipping:
            out.append((_BASE_MAP.get(ch, ch), ""))
    return out


def vocalise_imlai(uthmani: str, imlai: str) -> str:
    """The modern spelling `imlai` with the vowels of its ʿUthmānī form (bare `imlai` when they disagree)."""
    clusters = _clusters(uthmani)
    bases = [b.translate(_ALIGN_FOLD) for b, _ in clusters]
    matcher = difflib.SequenceMatcher(None, bases, list(imlai.translate(_ALIGN_FOLD)), autojunk=False)
    if matcher.ratio() < 0.6:
        return imlai
    marks = [""] * len(imlai)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and a1 - a0 == b1 - b0):
            for k in range(b1 - b0):
                marks[b0 + k] = clusters[a0 + k][1]
    out = []
    for k, letter in enumerate(imlai):
        mark = marks[k]
        if letter in _ALEFS:
            # Print puts no vowel on a long alef; only fathatan may sit on it.
            mark = "".join(m for m in mark if m == "\u064b")
        if k == 0:
            # A word-initial shadda is Qurʾānic assimilation across words, never printed in prose.
            mark = mark.replace(_SHADDA, "")
        out.append(letter + "".join(sorted(set(mark), key=mark.index)))
    return unicodedata.normalize("NFC", "".join(out))


@functools.lru_cache(maxsize=1)
def vocalised_words() -> tuple[str, ...]:
    """Every word of the muṣḥaf in vocalised modern spelling, in order ('' where it has no modern form)."""
    import quran_text

    mushaf = quran_text.Mushaf.hafs()
    imlai = [quran_text.Word(mushaf, position).rasm_imlai for position in range(len(mushaf.words))]
    return tuple(
        normalize(vocalise_imlai(word, plain)) if plain else "" for word, plain in zip(mushaf.words, imlai)
    )


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Distinct vocalised words of the corpus, sorted so sampling is reproducible."""
    return tuple(sorted({w for w in vocalised_words() if w}))


def _arabic_number(value: int) -> str:
    return "".join(_ARABIC_DIGITS[int(d)] for d in str(value))


def _number(rng: random.Random, value: int) -> str:
    """Arabic-Indic mostly, as the editions print; Western digits in some footnote apparatus."""
    return _arabic_number(value) if rng.random() < 0.8 else str(value)


def _extra_token(rng: random.Random) -> str:
    """A year, count or verse number as classical editions set them."""
    roll = rng.random()
    if roll < 0.35:
        return f"سنة {_arabic_number(rng.randint(1, 900))}" + (" هـ" if rng.random() < 0.3 else "")
    if roll < 0.6:
        return f"({_arabic_number(rng.randint(1, 286))})"
    if roll < 0.8:
        return f"[{_number(rng, rng.randint(1, 400))}]"
    return _arabic_number(rng.randint(1, 1500))


# A second text source, generated: pseudo-words built the way Arabic builds words (a random root of three sound
# consonants in a vocalised pattern, with the article, proclitics, case endings and pronoun suffixes). They look and
# are vocalised like classical words but are not the Qurʾān's vocabulary, so a model must read the glyphs instead
# of recalling words. Written for this project; 1, 2, 3 stand for the root's consonants.
PATTERN_SHARE = 0.3  # share of pseudo-word lines in the GPU pretraining recipe (`pretrain render --pattern-share`)
# Share of lines set the way some editions set quotes and brackets: a space inside them, « word » and ( word ), where
# others glue them, «word» (IbnQutayba.Adab writes « » spaced 95 % of the time, Jahiz.Hayawan ( ) 21 %). The GPU
# recipe's value (`pretrain render --spaced-share`); without such lines a model learns to drop those spaces.
SPACED_SHARE = 0.3
_ROOT_LETTERS = "بتثجحخدذرزسشصضطظعغفقكلمنه"
_SUN_LETTERS = set("تثدذرزسشصضطظلن")
_VERB_PATTERNS = (
    "1َ2َ3َ", "1َ2ِ3َ", "1َ2ُ3َ", "1َ2َّ3َ", "1َا2َ3َ", "أَ1ْ2َ3َ", "تَ1َ2َّ3َ", "تَ1َا2َ3َ", "اِنْ1َ2َ3َ",
    "اِ1ْتَ2َ3َ", "اِسْتَ1ْ2َ3َ", "يَ1ْ2ُ3ُ", "يَ1ْ2ِ3ُ", "يَ1ْ2َ3ُ", "يُ1َ2ِّ3ُ", "تَ1ْ2ُ3ُ", "نَ1ْ2ِ3ُ",
    "1ُ2ِ3َ", "1َ2َ3ْتُ", "1َ2َ3ُوا", "يَ1ْ2ُ3ُونَ", "أَ1ْ2َ3ْنَا",
)
_NOUN_PATTERNS = (
    "1َا2ِ3", "مَ1ْ2ُو3", "مَ1ْ2َ3", "مَ1ْ2ِ3", "1ِ2َا3", "1ُ2ُو3", "1َ2ِي3", "1َ2ُو3", "تَ1ْ2ِي3", "مُ1َ2ِّ3",
    "مُ1َ2َّ3", "مُ1ْ2ِ3", "اِسْتِ1ْ2َا3", "اِ1ْتِ2َا3", "أَ1ْ2َا3", "1ُ2ُ3", "1ُ2َّا3", "1ِ2ْ3", "1ُ2ْ3",
    "1َ2ْ3", "1َ2َ3", "1ِ2َا3َة", "1َ2ْ3َة", "مَ1ْ2َ3َة", "مُ1َا2َ3َة", "1ُ2َ3َاء", "1َا2ِ3َة",
)
_PROCLITICS = ("", "", "", "", "وَ", "فَ", "بِ", "لِ", "كَ")
_SUFFIXES = ("هُ", "هَا", "هُمْ", "كَ", "نَا", "هِ", "كُمْ")


def _root(rng: random.Random) -> str:
    while True:
        root = "".join(rng.choice(_ROOT_LETTERS) for _ in range(3))
        # Arabic roots never repeat their first two consonants; doubled roots (C2 = C3) contract in most patterns,
        # which these patterns do not model, so they are left out.
        if root[0] != root[1] and root[1] != root[2]:
            return root


def _fill(pattern: str, root: str) -> str:
    return "".join(root[int(ch) - 1] if ch in "123" else ch for ch in pattern)


def pattern_word(rng: random.Random) -> str:
    """One vocalised pseudo-word (normalized): a verb form, or a noun with article/tanwīn/suffix and a case vowel."""
    root = _root(rng)
    if rng.random() < 0.35:
        word = _fill(rng.choice(_VERB_PATTERNS), root)
        return _with_clitic(rng.choice(("", "", "وَ", "فَ")), word)
    stem = _fill(rng.choice(_NOUN_PATTERNS), root)
    case = rng.choice(("\u064f", "\u0650", "\u064e"))
    roll = rng.random()
    if roll < 0.4:  # definite: the article (shadda on a sun letter, sukun on its lam otherwise), a case vowel
        first = stem[0]
        if stem.startswith("اِ"):  # hamzat al-wasl: the article's lam takes the kasra, the alef none
            word = "الِا" + stem[2:] + case
        else:
            word = ("ال" + first + "\u0651" + stem[1:] if first in _SUN_LETTERS else "الْ" + stem) + case
        clitic = rng.choice(_PROCLITICS)
        if clitic in ("بِ", "لِ", "كَ"):
            word = word[:-1] + "\u0650"  # genitive after a preposition
        if clitic == "لِ":  # li + al- drops the article's alef, and its lam too before a lam (لِلَّيْلِ)
            return _finish("لِ" + (word[2:] if first == "ل" else word[1:]))
        return _finish(clitic + word)
    if roll < 0.7:  # indefinite with tanwīn (the accusative on a seat alef unless the stem ends in tāʾ marbūṭa/hamza)
        clitic = rng.choice(_PROCLITICS)
        genitive = clitic in ("بِ", "لِ", "كَ")
        if stem.endswith("اء"):  # فُعَلَاء is a diptote: no tanwīn, one short vowel (fatha for the genitive)
            return _with_clitic(clitic, stem + ("\u064e" if genitive else rng.choice(("\u064f", "\u064e"))))
        tanwin = "\u064d" if genitive else rng.choice(("\u064c", "\u064d", "\u064b"))
        word = stem + tanwin + ("ا" if tanwin == "\u064b" and stem[-1] not in "ةء" else "")
        return _with_clitic(clitic, word)
    if stem.endswith("ة"):  # tāʾ marbūṭa is written open before a suffix
        stem = stem[:-1] + "ت"
    clitic = rng.choice(_PROCLITICS)
    if clitic in ("بِ", "لِ", "كَ"):
        case = "\u0650"
    suffix = rng.choice(_SUFFIXES)
    if case == "\u0650" and suffix.startswith("هُ"):  # the pronoun's u turns i after an i (بِكِتَابِهِ, ـِهِمْ)
        suffix = "هِ" + suffix[2:]
    return _with_clitic(clitic, stem + case + suffix)  # construct with a pronoun


def _with_clitic(clitic: str, word: str) -> str:
    """A proclitic before a word; an initial hamzat al-wasl (اِ) loses its kasra after it."""
    if clitic and word.startswith("اِ"):
        word = "ا" + word[2:]
    return _finish(clitic + word)


_DOUBLED = re.compile("([\u0621-\u064a])\u0652\\1")


def _finish(word: str) -> str:
    """A consonant with sukun before the same consonant is written once with shadda (اِتِّصَال, أَمِنَّا)."""
    return normalize(_DOUBLED.sub("\\1\u0651", word))


class LineSampler:
    """Draws book-like lines from the corpus: 35–90 characters (12–35 for paragraph ends), cut at words."""

    def __init__(self, words: tuple[str, ...] | None = None, vocab: tuple[str, ...] | None = None,
                 pattern_share: float = 0.0, spaced_share: float = 0.0):
        self.words = words if words is not None else vocalised_words()
        self.vocab = vocab if vocab is not None else vocabulary()
        # Share of lines drawn mostly from generated pseudo-words (pattern_word). 0 (the default) draws nothing extra
        # from the rng, so every other stream (dev datasets, synthetic pages, tests) is what it was before them.
        # Likewise spaced_share (SPACED_SHARE): 0 draws nothing extra.
        for name, share in (("pattern share", pattern_share), ("spaced share", spaced_share)):
            if not 0.0 <= share <= 1.0:
                raise ConfigError(f"{name} {share} must be between 0 and 1")
        self.pattern_share = pattern_share
        self.spaced_share = spaced_share

    def _target_length(self, rng: random.Random) -> int:
        # Paragraph-final lines are short; full lines fill a book measure of 35–90 characters.
        return rng.randint(12, 35) if rng.random() < 0.12 else rng.randint(35, 90)

    def _pseudo_or_real(self, rng: random.Random) -> str:
        roll = rng.random()
        if roll < 0.75:
            return pattern_word(rng)
        return rng.choice(PROSE_FORMULAE) if roll < 0.85 else rng.choice(self.vocab)

    def _words(self, rng: random.Random) -> list[str]:
        """Source words for one line: a verse span, shuffled vocabulary, prose formulae, or pseudo-words."""
        if self.pattern_share and rng.random() < self.pattern_share:
            return [self._pseudo_or_real(rng) for _ in range(30)]
        roll = rng.random()
        if roll < 0.5:
            start = rng.randrange(len(self.words) - 40)
            words = [w for w in self.words[start : start + 40] if w]
            if rng.random() < 0.1:
                # Editions set quoted verses in ornate parentheses.
                cut = min(rng.randint(3, 12), len(words) - 1)
                words[0], words[cut] = "\ufd3f" + words[0], words[cut] + "\ufd3e"
            return words
        if roll < 0.75:
            return [rng.choice(self.vocab) for _ in range(30)]
        return [rng.choice(PROSE_FORMULAE) if rng.random() < 0.5 else rng.choice(self.vocab) for _ in range(30)]

    def _decorate(self, words: list[str], rng: random.Random) -> list[str]:
        """Insert punctuation, quotes, brackets, footnote markers and numbers at word boundaries."""
        space_before = rng.random() < 0.3  # some editions set " ، " and " : " with spaces both sides
        # « word » / ( word ) instead of «word» / (word); "و«" glued as such editions print it.
        gap = " " if self.spaced_share and rng.random() < self.spaced_share else ""
        tokens: list[str] = []
        quote_open = False
        for word in words:
            roll = rng.random()
            if roll < 0.015:
                tokens.append(_extra_token(rng))
            elif roll < 0.045 and not quote_open:
                opening = "و«" if gap and rng.random() < 0.3 else "«"
                word, quote_open = opening + gap + word, True
            elif roll < 0.08 and quote_open:
                word, quote_open = word + gap + "»", False
            elif roll < 0.09:
                word = f"({gap}{word}{gap})" if rng.random() < 0.6 else f"[{gap}{word}{gap}]"
            elif roll < 0.1:
                tokens.append(rng.choice(_DASHES))
            if rng.random() < 0.015:
                word += f"({_number(rng, rng.randint(1, 9))})"  # footnote marker glued to the word
            tokens.append(word)
            if rng.random() < 0.09:
                mark = rng.choice(_PUNCT_AFTER)
                if space_before:
                    tokens.append(mark)
                else:
                    tokens[-1] += mark
        if quote_open:
            tokens[-1] += gap + "»"
        return tokens

    def sample(self, rng: random.Random, vocalised: bool) -> str:
        """One normalized line; vocalised lines carry tashkeel on all or part of their words."""
        density = 1.0 if rng.random() < 0.5 else rng.uniform(0.2, 0.8)  # editions vocalise fully or partly
        tokens = self._decorate(self._words(rng), rng)
        target = self._target_length(rng)
        line: list[str] = []
        length = 0
        for token in tokens:
            bare = strip_tashkeel(token)
            if line and length + 1 + len(bare) > target:
                break
            if vocalised and rng.random() < density:
                line.append(token)
            else:
                line.append(bare)
            length += len(bare) + (1 if len(line) > 1 else 0)
        text = normalize(" ".join(line))
        if vocalised and text == strip_tashkeel(text):
            # A partly vocalised draw can miss every mark; vocalise its longest word.
            marked = [k for k in range(len(line)) if tokens[k] != strip_tashkeel(tokens[k])]
            if marked:
                pick = max(marked, key=lambda k: len(tokens[k]))
                line[pick] = tokens[pick]
                text = normalize(" ".join(line))
        return text
