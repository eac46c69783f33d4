"""One backend protocol (load, recognize, fine-tune, merge, save), registered by the `model_type` of config.json.

A backend is found from a model directory alone, so training, evaluation, serving and the CLI never branch on
which model they hold. To add one: implement `Backend`, then add its model types to `BACKENDS`
(docs/ARCHITECTURE.md, "Adding a backend").
"""

from __future__ import annotations

import abc
import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ocr_assets.errors import ModelError, ModelNotFoundError, RemoteCodeNotAllowedError
from ocr_assets.models.base import Recognizer

# config.json model_type -> "module:Class" (imported only when a model of that type is used)
BACKENDS: dict[str, str] = {
    "compact_ctc_ocr": "ocr_assets.models.compact.backend:CompactBackend",
    "deepseek_ocr2": "ocr_assets.models.deepseek.backend:Ocr2Backend",
    "deepseek_vl_v2": "ocr_assets.models.deepseek.backend:Ocr1UnslothBackend",
    "deepseek_ocr": "ocr_assets.models.deepseek.backend:Ocr1UnslothBackend",
}

Samples = Sequence[tuple[bytes, str]]  # (encoded line image, text)
OnEpoch = Callable[[int, dict], None]


@dataclass
class TrainReport:
    """What a training step did, for metadata, MLflow and the CLI."""

    seconds: float
    peak_rss_mb: float
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    # (target, reading) of the held-out lines by the trained weights, where the backend has them (compact)
    val_readings: list[tuple[str, str]] | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "val_readings"}


class Backend(abc.ABC):
    """How one family of models is loaded, fine-tuned with LoRA adapters and merged."""

    name: str = "abstract"
    remote_code: bool = False  # loading runs Python code shipped with the checkpoint
    default_learning_rate: float = 2e-4

    @abc.abstractmethod
    def load(self, model_dir: Path, device: str = "auto") -> Recognizer:
        """A recognizer over the saved model directory."""

    @abc.abstractmethod
    def finetune(self, base_dir: Path, train: Samples, val: Samples | None, settings, adapter_dir: Path,
                 on_epoch: OnEpoch | None = None) -> TrainReport:
        """Train LoRA adapters on `train` (settings: ocr_assets.settings.FinetuneSettings); save them to adapter_dir."""

    def resume_point(self, checkpoint_dir: Path) -> dict | None:
        """{"epoch", "step", "path"} of the checkpoint a fine-tune would resume from; None (also: no resume support)."""
        return None

    @abc.abstractmethod
    def merge(self, base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float16") -> Path:
        """Fold the adapters into the base weights: a plain model directory usable as `--model`."""


def model_type_of(model_dir: Path) -> str:
    config = Path(model_dir) / "config.json"
    try:
        return str(json.loads(config.read_text(encoding="utf-8")).get("model_type", ""))
    except FileNotFoundError:
        raise ModelNotFoundError(f"{str(model_dir)!r} holds no config.json, so it is not a saved model directory") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config} is not valid JSON ({exc}); the model directory is damaged") from None


def backend_for(model_dir: Path) -> Backend:
    """The backend that reads `model_dir`, chosen by the model_type in its config.json."""
    model_type = model_type_of(model_dir)
    target = BACKENDS.get(model_type)
    if target is None:
        raise ModelError(f"{Path(model_dir).name}/config.json has model_type {model_type!r}; known: {sorted(BACKENDS)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()


def check_remote_code(backend: Backend, model_dir: Path, trust_remote_code: bool) -> None:
    """Refuse a backend that runs the checkpoint's own code unless the caller opted in explicitly."""
    if backend.remote_code and trust_remote_code is not True:
        raise RemoteCodeNotAllowedError(
            f"{str(model_dir)!r} is a {backend.name} model whose loading runs Python code shipped with it; "
            "pass --trust-remote-code (or trust_remote_code: true in the config) only if you trust its source"
        )
