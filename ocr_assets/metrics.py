"""OCR metrics (docs/ARCHITECTURE.md, "Measurement"): CER, CER_norm (tashkeel and tatweel removed), WER, BLEU, per group."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Sequence

from rapidfuzz.distance import Levenshtein

from ocr_assets.text import normalize, strip_tashkeel


@dataclass
class Scores:
    cer: float
    cer_norm: float
    wer: float
    wer_norm: float
    bleu: float
    lines: int
    ref_chars: int

    def as_dict(self) -> dict:
        return asdict(self)


def _corpus_cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    # Corpus CER: total edit distance over total reference characters (an empty reference counts its insertions).
    edits = sum(Levenshtein.distance(r, h) for r, h in zip(refs, hyps, strict=True))
    chars = sum(len(r) for r in refs)
    return edits / chars if chars else float(any(hyps))


def _corpus_wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    import jiwer  # lazy: training code needs CER only

    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r.strip()]
    if not pairs:
        return 0.0
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """CER after the text policy (NFC, bidi marks removed, spaces collapsed), tashkeel kept."""
    return _corpus_cer([normalize(r) for r in refs], [normalize(h) for h in hyps])


def cer_norm(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """CER with tashkeel and tatweel removed from both sides."""
    return _corpus_cer([strip_tashkeel(r) for r in refs], [strip_tashkeel(h) for h in hyps])


def score(refs: Sequence[str], hyps: Sequence[str]) -> Scores:
    import sacrebleu

    n_refs = [normalize(r) for r in refs]
    n_hyps = [normalize(h) for h in hyps]
    s_refs = [strip_tashkeel(r) for r in refs]
    s_hyps = [strip_tashkeel(h) for h in hyps]
    bleu = sacrebleu.corpus_bleu(n_hyps, [n_refs], tokenize="none").score if refs else 0.0
    return Scores(
        cer=_corpus_cer(n_refs, n_hyps),
        cer_norm=_corpus_cer(s_refs, s_hyps),
        wer=_corpus_wer(n_refs, n_hyps),
        wer_norm=_corpus_wer(s_refs, s_hyps),
        bleu=float(bleu),
        lines=len(refs),
        ref_chars=sum(len(r) for r in n_refs),
    )


def score_by_group(refs: Sequence[str], hyps: Sequence[str], groups: Sequence[str]) -> dict[str, Scores]:
    """Scores per group (e.g. per document/book) plus "__all__"."""
    buckets: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for r, h, g in zip(refs, hyps, groups, strict=True):
        buckets[g][0].append(r)
        buckets[g][1].append(h)
    out = {g: score(r, h) for g, (r, h) in sorted(buckets.items())}
    out["__all__"] = score(refs, hyps)
    return out


def char_confusions(refs: Sequence[str], hyps: Sequence[str], top: int | None = 20,
                    keep_marks: bool = False) -> list[tuple[str, str, int]]:
    """Most frequent (reference char, hypothesis char) substitutions; '' marks insertions/deletions.
    `keep_marks`: on normalized text with tashkeel (CER's view) instead of CER_norm's; `top=None`: every pair."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    view = normalize if keep_marks else strip_tashkeel
    for r, h in zip(refs, hyps, strict=True):
        r, h = view(r), view(h)
        for op in Levenshtein.editops(r, h):
            if op.tag == "replace":
                counts[(r[op.src_pos], h[op.dest_pos])] += 1
            elif op.tag == "delete":
                counts[(r[op.src_pos], "")] += 1
            else:
                counts[("", h[op.dest_pos])] += 1
    return [(a, b, n) for (a, b), n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]


def line_cer(ref: str, hyp: str) -> float:
    ref, hyp = strip_tashkeel(ref), strip_tashkeel(hyp)
    return Levenshtein.distance(ref, hyp) / max(len(ref), 1)
