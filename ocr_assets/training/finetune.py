"""Training flows shared by the Dagster assets and the CLI: from-scratch base, LoRA fine-tune, merge.

Nothing here branches on the kind of model: `backend_for(model_dir)` picks the backend from the model's
config.json (docs/ARCHITECTURE.md, "Backends"). Settings come from `ocr_assets.settings`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pyarrow as pa

from ocr_assets.errors import SourceError, UsageError
from ocr_assets.models.backends import OnEpoch, TrainReport, backend_for, check_remote_code
from ocr_assets.models.base import TrainConfig, peak_rss_mb
from ocr_assets.models.conventions import FILE as FILE_CONVENTIONS, rejudge
from ocr_assets.settings import FinetuneSettings, ScratchSettings, replace

Log = Callable[[str], None]
TRAINING_FILE = "training.json"


def samples_of(pairs: pa.Table | None) -> list[tuple[bytes, str]]:
    """(encoded image, text) pairs of a table with `image` and `text` columns (None or empty: no pairs)."""
    if pairs is None or pairs.num_rows == 0:
        return []
    return list(zip(pairs.column("image").to_pylist(), pairs.column("text").to_pylist()))


def train_from_scratch(train: pa.Table, val: pa.Table | None, out_dir: Path, settings: ScratchSettings,
                       device: str = "auto", on_epoch: OnEpoch | None = None,
                       model_config: dict | None = None) -> TrainReport:
    """A fresh compact recognizer trained on `train` (CTC), saved to out_dir; resumes from out_dir.ckpt."""
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.models.compact.train import CompactTrainOptions, train_compact

    start = time.perf_counter()
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                         device=device, seed=settings.seed, checkpoint_dir=str(out_dir.parent / f"{out_dir.name}.ckpt"))
    result = train_compact(None, samples_of(train), samples_of(val) or None, config, on_epoch=on_epoch,
                           options=CompactTrainOptions(model_config=model_config or {}, augment=True))
    CompactRecognizer(result.model, device="cpu").save(out_dir)
    return TrainReport(time.perf_counter() - start, peak_rss_mb(), result.history,
                       {"steps": result.steps, "best_val_cer": result.best_val_cer, **result.codec_stats.as_dict(10)})


def lora_finetune(base_dir: Path, train: pa.Table, val: pa.Table | None, settings: FinetuneSettings, adapter_dir: Path,
                  on_epoch: OnEpoch | None = None, *, trust_remote_code: bool = False) -> TrainReport:
    """Wrap the base model in LoRA adapters, train them on `train`, save the adapters (and training.json) to
    adapter_dir. A backend that runs the checkpoint's own code needs trust_remote_code=True."""
    base_dir = Path(base_dir)
    adapter_dir = Path(adapter_dir)
    backend = backend_for(base_dir)
    check_remote_code(backend, base_dir, trust_remote_code)
    train_samples = samples_of(train)
    if not train_samples:
        raise SourceError("no training lines: the train split is empty; give a folder or split with line pairs")
    val_samples = samples_of(val)
    conventions = None
    if settings.conventions:
        conventions = learn_book_conventions(backend, base_dir, train_samples)
        train_samples = [(image, conventions.fold(text)) for image, text in train_samples]
        val_samples = [(image, conventions.fold(text)) for image, text in val_samples]
    report = backend.finetune(base_dir, train_samples, val_samples or None, settings, adapter_dir, on_epoch)
    if conventions and report.val_readings:  # the spacing and word rules judged again with the fine-tuned model
        conventions = rejudge(conventions, *zip(*report.val_readings))
    if conventions is not None:  # the evidence is kept in training.json even when nothing was learned
        conventions.save(adapter_dir)
        report.extra["conventions"] = conventions.as_dict()
    record = {"settings": asdict(settings), "backend": backend.name, **report.extra, "history": report.history}
    (adapter_dir / TRAINING_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=1, default=str),
                                             encoding="utf-8")
    return report


def learn_book_conventions(backend, base_dir: Path, train: list[tuple[bytes, str]]):
    """The book's conventions (ocr_assets.models.conventions) from its training lines: the base model reads the
    lines that spell out an honorific, and a ligature is learned where it missed the spelled letters; the base
    model's own conventions carry over."""
    import io

    from PIL import Image

    from ocr_assets.models import conventions as conv

    inherited = conv.Conventions.load(base_dir)
    texts = [text for _, text in train]
    wanted = conv.lines_to_read(texts)
    readings = {}
    if wanted:
        recognizer = backend.load(base_dir, device="cpu")
        images = [Image.open(io.BytesIO(train[i][0])) for i in wanted]
        readings = {i: r.text for i, r in zip(wanted, recognizer.recognize(images))}
    return inherited.merged_with(conv.learn(texts, readings))


def merge_adapters(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float16", *,
                   trust_remote_code: bool = False) -> Path:
    """Fold the adapters into the base weights: a plain model directory usable as `--model`; the book's
    conventions learned with the adapters (else the base model's) go with it."""
    from ocr_assets.models.conventions import FILE

    base_dir = Path(base_dir)
    backend = backend_for(base_dir)
    check_remote_code(backend, base_dir, trust_remote_code)
    out = backend.merge(base_dir, Path(adapter_dir), Path(out_dir), dtype)
    for source in (Path(adapter_dir) / FILE, base_dir / FILE):
        if source.is_file():
            shutil.copyfile(source, Path(out) / FILE)
            break
    return out


