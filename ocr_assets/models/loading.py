"""Resolve a model spec (directory, `models:/NAME@ALIAS`, or nothing) to a Recognizer of the right backend."""

from __future__ import annotations

import json
from pathlib import Path

from ocr_assets.models.base import ModelNotFoundError, Recognizer

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "shipped" / "compact-default"

# config.json model_type -> backend loader
_BACKENDS = {
    "compact_ctc_ocr": "compact",
    "deepseek_ocr2": "deepseek_ocr2",
    "deepseek_vl_v2": "deepseek_ocr1",
    "deepseek_ocr": "deepseek_ocr1",
}


def shipped_model_dir() -> Path:
    if not (SHIPPED_DIR / "config.json").is_file():
        raise ModelNotFoundError(
            f"no shipped default model at {SHIPPED_DIR.name}/ inside the package; pass --model DIR or models:/NAME@ALIAS"
        )
    return SHIPPED_DIR


def resolve_model_dir(spec: str | Path | None) -> Path:
    """A local model directory for `spec`: a directory, a registry URI, or None for the shipped default."""
    if spec is None or str(spec) in ("", "default"):
        return shipped_model_dir()
    text = str(spec)
    if text.startswith("models:/"):
        from ocr_assets.registry import download_registered_model

        return download_registered_model(text)
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(f"model directory {text!r} does not exist; give a model directory, models:/NAME@ALIAS or nothing")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{text!r} holds no config.json, so it is not a saved model directory")
    return path


def backend_of(model_dir: Path) -> str:
    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type", "")
    if model_type not in _BACKENDS:
        raise ModelNotFoundError(f"{model_dir.name}/config.json has model_type {model_type!r}; known: {sorted(_BACKENDS)}")
    return _BACKENDS[model_type]


def load_recognizer(spec: str | Path | None = None, device: str = "auto") -> Recognizer:
    model_dir = resolve_model_dir(spec)
    backend = backend_of(model_dir)
    if backend == "compact":
        from ocr_assets.models.compact.recognizer import CompactRecognizer

        return CompactRecognizer.load(model_dir, device=device)
    if backend == "deepseek_ocr2":
        from ocr_assets.models.deepseek_ocr2 import DeepseekOcr2Recognizer

        return DeepseekOcr2Recognizer.from_pretrained(model_dir, device=device)
    from ocr_assets.models.deepseek_ocr1_unsloth import UnslothDeepseekOcrRecognizer

    return UnslothDeepseekOcrRecognizer.from_pretrained(str(model_dir), trust_remote_code=True)
