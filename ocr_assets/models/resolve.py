"""The one model resolver: a spec (directory, `models:/NAME@ALIAS`, or nothing) -> a local model directory.

The same preference everywhere (CLI, assets, serving): an explicit spec; else the registry's champion when a
registry exists and has one; else the model shipped in the package. Looking for a champion never creates a
registry store (no stray `mlflow.db`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocr_assets.errors import ModelNotFoundError
from ocr_assets.models.base import Recognizer

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "shipped" / "compact-default"


@dataclass(frozen=True)
class ResolvedModel:
    """A local model directory and where it came from (shown in logs and metadata)."""

    path: Path
    source: str


def shipped_model_dir() -> Path:
    if not (SHIPPED_DIR / "config.json").is_file():
        raise ModelNotFoundError(
            f"no shipped default model at {SHIPPED_DIR.name}/ inside the package; pass --model DIR or models:/NAME@ALIAS"
        )
    return SHIPPED_DIR


def resolve_model(spec: str | Path | None = None, registry_uri: str | None = None) -> ResolvedModel:
    """Explicit spec, else the champion of the registry at `registry_uri` (when given), else the shipped model.

    `registry_uri` None means "no registry to ask" (callers pass one only when a store exists:
    `Storage.has_local_mlflow_store()`).
    """
    text = "" if spec is None else str(spec).strip()
    if text and text != "default":
        if text.startswith("models:/"):
            if not registry_uri:
                raise ModelNotFoundError(f"{text!r} names a registry model but there is no MLflow store here; "
                                         "set MLFLOW_TRACKING_URI or run the training job first")
            from ocr_assets.registry import Registry

            return ResolvedModel(Registry(registry_uri).download(text), text)
        path = Path(text).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"model directory {text!r} does not exist; give a model directory, "
                                     "models:/NAME@ALIAS or nothing")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{text!r} holds no config.json, so it is not a saved model directory")
        return ResolvedModel(path, str(path))
    if registry_uri and text != "default":
        from ocr_assets.registry import CHAMPION, Registry, model_uri

        registry = Registry(registry_uri)
        version = registry.alias_version(CHAMPION)
        if version is not None:
            uri = model_uri(CHAMPION)
            return ResolvedModel(registry.download(uri), f"{uri} (version {version})")
    return ResolvedModel(shipped_model_dir(), "shipped default")


def resolve_model_dir(spec: str | Path | None, registry_uri: str | None = None) -> Path:
    return resolve_model(spec, registry_uri).path


def load_recognizer(spec: str | Path | None = None, device: str = "auto", *, registry_uri: str | None = None,
                    trust_remote_code: bool = False, keep_ligatures: bool = False,
                    runtime: str | None = None) -> Recognizer:
    """A recognizer of the right backend; a backend that runs shipped code needs trust_remote_code=True.

    A model fine-tuned on a book writes that book's expansions for honorific ligatures (conventions.json);
    keep_ligatures=True keeps the Unicode ligatures (ﷺ) instead. `runtime` (compact models: auto, onnx, onnx-int8,
    onnx-fp32, torch) picks the reader; None keeps the default (ocr_assets.models.compact.runtime)."""
    from ocr_assets.models.backends import backend_for, check_remote_code
    from ocr_assets.models.conventions import Conventions, with_conventions

    model_dir = resolve_model_dir(spec, registry_uri)
    backend = backend_for(model_dir)
    check_remote_code(backend, model_dir, trust_remote_code)
    if runtime is not None and backend.name != "compact":
        from ocr_assets.errors import ConfigError

        raise ConfigError(f"runtime {runtime!r} applies to compact models only; {model_dir} is a {backend.name} model")
    loaded = backend.load(model_dir, device=device, **({"runtime": runtime} if runtime else {}))
    return with_conventions(loaded, Conventions.load(model_dir, keep_ligatures))