def split_for_validation(pairs: pa.Table, fraction: float, seed: int) -> tuple[pa.Table, pa.Table | None]:
    """Hold out a random share of the lines (deterministic for a seed, spread across the book) for validation."""
    import random

    n = pairs.num_rows
    if n < 20 or fraction <= 0:
        return pairs, None
    rng = random.Random(seed)
    val_idx = set(rng.sample(range(n), max(1, round(n * fraction))))
    keep = [i for i in range(n) if i not in val_idx]
    return pairs.take(keep), pairs.take(sorted(val_idx))


def finetune_gt_dir(gt_dir: Path, out_dir: Path, base: str | None = None, settings: FinetuneSettings | None = None,
                    log: Log = print, *, registry_uri: str | None = None, trust_remote_code: bool = False) -> dict:
    """`ocr-assets finetune`: validate the folder, LoRA fine-tune the base on it, merge into out_dir.

    `base`: a model directory, `models:/NAME@ALIAS` or None (the registry's champion, else the shipped model).
    """
    from ocr_assets.data.gt_folder import iter_gt_folder
    from ocr_assets.data.validation import validate_lines
    from ocr_assets.models.resolve import resolve_model_dir

    settings = settings or FinetuneSettings()
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise UsageError(f"--out {str(out_dir)!r} exists and is not a model directory; give a new or empty folder")
    if out_dir == Path(gt_dir).resolve() or out_dir in Path(gt_dir).resolve().parents:
        raise UsageError(f"--out {str(out_dir)!r} would overwrite the training folder; give another folder")
    base_dir = resolve_model_dir(base, registry_uri)
    check_remote_code(backend_for(base_dir), base_dir, trust_remote_code)  # before the slow part, not after it
    start = time.perf_counter()
    pairs, quarantine = validate_lines(iter_gt_folder(gt_dir))
    if pairs.num_rows == 0:
        raise SourceError(f"no valid line pairs in {str(gt_dir)!r} ({quarantine.num_rows} quarantined); "
                          "run `ocr-assets validate` to see why")
    log(f"{pairs.num_rows} line pairs ({quarantine.num_rows} quarantined)")
    train, val = split_for_validation(pairs, settings.val_fraction, settings.seed)
    adapter_dir = out_dir.parent / f"{out_dir.name}.adapters"
    # Checkpoints beside the output: a killed fine-tune started again with the same --out resumes where it was.
    checkpoints = Path(settings.checkpoint_dir) if settings.checkpoint_dir else out_dir.parent / f"{out_dir.name}.ckpt"
    settings = replace(settings, checkpoint_dir=str(checkpoints))
    resumed = backend_for(base_dir).resume_point(checkpoints)
    if resumed:
        log(f"resuming from the checkpoint in {checkpoints} (epoch {resumed['epoch']}, step {resumed['step']})")

    def on_epoch(epoch: int, metrics: dict) -> None:
        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        log(f"epoch {epoch}: {shown}")

    report = lora_finetune(base_dir, train, val, settings, adapter_dir, on_epoch, trust_remote_code=trust_remote_code)
    merge_adapters(base_dir, adapter_dir, out_dir, settings.merge_dtype, trust_remote_code=trust_remote_code)
    shutil.rmtree(checkpoints, ignore_errors=True)  # finished: the next fine-tune to this --out starts afresh
    return {
        "resumed_from_epoch": resumed["epoch"] if resumed else None,
        "model": str(out_dir),
        "base": str(base_dir),
        "adapters": str(adapter_dir),
        "lines": pairs.num_rows,
        "quarantined": quarantine.num_rows,
        "epochs": report.extra.get("epochs"),
        "best_val_cer": report.extra.get("best_val_cer"),
        "conventions": report.extra.get("conventions", {}).get("expansions", {}),
        "spacing_rules": report.extra.get("conventions", {}).get("spacing", {}),
        "word_rules": report.extra.get("conventions", {}).get("words", {}),
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def conventions_gt_dir(gt_dir: Path, out_dir: Path, base: str | None = None, log: Log = print, *,
                       registry_uri: str | None = None, trust_remote_code: bool = False) -> dict:
    """`ocr-assets conventions`: learn a book's conventions from its line pairs without training — the base
    model's weights copied to out_dir with the learned `conventions.json` (merged over the base's own)."""
    from ocr_assets.data.gt_folder import iter_gt_folder
    from ocr_assets.data.validation import validate_lines
    from ocr_assets.models.resolve import resolve_model_dir

    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise UsageError(f"--out {str(out_dir)!r} exists and is not a model directory; give a new or empty folder")
    base_dir = Path(resolve_model_dir(base, registry_uri)).resolve()
    if out_dir == base_dir:
        raise UsageError(f"--out {str(out_dir)!r} is the base model itself; give another folder")
    backend = backend_for(base_dir)
    check_remote_code(backend, base_dir, trust_remote_code)
    start = time.perf_counter()
    pairs, quarantine = validate_lines(iter_gt_folder(gt_dir))
    if pairs.num_rows == 0:
        raise SourceError(f"no valid line pairs in {str(gt_dir)!r} ({quarantine.num_rows} quarantined); "
                          "run `ocr-assets validate` to see why")
    log(f"{pairs.num_rows} line pairs ({quarantine.num_rows} quarantined); reading them with the base model")
    conventions = learn_book_conventions(backend, base_dir, samples_of(pairs))
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base_dir, tmp)
    (tmp / FILE_CONVENTIONS).unlink(missing_ok=True)
    conventions.save(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)  # whole or not at all
    return {"model": str(out_dir), "base": str(base_dir), "lines": pairs.num_rows,
            "quarantined": quarantine.num_rows, **conventions.as_dict(),
            "seconds": round(time.perf_counter() - start, 1)}
