"""Evaluate a recognizer on a table of line pairs: scores overall and per document, predictions kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from ocr_assets import metrics
from ocr_assets.models.base import Recognizer
from ocr_assets.reading import images_from_png_bytes


@dataclass
class EvalResult:
    overall: metrics.Scores
    per_document: dict[str, metrics.Scores]
    predictions: pa.Table  # line_id, document, text, prediction, confidence, line_cer, image
    seconds: float
    lines_per_s: float
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "cer": round(self.overall.cer, 5),
            "cer_norm": round(self.overall.cer_norm, 5),
            "wer": round(self.overall.wer, 5),
            "wer_norm": round(self.overall.wer_norm, 5),
            "bleu": round(self.overall.bleu, 3),
            "lines": self.overall.lines,
            "lines_per_s": round(self.lines_per_s, 2),
            # Lines the recognizer could not read count as empty predictions; say how many there were.
            "errors": sum(1 for e in self.predictions.column("error").to_pylist() if e),
        }


def evaluate_pairs(recognizer: Recognizer, pairs: pa.Table, batch_size: int = 64) -> EvalResult:
    """Recognize every pair's image and score against its text (docs/ARCHITECTURE.md, "Measurement")."""
    refs = pairs.column("text").to_pylist()
    docs = pairs.column("document").to_pylist()
    blobs = pairs.column("image").to_pylist()
    hyps: list[str] = []
    confs: list[float] = []
    errors: list[str | None] = []
    start = time.perf_counter()
    for offset in range(0, len(blobs), 512):
        images = images_from_png_bytes(blobs[offset : offset + 512])
        for r in recognizer.recognize(images, batch_size=batch_size):
            hyps.append(r.text)
            confs.append(float(r.confidence))
            errors.append(r.error)
    seconds = time.perf_counter() - start
    by_doc = metrics.score_by_group(refs, hyps, docs)
    overall = by_doc.pop("__all__")
    predictions = pa.table(
        {
            "line_id": pairs.column("line_id"),
            "document": pairs.column("document"),
            "text": refs,
            "prediction": hyps,
            "confidence": confs,
            "line_cer": [metrics.line_cer(r, h) for r, h in zip(refs, hyps)],
            "error": errors,
            "image": pairs.column("image"),
        }
    )
    return EvalResult(overall, by_doc, predictions, seconds, len(refs) / seconds if seconds > 0 else 0.0)
