"""One recognizer interface for every backend (compact CTC, DeepSeek-OCR-2, DeepSeek-OCR v1 via Unsloth)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from ocr_assets.errors import ModelError, ModelNotFoundError  # noqa: F401 (re-exported for backends)


@dataclass
class Recognition:
    """What a recognizer says about one line image."""

    text: str
    confidence: float  # 0..1
    char_confidences: list[float] = field(default_factory=list)
    error: str | None = None
    # Where each character sits across the line image, 0 (left edge) .. 1 (right edge); empty when the backend
    # cannot tell (the DeepSeek backends generate text without an alignment).
    char_positions: list[float] = field(default_factory=list)


@dataclass
class TrainConfig:
    """The backends' internal training-loop parameters (what one loop run does), built from the user-facing
    settings by each backend. Not the user-facing defaults: those live in `ocr_assets.settings`
    (FinetuneSettings, ScratchSettings, PretrainSettings); these values only serve the loops' own callers
    (tests, `python -m ocr_assets.models.compact.train`).
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    checkpoint_dir: str | None = None
    checkpoint_every: int = 200  # steps
    num_workers: int = 0
    patience: int = 0  # stop after this many epochs without a lower validation CER (0: every epoch; compact loop)

    @classmethod
    def for_finetune(cls, settings, lines: int, default_learning_rate: float, **changes) -> "TrainConfig":
        """The loop parameters of a LoRA fine-tune (settings: ocr_assets.settings.FinetuneSettings) on `lines`
        lines; the learning rate is the settings' own, else the backend's default."""
        values = dict(
            epochs=settings.auto_epochs(lines),
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate or default_learning_rate,
            device=settings.device,
            seed=settings.seed,
            patience=settings.auto_patience(),
        )
        return cls(**{**values, **changes})


class Recognizer(abc.ABC):
    """Images in, text + confidence out; trainable, LoRA-adaptable, saveable."""

    backend: str = "abstract"

    @abc.abstractmethod
    def recognize(self, images: Sequence[Image.Image], batch_size: int = 32) -> list[Recognition]:
        """Read line images; never raises for one bad image (gives a Recognition with `error`)."""

    @abc.abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write a self-describing model directory (safetensors + config) usable by `load_recognizer`."""

    @property
    @abc.abstractmethod
    def lora_target_modules(self) -> list[str]:
        """Default peft target module names for this backend."""

    def to(self, device: str) -> "Recognizer":
        return self

    def parameters_count(self) -> int:
        return 0


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ModelError(f"device {device!r} is not one of auto, cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for but torch sees no CUDA device; use --device cpu")
    return device


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batched(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
