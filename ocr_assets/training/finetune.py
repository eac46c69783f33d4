"""Training flows shared by the Dagster assets and the CLI: from-scratch base, LoRA fine-tune, merge.

The compact backend is the default; a DeepSeek-OCR-2 base directory is fine-tuned through its own backend with
the same settings names.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa

from ocr_assets.models.base import LoraSettings, ModelError, TrainConfig

Log = Callable[[str], None]


@dataclass
class FinetuneSettings:
    """LoRA fine-tuning defaults; `dg.Config` classes and CLI flags use the same names."""

    epochs: int | None = None  # None: chosen from the number of lines (small sets get more passes)
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the backend's default targets
    learning_rate: float | None = None  # None: 2e-3 for the compact backend, 2e-4 for DeepSeek-OCR-2
    batch_size: int = 16
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.1
    merge_dtype: str = "float16"
    checkpoint_dir: str | None = None

    def auto_epochs(self, lines: int) -> int:
        if self.epochs is not None:
            if self.epochs < 1:
                raise ModelError(f"epochs {self.epochs} must be >= 1")
            return self.epochs
        # About 1,600 line presentations, between 4 and 30 passes: 200 lines → 8 epochs, which measured best
        # (Adab: CER_norm 0.0179 after 8 epochs in 66 s vs 0.0186 after 17 in 488 s).
        return int(min(30, max(4, round(1600 / max(lines, 1)))))


@dataclass
class StepReport:
    """What a training step did, for metadata, MLflow and the CLI."""

    seconds: float
    peak_rss_mb: float
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _samples(pairs: pa.Table) -> list[tuple[bytes, str]]:
    return list(zip(pairs.column("image").to_pylist(), pairs.column("text").to_pylist()))


def is_compact(model_dir: Path) -> bool:
    from ocr_assets.models.resolve import backend_of

    return backend_of(model_dir) == "compact"


def train_from_scratch(train: pa.Table, val: pa.Table | None, out_dir: Path, epochs: int = 30, batch_size: int = 16,
                       learning_rate: float = 1e-3, device: str = "auto", model_config: dict | None = None,
                       on_epoch: Callable[[int, dict], None] | None = None, seed: int = 0) -> StepReport:
    """A fresh compact recognizer trained on `train` (CTC), saved to out_dir."""
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.models.compact.train import CompactTrainOptions, train_compact

    start = time.perf_counter()
    config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, device=device, seed=seed,
                         checkpoint_dir=str(out_dir.parent / f"{out_dir.name}.ckpt"))
    result = train_compact(None, _samples(train), _samples(val) if val is not None and val.num_rows else None, config,
                           on_epoch=on_epoch, options=CompactTrainOptions(model_config=model_config or {}, augment=True))
    CompactRecognizer(result.model, device="cpu").save(out_dir)
    return StepReport(time.perf_counter() - start, peak_rss_mb(), result.history,
                      {"steps": result.steps, "best_val_cer": result.best_val_cer, **result.codec_stats.as_dict(10)})


def lora_finetune(base_dir: Path, train: pa.Table, val: pa.Table | None, settings: FinetuneSettings, adapter_dir: Path,
                  on_epoch: Callable[[int, dict], None] | None = None) -> StepReport:
    """Wrap the base model in LoRA adapters, train them on `train`, save the adapters to adapter_dir."""
    if not is_compact(base_dir):
        return _lora_finetune_deepseek(base_dir, train, settings, adapter_dir)
    import torch

    from ocr_assets.training import lora
    from ocr_assets.models.compact.modeling import CompactOCRModel
    from ocr_assets.models.compact.recognizer import LORA_TARGETS
    from ocr_assets.models.compact.train import CompactTrainOptions, add_missing_characters, train_compact

    start = time.perf_counter()
    model = CompactOCRModel.from_pretrained(base_dir, dtype=torch.float32)
    added = add_missing_characters(model, train.column("text").to_pylist())
    lora_settings = LoraSettings(rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                                 target_modules=settings.target_modules,
                                 modules_to_save=["classifier"] if added else None)
    peft_model = lora.apply_lora(model, lora_settings, default_targets=LORA_TARGETS)
    trainable, total = lora.trainable_parameters(peft_model)
    config = TrainConfig(epochs=settings.auto_epochs(train.num_rows), batch_size=settings.batch_size,
                         learning_rate=settings.learning_rate or 2e-3, weight_decay=0.0, device=settings.device,
                         seed=settings.seed, checkpoint_dir=settings.checkpoint_dir)
    result = train_compact(peft_model, _samples(train), _samples(val) if val is not None and val.num_rows else None,
                           config, on_epoch=on_epoch, options=CompactTrainOptions(augment=True))
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    lora.save_adapters(result.model, adapter_dir)
    extra = {"epochs": config.epochs, "learning_rate": config.learning_rate, "trainable_params": trainable,
             "total_params": total, "added_characters": "".join(added), "best_val_cer": result.best_val_cer,
             **result.codec_stats.as_dict(10)}
    (adapter_dir / "training.json").write_text(json.dumps({"settings": asdict(settings), **extra, "history": result.history},
                                                          ensure_ascii=False, indent=1, default=str))
    return StepReport(time.perf_counter() - start, peak_rss_mb(), result.history, extra)


def _lora_finetune_deepseek(base_dir: Path, train: pa.Table, settings: FinetuneSettings, adapter_dir: Path) -> StepReport:
    from PIL import Image
    import io

    from ocr_assets.models.deepseek import ocr2 as ds

    start = time.perf_counter()
    recognizer = ds.DeepseekOcr2Recognizer.from_pretrained(base_dir, device=settings.device)
    samples = [(Image.open(io.BytesIO(b)).convert("L"), t) for b, t in _samples(train)]
    lora_settings = LoraSettings(rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                                 target_modules=settings.target_modules)
    config = TrainConfig(epochs=settings.auto_epochs(train.num_rows), batch_size=settings.batch_size,
                         learning_rate=settings.learning_rate or 2e-4, device=settings.device, seed=settings.seed)
    result = ds.finetune(recognizer, samples, lora=lora_settings, train=config)
    ds.save_adapters(recognizer, adapter_dir)
    (adapter_dir / "training.json").write_text(json.dumps({"settings": asdict(settings), "backend": "deepseek_ocr2"}, indent=1))
    history = [{"step": i, "loss": loss} for i, loss in enumerate(getattr(result, "losses", []) or [])]
    return StepReport(time.perf_counter() - start, peak_rss_mb(), history, {"backend": "deepseek_ocr2"})


def merge_adapters(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float16") -> Path:
    """Fold the adapters into the base weights: a plain model directory usable as `--model`."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if not is_compact(base_dir):
        from ocr_assets.models.deepseek import ocr2 as ds

        recognizer = ds.DeepseekOcr2Recognizer.from_pretrained(base_dir, device="cpu")
        ds.load_adapters(recognizer, adapter_dir)
        ds.merge_and_save(recognizer, out_dir, dtype="bfloat16" if dtype == "bfloat16" else "float16")
        return out_dir
    import torch

    from ocr_assets.training import lora
    from ocr_assets.models.compact.modeling import CompactOCRModel

    base = CompactOCRModel.from_pretrained(base_dir, dtype=torch.float32)
    lora.merge_and_save(lora.load_adapters(base, adapter_dir), out_dir, dtype=dtype)
    return out_dir


