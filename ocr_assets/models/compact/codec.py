"""Text <-> CTC label ids over NFC code points; tashkeel marks are labels of their own.

Characters outside the alphabet map to <unk> and are counted in `CodecStats`, so a trainer can report them
instead of crashing or silently dropping them. Fine-tuning on new characters extends the alphabet (the model
grows its classifier to match, see CompactOCRModel.extend_alphabet).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

from ocr_assets.models.compact.labels import BLANK_ID, SPECIAL_LABELS, UNK_ID
from ocr_assets.text import normalize

if TYPE_CHECKING:  # the codec itself needs no transformers (the ONNX reader imports it)
    from ocr_assets.models.compact.config import CompactOCRConfig

# What <unk> decodes to: visible in output and counted as one error by CER, like the character it stands for.
UNK_TEXT = "\ufffd"


def _chars(first: int, last: int) -> list[str]:
    return [chr(c) for c in range(first, last + 1)]


def default_alphabet() -> list[str]:
    """Arabic letters, tashkeel, tatweel, both digit sets, Arabic and Latin punctuation, ASCII letters, space."""
    arabic = _chars(0x0621, 0x063A) + _chars(0x0640, 0x0655) + ["\u0670", "\u0671"]
    persian = ["\u067e", "\u0686", "\u0698", "\u06a4", "\u06a9", "\u06af", "\u06cc"]
    digits = _chars(0x0660, 0x0669) + _chars(0x06F0, 0x06F9)
    arabic_punct = ["\u060c", "\u061b", "\u061f", "\u066a", "\u066b", "\u066c", "\u066d", "\u06d4"]
    ascii_printable = _chars(0x20, 0x7E)
    other_punct = ["\u00ab", "\u00bb", "\u2013", "\u2014", "\u2026", "\u2018", "\u2019", "\u201c", "\u201d", "\u00b7"]
    return list(dict.fromkeys(arabic + persian + digits + arabic_punct + ascii_printable + other_punct))


@dataclass
class CodecStats:
    """Counts from encoding ground truth: how many characters had no label, and which."""

    lines: int = 0
    chars: int = 0
    lines_with_unknown: int = 0
    unknown: Counter = field(default_factory=Counter)

    @property
    def unknown_chars(self) -> int:
        return sum(self.unknown.values())

    def as_dict(self, top: int = 20) -> dict:
        return {
            "lines": self.lines,
            "chars": self.chars,
            "unknown_chars": self.unknown_chars,
            "lines_with_unknown": self.lines_with_unknown,
            "unknown_top": {f"U+{ord(ch):04X} {ch}": n for ch, n in self.unknown.most_common(top)},
        }


class Codec:
    """Maps normalized text to label ids (0 blank, 1 <unk>, alphabet[i] -> i + 2) and back."""

    def __init__(self, alphabet: Sequence[str]):
        self.alphabet = list(alphabet)
        bad = [ch for ch in self.alphabet if len(ch) != 1]
        if bad:
            raise ValueError(f"alphabet entries must be single code points; got {bad[:5]!r}")
        self._ids = {ch: i + len(SPECIAL_LABELS) for i, ch in enumerate(self.alphabet)}
        if len(self._ids) != len(self.alphabet):
            raise ValueError("alphabet has duplicate characters; build it with Codec.from_texts")
        self._chars = list(SPECIAL_LABELS[:1]) + [UNK_TEXT] + self.alphabet

    @classmethod
    def from_config(cls, config: CompactOCRConfig) -> "Codec":
        return cls(config.alphabet)

    @classmethod
    def from_texts(cls, texts: Iterable[str], base: Sequence[str] | None = None, min_count: int = 1) -> "Codec":
        """Alphabet = base (default: `default_alphabet()`) + characters seen at least min_count times in texts."""
        base = list(dict.fromkeys(default_alphabet() if base is None else base))
        known = set(base)
        counts: Counter = Counter()
        for text in texts:
            counts.update(normalize(text))
        return cls(base + [ch for ch, n in counts.most_common() if n >= min_count and ch not in known])

    @property
    def vocab_size(self) -> int:
        return len(self._chars)

    def label(self, idx: int) -> str:
        return SPECIAL_LABELS[idx] if idx < len(SPECIAL_LABELS) else self._chars[idx]

    def encode(self, text: str, stats: CodecStats | None = None) -> list[int]:
        """Label ids of the normalized text in logical order; unknown characters become <unk> and are counted."""
        text = normalize(text)
        ids = [self._ids.get(ch, UNK_ID) for ch in text]
        if stats is not None:
            stats.lines += 1
            stats.chars += len(text)
            unknown = [ch for ch, i in zip(text, ids) if i == UNK_ID]
            if unknown:
                stats.lines_with_unknown += 1
                stats.unknown.update(unknown)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of already-collapsed label ids; blanks are skipped, <unk> becomes U+FFFD."""
        chars = self._chars
        return "".join([chars[i] for i in ids if i != BLANK_ID])

    def missing(self, texts: Iterable[str]) -> list[str]:
        """Characters of the texts that have no label yet, most frequent first."""
        counts: Counter = Counter()
        for text in texts:
            counts.update(ch for ch in normalize(text) if ch not in self._ids)
        return [ch for ch, _ in counts.most_common()]

    def extended(self, chars: Iterable[str]) -> "Codec":
        """A codec with these characters appended (existing ids unchanged)."""
        return Codec(list(dict.fromkeys(self.alphabet + [ch for ch in chars if ch not in self._ids])))
