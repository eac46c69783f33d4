"""MLflow model registry: the OCR model as a pyfunc, aliases `challenger` / `champion`, promotion gate."""

from __future__ import annotations

import base64
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
MAX_IMAGE_BASE64_CHARS = 8_000_000  # ~6 MB of image per row: refuse larger requests


# The pyfunc validates its input itself (column `image`, size cap), so MLflow's type-hint nudge is noise.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")


class OcrPyfuncModel(mlflow.pyfunc.PythonModel):
    """Serving wrapper: a column `image` of base64 line images in, `text` and `confidence` out."""

    def load_context(self, context):
        from ocr_assets.models.loading import load_recognizer

        self.recognizer = load_recognizer(context.artifacts["model_dir"], device="auto")

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from ocr_assets.data.images import decode_line_image

        if "image" not in getattr(model_input, "columns", []):
            raise ValueError("input needs a column 'image' holding base64-encoded line images")
        images, errors = [], []
        for value in model_input["image"].tolist():
            try:
                if not isinstance(value, str) or len(value) > MAX_IMAGE_BASE64_CHARS:
                    raise ValueError(f"image must be a base64 string of at most {MAX_IMAGE_BASE64_CHARS} characters")
                # The same guarded decoder as the CLI: pixel cap before decoding, CMYK/16-bit/alpha handled.
                images.append(decode_line_image(base64.b64decode(value, validate=True)))
                errors.append(None)
            except Exception as exc:  # one bad row must not sink the batch
                images.append(None)
                errors.append(f"unreadable image: {exc}")
        good = [im for im in images if im is not None]
        results = iter(self.recognizer.recognize(good) if good else [])
        rows = []
        for im, err in zip(images, errors):
            if im is None:
                rows.append({"text": "", "confidence": 0.0, "error": err})
            else:
                r = next(results)
                rows.append({"text": r.text, "confidence": float(r.confidence), "error": r.error})
        return pd.DataFrame(rows)


def client() -> MlflowClient:
    mlflow.set_tracking_uri(mlflow_uri())
    mlflow.set_registry_uri(mlflow_uri())
    return MlflowClient()


def log_and_register(model_dir: Path, metrics: dict[str, float], name: str = MODEL_NAME) -> str:
    """Log `model_dir` as a pyfunc in the active MLflow run, register it, tag it, alias it `challenger`."""
    import ocr_assets

    info = mlflow.pyfunc.log_model(
        name="ocr_model",
        python_model=OcrPyfuncModel(),
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
