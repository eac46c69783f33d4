"""The serving request contract: what a row may hold, the size caps, and the shape of an answer row.

POST /invocations with {"dataframe_records": [{"image": "<base64>", "kind": "auto|line|page"}]}; each row comes
back with text, confidence, error and lines (JSON). Caps are per row, per request and in decoded pixels.
"""

from __future__ import annotations

import json

from ocr_assets.errors import UsageError

MAX_IMAGE_BASE64_CHARS = 8_000_000  # ~6 MB of image per row: a larger row gets an error in its row
# The whole request: MLflow's scoring server (FastAPI on uvicorn) has no body-size setting and buffers the body
# before the model sees it, so this cap bounds the decoding and OCR work of one request, not the body's memory.
# Over it the request is refused as a whole (HTTP 400 with a one-line message); see ocr_assets/serving/server.py.
MAX_REQUEST_BASE64_CHARS = 32_000_000
MAX_REQUEST_PIXELS = 120_000_000  # decoded 8-bit gray: ~120 MB held per request at most
KINDS = ("line", "page", "auto")
# `kind` = auto: an image is a page when it is taller than the tallest line crops the shipped model trained on
# (30-160 px; a page of body text is several such lines) and not a wide strip (a line image is > 4x as wide as
# high): height > PAGE_MIN_HEIGHT and height > width / 4. Everything else is read as one line; send
# kind='page' or 'line' to decide yourself.
PAGE_MIN_HEIGHT = 160


class RequestRefused(UsageError):
    """A request refused as a whole (over MAX_REQUEST_BASE64_CHARS, no `image` column): HTTP 400, and its
    message is what the client reads (ocr_assets.serving.app)."""


def looks_like_page(width: int, height: int) -> bool:
    """The `kind=auto` rule: a page when height > PAGE_MIN_HEIGHT px and height > width / 4."""
    return height > PAGE_MIN_HEIGHT and 4 * height > width


def kind_of(value) -> str:
    """The requested kind of one row; a missing value (None, NaN, '') means auto."""
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return "auto"
    kind = str(value).strip().lower()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {value!r}")
    return kind


def serving_signature():
    """Input `image` (base64, required) and `kind` (optional); output text, confidence, error, lines (JSON)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "kind", required=False)])
    outputs = Schema([ColSpec("string", "text"), ColSpec("double", "confidence"),
                      ColSpec("string", "error", required=False), ColSpec("string", "lines")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def answer_row(text: str, confidence: float, error: str | None, lines: list[dict]) -> dict:
    return {"text": text, "confidence": confidence, "error": error, "lines": json.dumps(lines, ensure_ascii=False)}