def split_for_validation(pairs: pa.Table, fraction: float, seed: int) -> tuple[pa.Table, pa.Table | None]:
    """Hold out every n-th line (deterministic, spread across the book) for validation."""
    import random

    n = pairs.num_rows
    if n < 20 or fraction <= 0:
        return pairs, None
    rng = random.Random(seed)
    val_idx = set(rng.sample(range(n), max(1, round(n * fraction))))
    keep = [i for i in range(n) if i not in val_idx]
    return pairs.take(keep), pairs.take(sorted(val_idx))


def finetune_gt_dir(gt_dir: Path, out_dir: Path, base: str | None = None, settings: FinetuneSettings | None = None,
                    log: Log = print) -> dict:
    """`ocr-assets finetune`: validate the folder, LoRA fine-tune the base on it, merge into out_dir."""
    from ocr_assets.data.gt_folder import iter_gt_folder
    from ocr_assets.data.validation import validate_lines
    from ocr_assets.models.resolve import resolve_model_dir

    settings = settings or FinetuneSettings()
    out_dir = out_dir.resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise ModelError(f"--out {str(out_dir)!r} exists and is not a model directory; give a new or empty folder")
    if out_dir == Path(gt_dir).resolve() or out_dir in Path(gt_dir).resolve().parents:
        raise ModelError(f"--out {str(out_dir)!r} would overwrite the training folder; give another folder")
    start = time.perf_counter()
    pairs, quarantine = validate_lines(iter_gt_folder(gt_dir))
    if pairs.num_rows == 0:
        raise ModelError(f"no valid line pairs in {str(gt_dir)!r} ({quarantine.num_rows} quarantined); run `ocr-assets validate` to see why")
    log(f"{pairs.num_rows} line pairs ({quarantine.num_rows} quarantined)")
    base_dir = resolve_model_dir(base)
    train, val = split_for_validation(pairs, settings.val_fraction, settings.seed)
    adapter_dir = out_dir.parent / f"{out_dir.name}.adapters"

    def on_epoch(epoch: int, metrics: dict) -> None:
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        log(f"epoch {epoch}: {shown}")

    report = lora_finetune(base_dir, train, val, settings, adapter_dir, on_epoch)
    merge_adapters(base_dir, adapter_dir, out_dir, settings.merge_dtype)
    return {
        "model": str(out_dir),
        "adapters": str(adapter_dir),
        "lines": pairs.num_rows,
        "quarantined": quarantine.num_rows,
        "epochs": report.extra.get("epochs"),
        "best_val_cer": report.extra.get("best_val_cer"),
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
