"""MLflow model registry: the OCR model as a pyfunc, aliases `challenger` / `champion`, promotion gate."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import warnings

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ocr_assets.models.base import ModelNotFoundError
from ocr_assets.settings import mlflow_uri

MODEL_NAME = "ocr-assets-recognizer"
CHAMPION, CHALLENGER = "champion", "challenger"
MAX_IMAGE_BASE64_CHARS = 8_000_000  # ~6 MB of image per row: a larger row gets an error in its row
# The whole request: MLflow's scoring server (FastAPI on uvicorn) has no body-size setting and buffers the body
# before the model sees it, so this cap bounds the decoding and OCR work of one request, not the body's memory.
# Over it the request is refused as a whole (HTTP 400); see ocr_assets/serving.py.
MAX_REQUEST_BASE64_CHARS = 32_000_000
MAX_REQUEST_PIXELS = 120_000_000  # decoded 8-bit gray: ~120 MB held per request at most
KINDS = ("line", "page", "auto")
# `kind` = auto: an image is a page when it is taller than the tallest line crops the shipped model trained on
# (30-160 px; a page of body text is several such lines) and not a wide strip (a line image is > 4x as wide as
# high): height > PAGE_MIN_HEIGHT and height > width / 4. Everything else is read as one line; send
# kind='page' or 'line' to decide yourself.
PAGE_MIN_HEIGHT = 160


# The pyfunc validates its input itself (column `image`, size cap), so MLflow's type-hint nudge is noise.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
# An input example would make MLflow load the model and run it at logging time; the signature documents the API.
warnings.filterwarnings("ignore", message=".*An input example was not provided when logging the model.*")


def looks_like_page(width: int, height: int) -> bool:
    """The `kind=auto` rule: a page when height > PAGE_MIN_HEIGHT px and height > width / 4."""
    return height > PAGE_MIN_HEIGHT and 4 * height > width


def _kind_of(value) -> str:
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
        from ocr_assets.models.loading import load_recognizer

        self.recognizer = load_recognizer(context.artifacts["model_dir"], device="auto")

    def predict(self, context, model_input, params=None):
        import pandas as pd

        if "image" not in getattr(model_input, "columns", []):
            raise ValueError("input needs a column 'image' holding base64-encoded images (and optionally 'kind')")
        values = model_input["image"].tolist()
        kinds = model_input["kind"].tolist() if "kind" in model_input.columns else [None] * len(values)
        total = sum(len(v) for v in values if isinstance(v, str))
        if total > MAX_REQUEST_BASE64_CHARS:
            raise ValueError(f"request too large: {total} base64 characters in all, limit {MAX_REQUEST_BASE64_CHARS}; "
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
                rows[i] = _row("", 0.0, str(exc), [])
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

        kind = _kind_of(kind)
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
                rows[i] = _row("", 0.0, f"recognition failed: {exc}", [])
            return
        for (i, image), r in zip(lines, reads):
            entry = [] if r.error else [{"box": [0, 0, image.width, image.height], "text": r.text,
                                          "confidence": float(r.confidence)}]
            rows[i] = _row(r.text, float(r.confidence), r.error, entry)

    def _read_page(self, image, name: str) -> dict:
        from ocr_assets.pages.ocr import ocr_page

        try:
            result = ocr_page(self.recognizer, image, name)
        except Exception as exc:
            return _row("", 0.0, f"page recognition failed: {exc}", [])
        entries = [{"box": [ln.box.x0, ln.box.y0, ln.box.x1, ln.box.y1], "text": ln.text,
                    "confidence": float(ln.confidence)} for ln in result.lines]
        chars = sum(len(ln.text) for ln in result.lines)
        if chars:
            confidence = sum(ln.confidence * len(ln.text) for ln in result.lines) / chars
        else:  # lines found but nothing read (or no lines at all)
            confidence = sum(ln.confidence for ln in result.lines) / len(result.lines) if result.lines else 0.0
        return _row("\n".join(ln.text for ln in result.lines), float(confidence), None, entries)


def _row(text: str, confidence: float, error: str | None, lines: list[dict]) -> dict:
    return {"text": text, "confidence": confidence, "error": error, "lines": json.dumps(lines, ensure_ascii=False)}


def client() -> MlflowClient:
    mlflow.set_tracking_uri(mlflow_uri())
    mlflow.set_registry_uri(mlflow_uri())
    return MlflowClient()


def log_and_register(model_dir: Path, metrics: dict[str, float], name: str = MODEL_NAME) -> str:
    """Log `model_dir` as a pyfunc in the active MLflow run, register it, tag it, alias it `challenger`."""
    import ocr_assets

    # Register in the store the run is tracked in: a registry URI left over from another client in this process
    # (mlflow keeps it globally) would otherwise receive the model version.
    mlflow.set_registry_uri(mlflow.get_tracking_uri())
    info = mlflow.pyfunc.log_model(
        name="ocr_model",
        python_model=OcrPyfuncModel(),
        signature=serving_signature(),
        artifacts={"model_dir": str(model_dir)},
        registered_model_name=name,
        pip_requirements=_pinned_requirements(),
        code_paths=None,
        metadata={"ocr_assets_version": getattr(ocr_assets, "__version__", "0.1.0")},
    )
    c = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in metrics.items():
        c.set_model_version_tag(name, version, key, f"{value:.6f}")
    c.set_registered_model_alias(name, CHALLENGER, version)
    return version


def _pinned_requirements() -> list[str]:
    from importlib.metadata import version

    pins = ["torch", "transformers", "peft", "Pillow", "safetensors", "pandas", "numpy", "mlflow"]
    return [f"{p}=={version(p)}" for p in pins]


def alias_version(alias: str, name: str = MODEL_NAME) -> str | None:
    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None


def promote_if_better(challenger_version: str, challenger_score: float, champion_score: float | None,
                      name: str = MODEL_NAME, min_gain: float = 0.0) -> PromotionDecision:
    """Make the challenger champion when it beats the champion's score (lower is better) on the same split."""
    c = client()
    champion = alias_version(CHAMPION, name)
    if champion is None or champion_score is None:
        c.set_registered_model_alias(name, CHAMPION, challenger_version)
        return PromotionDecision(True, "no champion yet: the first evaluated model becomes champion", challenger_version, champion)
    if challenger_score < champion_score - min_gain:
        c.set_registered_model_alias(name, CHAMPION, challenger_version)
        return PromotionDecision(True, f"challenger {challenger_score:.4f} < champion {champion_score:.4f}", challenger_version, champion)
    return PromotionDecision(False, f"challenger {challenger_score:.4f} does not beat champion {champion_score:.4f}", challenger_version, champion)


def download_registered_model(uri: str) -> Path:
    """Local model directory behind `models:/NAME@ALIAS` (or `models:/NAME/VERSION`)."""
    client()
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(f"registry model {uri!r} not found in {mlflow_uri()}: {first}") from None
    candidates = [p.parent for p in local.rglob("config.json")]
    if not candidates:
        raise ModelNotFoundError(f"registry model {uri!r} holds no model directory (config.json)")
    return sorted(candidates, key=lambda p: len(p.parts))[0]
