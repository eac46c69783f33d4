"""The registered MLflow pyfunc: base64 line or page images in, text with confidences out (serving/contract.py)."""

from __future__ import annotations

import base64
import warnings

import mlflow

from ocr_assets.serving.contract import (
    MAX_IMAGE_BASE64_CHARS,
    MAX_REQUEST_BASE64_CHARS,
    MAX_REQUEST_PIXELS,
    RequestRefused,
    answer_row,
    kind_of,
    looks_like_page,
)

# The pyfunc validates its input itself (column `image`, size cap), so MLflow's type-hint nudge is noise.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
# An input example would make MLflow load the model and run it at logging time; the signature documents the API.
warnings.filterwarnings("ignore", message=".*An input example was not provided when logging the model.*")


class OcrPyfuncModel(mlflow.pyfunc.PythonModel):
    """Serving wrapper: rows of base64 images (`image`) with an optional `kind` (line | page | auto) in;
    `text`, `confidence`, `error` and `lines` (a JSON list of {box: [x0, y0, x1, y1], text, confidence}) out.

    A line row reads the image as one line (`lines` holds one entry spanning the image, or none on error). A
    page row is segmented into lines (`ocr_assets.pages.ocr.ocr_page`): `text` is the lines joined by newlines,
    `confidence` their mean weighted by characters (0 for a page without text). A bad row (not base64, over
    MAX_IMAGE_BASE64_CHARS, not an image, unknown kind) gets its `error` and never sinks the others; only a
    request over MAX_REQUEST_BASE64_CHARS in all, or one without an `image` column, is refused as a whole.
    """

    def load_context(self, context):
        from ocr_assets.models.resolve import load_recognizer
        from ocr_assets.settings import trust_remote_code_from_env

        # The opt-in for a model that runs its own code comes from `ocr-assets serve --trust-remote-code`.
        self.recognizer = load_recognizer(context.artifacts["model_dir"], device="auto",
                                          trust_remote_code=trust_remote_code_from_env())

    def predict(self, context, model_input, params=None):
        import pandas as pd

        if "image" not in getattr(model_input, "columns", []):
            raise RequestRefused("input needs a column 'image' holding base64-encoded images (and optionally 'kind')")
        values = model_input["image"].tolist()
        kinds = model_input["kind"].tolist() if "kind" in model_input.columns else [None] * len(values)
        total = sum(len(v) for v in values if isinstance(v, str))
        if total > MAX_REQUEST_BASE64_CHARS:
            raise RequestRefused(f"request too large: {total} base64 characters in all, limit {MAX_REQUEST_BASE64_CHARS}; "
                             "send fewer images per request")
        rows: list[dict | None] = [None] * len(values)
        lines, pages = [], []  # (row index, decoded image)
        pixels = 0  # decoded pixels held for this request: a few bytes of blank PNG can decode to 40 MP
        for i, (value, kind) in enumerate(zip(values, kinds)):
            try:
                image, kind = self._decode(value, kind)
                pixels += image.width * image.height
                if pixels > MAX_REQUEST_PIXELS:
                    raise ValueError(f"request over its pixel budget ({MAX_REQUEST_PIXELS / 1e6:.0f} MP decoded in all); "
                                     "send this image in another request")
            except Exception as exc:  # one bad row must not sink the batch
                rows[i] = answer_row("", 0.0, str(exc), [])
                continue
            (pages if kind == "page" else lines).append((i, image))
        if lines:
            self._read_lines(lines, rows)
        for i, image in pages:
            rows[i] = self._read_page(image, f"row-{i}")
        return pd.DataFrame(rows, columns=["text", "confidence", "error", "lines"])

    @staticmethod
    def _decode(value, kind):
        from ocr_assets.data.images import decode_line_image

        kind = kind_of(kind)
        if not isinstance(value, str):
            raise ValueError(f"image must be a base64 string, got {type(value).__name__}")
        if len(value) > MAX_IMAGE_BASE64_CHARS:
            raise ValueError(f"image too large: {len(value)} base64 characters, limit {MAX_IMAGE_BASE64_CHARS}")
        try:
            # The same guarded decoder as the CLI: pixel cap before decoding, CMYK/16-bit/alpha handled.
            image = decode_line_image(base64.b64decode(value, validate=True))
        except Exception as exc:
            raise ValueError(f"unreadable image: {exc}") from None
        if kind == "auto":
            kind = "page" if looks_like_page(image.width, image.height) else "line"
        return image, kind

    def _read_lines(self, lines, rows) -> None:
        try:
            reads = self.recognizer.recognize([image for _, image in lines])
        except Exception as exc:  # a failing batch still answers every row
            for i, _ in lines:
                rows[i] = answer_row("", 0.0, f"recognition failed: {exc}", [])
            return
        for (i, image), r in zip(lines, reads):
            entry = [] if r.error else [{"box": [0, 0, image.width, image.height], "text": r.text,
                                          "confidence": float(r.confidence)}]
            rows[i] = answer_row(r.text, float(r.confidence), r.error, entry)

    def _read_page(self, image, name: str) -> dict:
        from ocr_assets.pages.ocr import ocr_page

        try:
            result = ocr_page(self.recognizer, image, name)
        except Exception as exc:
            return answer_row("", 0.0, f"page recognition failed: {exc}", [])
        entries = [{"box": [ln.box.x0, ln.box.y0, ln.box.x1, ln.box.y1], "text": ln.text,
                    "confidence": float(ln.confidence)} for ln in result.lines]
        chars = sum(len(ln.text) for ln in result.lines)
        if chars:
            confidence = sum(ln.confidence * len(ln.text) for ln in result.lines) / chars
        else:  # lines found but nothing read (or no lines at all)
            confidence = sum(ln.confidence for ln in result.lines) / len(result.lines) if result.lines else 0.0
        return answer_row("\n".join(ln.text for ln in result.lines), float(confidence), None, entries)
