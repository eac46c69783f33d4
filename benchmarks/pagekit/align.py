"""Pseudo ground truth for page lines: align a page's recognized lines to its page-level transcription.

Real pages often come with a transcription of the whole page (one paragraph, no line breaks, no coordinates).
To adapt the line model to such a print we need line images with line texts. This module finds, for each
recognized line (hypothesis, in reading order), the words of the transcription it shows:

1. Both sides go through the text policy (`ocr_assets.text.normalize`) and are compared in the CER_norm view
   (tashkeel and tatweel removed); the spans refer back to the normalised transcript, so its marks stay.
2. The hypotheses, joined by spaces, are aligned to the transcript character by character (Levenshtein
   opcodes from rapidfuzz). Each transcript word belongs to the line whose characters are aligned (equal or
   substituted) to most of its characters, if that is at least half of them; other words lie between lines (a
   missed line, a dropped word) unless a line's words surround them. A line's pseudo ground truth runs from its first to its last word, so it always starts and
   ends at word boundaries (print breaks Arabic lines only between words).
3. Lines that share too little with the transcript (fewer than `min_anchor` of their characters equal to an
   aligned transcript character: page headers, page numbers, frame rules, two lines merged into one band) are
   taken out and the rest aligned again, so their noise cannot pull neighbouring words towards them.

`align_page` adds the local CER_norm of each line against its pseudo ground truth and marks lines above
`max_cer` as discarded; `write_pseudo_gt` turns pages into a ground-truth folder (line PNG + `.gt.txt`) for
`ocr_assets.training.finetune.finetune_gt_dir`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rapidfuzz.distance import Levenshtein

from ocr_assets.metrics import line_cer
from ocr_assets.text import TASHKEEL, TATWEEL, normalize, strip_tashkeel

_DROPPED = frozenset(TASHKEEL + TATWEEL)
MAX_CER = 0.35
MIN_ANCHOR = 0.5


@dataclass
class LineSpan:
    """Where one hypothesis line sits in the normalised transcript; `start == end` when nowhere."""

    start: int
    end: int
    text: str  # normalize(transcript)[start:end]
    anchored: bool  # False: the line shared too little with the transcript to be placed (header, noise)


@dataclass
class Alignment:
    transcript: str  # normalize(transcript): the text the spans index
    lines: list[LineSpan]
    unassigned: list[tuple[int, int]] = field(default_factory=list)  # transcript spans no line shows

    def unassigned_text(self) -> list[str]:
        return [self.transcript[a:b] for a, b in self.unassigned]


def _metric_view(text: str) -> tuple[str, list[int]]:
    """`text` without tashkeel/tatweel and with single spaces, plus each kept character's index in `text`."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch in _DROPPED:
            continue
        if ch.isspace():
            if not chars or chars[-1] == " ":
                continue
            ch = " "
        chars.append(ch)
        index.append(i)
    while chars and chars[-1] == " ":
        chars.pop()
        index.pop()
    return "".join(chars), index


def _words(view: str) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, ch in enumerate(view):
        if ch != " " and start is None:
            start = i
        elif ch == " " and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(view)))
    return spans


def _join(hyps: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Hypotheses joined by one space, and each line's [start, end) in the joined string."""
    text, ranges = "", []
    for h in hyps:
        if ranges:
            text += " "
        start = len(text)
        text += h
        ranges.append((start, len(text)))
    return text, ranges


def _owners(hyp_view: Sequence[str], ref: str, active: Sequence[int]) -> tuple[list[int | None], list[int]]:
    """Align the active lines to `ref`: the owning line of each ref character (None: aligned to nothing or a
    separator), and per active line the number of its characters that are equal to an aligned ref character."""
    joined, ranges = _join([hyp_view[k] for k in active])
    line_of = [None] * len(joined)
    for slot, (a, b) in enumerate(ranges):
        for i in range(a, b):
            if joined[i] != " ":
                line_of[i] = active[slot]
    owner: list[int | None] = [None] * len(ref)
    equal = Counter()
    for op in Levenshtein.opcodes(joined, ref):
        if op.tag not in ("equal", "replace"):
            continue
        for d in range(min(op.src_end - op.src_start, op.dest_end - op.dest_start)):
            k = line_of[op.src_start + d]
            owner[op.dest_start + d] = k
            if op.tag == "equal" and k is not None:
                equal[k] += 1
    return owner, [equal[k] for k in active]


def align_lines(hypotheses: Sequence[str], transcript: str, min_anchor: float = MIN_ANCHOR) -> Alignment:
    """Map each hypothesis line (reading order) to its words of the page transcript.

    Returns spans into `normalize(transcript)`. A line gets no span when fewer than `min_anchor` of its
    characters (spaces and tashkeel aside) equal their aligned transcript character; such lines are left out of
    the final alignment so that they cannot claim their neighbours' words.
    """
    text = normalize(transcript)
    ref, index = _metric_view(text)
    hyp_view = [strip_tashkeel(h) for h in hypotheses]
    letters = [len(h.replace(" ", "")) for h in hyp_view]
    active = [k for k in range(len(hyp_view)) if letters[k]]
    while active and ref:
        owner, equal = _owners(hyp_view, ref, active)
        keep = [k for k, e in zip(active, equal) if e >= min_anchor * letters[k]]
        if keep == active:
            break
        active = keep
    if not active or not ref:
        return Alignment(text, [LineSpan(0, 0, "", False) for _ in hypotheses], [(0, len(text))] if text else [])
    # Each transcript word goes to the line owning most of its characters; ties go to the earlier line.
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    words = _words(ref)
    for w, (a, b) in enumerate(words):
        votes = Counter(k for k in owner[a:b] if k is not None)
        if not votes:
            continue
        k = min(votes, key=lambda line: (-votes[line], line))
        if 2 * votes[k] < b - a:
            continue  # mostly aligned to nothing: a word the lines do not show (or ambiguous), left out
        first.setdefault(k, w)
        last[k] = w

    spans: list[LineSpan] = []
    taken: list[tuple[int, int]] = []
    for k in range(len(hypotheses)):
        if k not in first:
            spans.append(LineSpan(0, 0, "", k in active))
            continue
        a, b = words[first[k]][0], words[last[k]][1]
        # Back to `text`: the end runs to the next kept character, so marks after the last letter come along.
        start, end = index[a], (index[b] if b < len(index) else len(text))
        while end > start and text[end - 1].isspace():
            end -= 1
        spans.append(LineSpan(start, end, text[start:end], True))
        taken.append((start, end))
    unassigned, pos = [], 0
    for start, end in sorted(taken) + [(len(text), len(text))]:
        if text[pos:start].strip():
            lead = len(text[pos:start]) - len(text[pos:start].lstrip())
            unassigned.append((pos + lead, pos + len(text[pos:start].rstrip())))
        pos = max(pos, end)
    return Alignment(text, spans, unassigned)


@dataclass
class AlignedLine:
    """One page line with its pseudo ground truth; `kept` when its local CER_norm is at most the threshold."""

    index: int
    box: tuple[int, int, int, int] | None  # x0, y0, x1, y1 on the page
    hypothesis: str
    pseudo_gt: str
    start: int
    end: int
    cer: float  # CER_norm of the hypothesis against the pseudo ground truth (1.0 for a line placed nowhere)
    kept: bool


def align_page(hypotheses: Sequence[str], transcript: str, boxes: Sequence | None = None, max_cer: float = MAX_CER,
               min_anchor: float = MIN_ANCHOR) -> tuple[list[AlignedLine], Alignment]:
    """Per line: crop box, pseudo ground truth, local CER_norm, kept (cer <= max_cer and some text)."""
    alignment = align_lines(hypotheses, transcript, min_anchor)
    out = []
    for k, (hyp, span) in enumerate(zip(hypotheses, alignment.lines)):
        box = boxes[k] if boxes is not None else None
        if box is not None and not isinstance(box, tuple):
            box = (int(box.x0), int(box.y0), int(box.x1), int(box.y1))
        cer = line_cer(span.text, hyp) if span.text else 1.0
        out.append(AlignedLine(k, box, hyp, span.text, span.start, span.end, cer, bool(span.text) and cer <= max_cer))
    return out, alignment


def transcript_beside(page_path: Path) -> Path:
    """`NAME.jpg` → `NAME.gt.txt`, the page transcription convention of pages_dev (Transkribus exports)."""
    return page_path.with_name(page_path.name.rsplit(".", 1)[0] + ".gt.txt")


def write_pseudo_gt(pages: Sequence[Path], recognizer, out_dir: Path, max_cer: float = MAX_CER,
                    min_anchor: float = MIN_ANCHOR, transcript_of: Callable[[Path], Path] = transcript_beside,
                    log: Callable[[str], None] | None = None) -> dict:
    """Segment and read each page, align its lines to its transcription and write the kept lines as a
    ground-truth folder: `out_dir/<page stem>/<page stem>_lNN.png` + `.gt.txt` (one document per page).

    Also writes `out_dir/alignment.jsonl` (every line, kept or not, with its box, hypothesis, pseudo ground
    truth and local CER) so the selection can be inspected. Returns counts.
    """
    from ocr_assets.data.images import decode_line_image, encode_png
    from ocr_assets.pages.ocr import ocr_page

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Counter()
    with (out_dir / "alignment.jsonl").open("w", encoding="utf-8") as report:
        for path in pages:
            path = Path(path)
            stem = path.name.rsplit(".", 1)[0]
            page = decode_line_image(path.read_bytes())
            result = ocr_page(recognizer, page, path.name)
            gray = page.convert("L")
            transcript = transcript_of(path).read_text(encoding="utf-8")
            lines, alignment = align_page([ln.text for ln in result.lines], transcript,
                                          [ln.box for ln in result.lines], max_cer, min_anchor)
            summary["pages"] += 1
            summary["lines"] += len(lines)
            summary["unassigned_chars"] += sum(len(t) for t in alignment.unassigned_text())
            summary["transcript_chars"] += len(alignment.transcript)
            for line in lines:
                report.write(json.dumps({"page": stem, **asdict(line)}, ensure_ascii=False) + "\n")
                if not line.kept:
                    continue
                folder = out_dir / stem
                folder.mkdir(exist_ok=True)
                name = f"{stem}_l{line.index:02d}"
                # The very crop the recognizer reads at inference (pad of paper, straightened on a skewed page).
                (folder / f"{name}.png").write_bytes(encode_png(result.lines[line.index].box.crop(gray)))
                (folder / f"{name}.gt.txt").write_text(line.pseudo_gt + "\n", encoding="utf-8")
                summary["kept"] += 1
                summary["kept_chars"] += len(line.pseudo_gt)
            if log:
                log(f"{stem}: {sum(ln.kept for ln in lines)}/{len(lines)} lines kept")
    return dict(summary)
