"""Train a CompactOCRModel with CTC: from scratch, from a checkpoint, or LoRA-wrapped; one process or torchrun DDP.

Samples are (image, text) pairs (PIL image or encoded bytes), an Arrow table, or Parquet files with the columns
`image` (encoded bytes) and `text`. Checkpoints (model, optimizer, scheduler, RNG, position in the epoch) go to
`TrainConfig.checkpoint_dir`; a later call with the same directory resumes from the last one.

    python -m ocr_assets.models.compact.train --train a.parquet,b.parquet --val v.parquet --out DIR
    torchrun --nproc_per_node=8 -m ocr_assets.models.compact.train ...   # data-parallel, rank 0 writes
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from PIL import Image, ImageFilter
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ocr_assets.models.base import ModelError, TrainConfig, resolve_device
from ocr_assets.models.compact.codec import Codec, CodecStats
from ocr_assets.models.compact.config import CompactOCRConfig
from ocr_assets.models.compact.modeling import CompactOCRModel, CompactOCROutput
from ocr_assets.models.compact.recognizer import collate_lines, greedy_decode, open_image, prepare_line, to_gray
from ocr_assets.text import has_tashkeel, normalize

logger = logging.getLogger(__name__)

Samples = Sequence[tuple[object, str]] | pa.Table | str | Path | Sequence[str | Path]
TRAINER_STATE = "trainer_state.pt"


@dataclass
class CompactTrainOptions:
    """Compact-specific knobs beside the shared TrainConfig; defaults suit pretraining and fine-tuning."""

    model_config: dict = field(default_factory=dict)  # CompactOCRConfig overrides for a model built from scratch
    augment: bool = False
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.05  # cosine decays to this share of the peak learning rate
    grad_clip: float = 1.0
    amp: str = "auto"  # auto: bf16 on CUDA and on CPUs with native bf16 | bf16 | off
    bucket_batches: int = 50  # lines of this many batches are sorted by width together, to cut padding
    val_max_lines: int | None = None
    val_batch_size: int = 64
    log_every: int = 50
    keep_best: bool = True  # return (and save as best/) the weights with the lowest validation CER
    # > 0: only the top N encoder blocks (and the head) train; the frozen lower part runs once per line and
    # variant, and its output is cached (one clean + feature_variants - 1 augmented copies per line).
    top_layers: int = 0
    feature_variants: int = 8
    # Parquet files of real lines whose transcription drops the vowel marks the print has: their mark-free lines
    # train with marks optional (CompactOCRModel.ctc_loss), so they do not teach the model to omit marks.
    marks_optional: tuple[str, ...] = ()

    def __post_init__(self):
        if self.top_layers < 0 or self.feature_variants < 1:
            raise ModelError(f"top_layers {self.top_layers} must be >= 0 and feature_variants {self.feature_variants} >= 1")
        if self.amp not in ("auto", "bf16", "off"):
            raise ModelError(f"amp {self.amp!r} is not one of auto, bf16, off")
        unknown = set(self.model_config) - set(CompactOCRConfig().to_dict())
        if unknown:
            raise ModelError(f"model_config keys {sorted(unknown)} are not CompactOCRConfig fields; check the spelling")


@dataclass
class TrainResult:
    """The trained model (same wrapper as passed in), its codec, per-epoch metrics and what the data held."""

    model: torch.nn.Module
    codec: Codec
    history: list[dict]
    steps: int
    resumed_from_step: int | None
    codec_stats: CodecStats
    skipped_too_long: int  # lines with more labels than CTC frames for their width (left out, counted)
    skipped_updates: int  # steps whose gradient was not finite
    best_val_cer: float | None
    checkpoint_dir: Path | None
    # (target, reading) of each validation line by the returned weights; None without validation or when the
    # returned weights were reloaded from a checkpoint written before a resume
    val_readings: list[tuple[str, str]] | None = None


# ---- data -------------------------------------------------------------------------------------------------


class _Column:
    """Random access to an Arrow binary/string column without converting it all to Python at once."""

    def __init__(self, column: pa.ChunkedArray):
        self.column = column

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, i: int):
        return self.column[i].as_py()


def _is_paths(samples: Samples) -> bool:
    return isinstance(samples, (str, Path)) or (
        isinstance(samples, (list, tuple)) and bool(samples) and isinstance(samples[0], (str, Path))
    )


def _parquet_files(samples) -> list[Path]:
    """The Parquet files a path, a folder or a list of them names, in reading order."""
    paths = [Path(p) for p in ([samples] if isinstance(samples, (str, Path)) else samples)]
    files = [f for p in paths for f in (sorted(p.glob("*.parquet")) if p.is_dir() else [p])]
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        raise ModelError(f"no Parquet files at {missing or [str(p) for p in paths]}; pass files or folders of *.parquet")
    return files


def _marks_optional_rows(samples: Samples, texts: Sequence[str], files: Sequence[str]) -> list[bool]:
    """Per line: it comes from one of `files` and its transcription has no vowel marks."""
    if not files or not _is_paths(samples):
        return [False] * len(texts)
    chosen = {Path(f).resolve() for f in files}
    listed = _parquet_files(samples)
    unknown = chosen - {f.resolve() for f in listed}
    if unknown:
        raise ModelError(f"--marks-optional names {sorted(map(str, unknown))}, which are not training files; "
                         "name Parquet files exactly as --train lists them")
    rows = [f.resolve() in chosen for f in listed for _ in range(pq.ParquetFile(f).metadata.num_rows)]
    return [flag and not has_tashkeel(text or "") for flag, text in zip(rows, texts)]


class MarkFreeLabels(list):
    """Label ids of a line trained with vowel marks optional (a list; the type carries the flag to the batch)."""


def load_samples(samples: Samples) -> tuple[Sequence, list[str], list[int] | None, list[int] | None]:
    """(images, texts, widths or None, heights or None) from pairs, an Arrow table or Parquet paths."""
    if _is_paths(samples):
        tables = []
        for f in _parquet_files(samples):
            names = set(pq.read_schema(f).names)
            tables.append(pq.read_table(f, columns=[c for c in ("image", "text", "width", "height") if c in names]))
        samples = pa.concat_tables(tables, promote_options="default")
    if isinstance(samples, pa.Table):
        if not {"image", "text"} <= set(samples.column_names):
            raise ModelError(
                f"table columns {samples.column_names} lack 'image' and/or 'text'; use the PAIR_SCHEMA names"
            )
        size = {c: samples.column(c).to_pylist() for c in ("width", "height") if c in samples.column_names}
        return (
            _Column(samples.column("image")),
            samples.column("text").to_pylist(),
            size.get("width"),
            size.get("height"),
        )
    images, texts = [], []
    for image, text in samples:
        images.append(image)
        texts.append(text)
    return images, texts, None, None


def _image_size(image) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(bytes(image))) as probe:  # reads the header only
            return probe.size
    with Image.open(image) as probe:
        return probe.size


def augment_line(image: Image.Image, rng: np.random.Generator, height: int) -> Image.Image:
    """Light scan degradations (margins, width scale, blur, ink spread or erosion) for a model of this height.

    Works at twice the model's height, not the scan's: as strong relative to the glyphs, a fraction of the cost.
    """
    image = to_gray(image)
    w, h = image.size
    work_h = min(h, 2 * height)
    new_w = max(4, round(w * work_h / h * rng.uniform(0.85, 1.15)))
    image = image.resize((new_w, work_h), Image.BILINEAR)
    top, bottom = (int(rng.integers(-work_h // 10, work_h // 8 + 1)) for _ in range(2))
    canvas = Image.new("L", (new_w, max(4, work_h + top + bottom)), 255)
    canvas.paste(image, (0, top))
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    if rng.random() < 0.15:
        canvas = canvas.filter(ImageFilter.MinFilter(3))  # ink spread (dark ink on light paper)
    elif rng.random() < 0.15:
        canvas = canvas.filter(ImageFilter.MaxFilter(3))  # thin, broken strokes
    return canvas


class LineDataset(Dataset):
    """Prepared line arrays + label ids; items are addressed as (index, epoch) so augmentation is reproducible."""

    def __init__(
        self,
        images: Sequence,
        labels: list[list[int]],
        widths: Sequence[int],
        height: int,
        augment: bool = False,
        seed: int = 0,
    ):
        self.images, self.labels, self.widths = images, labels, widths  # widths: after resizing to `height`
        self.height, self.augment, self.seed = height, augment, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int] | int):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image = self.images[index]
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, index])
            array = prepare_line(augment_line(open_image(image), rng, self.height), self.height)
            if rng.random() < 0.3:  # sensor noise, after the contrast stretch so it survives it
                noise = rng.normal(0, rng.uniform(5, 25), array.shape)
                array = np.clip(array + noise, 0, 255).astype(np.uint8)
        else:
            array = prepare_line(image, self.height)
        return array, self.labels[index]


def collate_batch(items: list[tuple[np.ndarray, list[int]]]) -> dict[str, torch.Tensor]:
    # Widths rounded up to 256 px: fewer distinct tensor sizes, so the allocator reuses blocks instead of
    # fragmenting (peak RSS of a CPU fine-tune grew with every epoch at 8 px steps).
    pixels, widths = collate_lines([a for a, _ in items], multiple=256)
    return {"pixel_values": pixels, "widths": widths, **_pad_labels([lab for _, lab in items])}


def _pad_labels(labels: list[list[int]]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(lab) for lab in labels], dtype=torch.long)
    padded = torch.zeros((len(labels), max(1, int(lengths.max()))), dtype=torch.long)
    for i, lab in enumerate(labels):
        padded[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    out = {"labels": padded, "label_lengths": lengths}
    if any(isinstance(lab, MarkFreeLabels) for lab in labels):
        out["marks_optional"] = torch.tensor([isinstance(lab, MarkFreeLabels) for lab in labels])
    return out


class CachedFeatures(Dataset):
    """The frozen lower part's output for every training line, computed once per variant (0: the clean line,
    1..: augmented copies); item (index, epoch) picks a variant reproducibly. `widths` are frame counts, so the
    bucketing sampler groups lines of similar length as it does for images."""

    def __init__(self, model: CompactOCRModel, lines: LineDataset, split: int, variants: int, device: str,
                 amp: torch.dtype | None, seed: int, batch_size: int = 32):
        clean = LineDataset(lines.images, lines.labels, lines.widths, lines.height, augment=False, seed=lines.seed)
        self.labels, self.seed, self.variants = lines.labels, seed, variants
        self.features: list[list[torch.Tensor]] = []
        was_training = model.training
        model.eval()
        order = sorted(range(len(lines)), key=lambda i: lines.widths[i])
        with torch.inference_mode(), _autocast(device, amp):
            for variant in range(variants):
                source = clean if variant == 0 or not lines.augment else lines
                per_line: list[torch.Tensor | None] = [None] * len(lines)
                for s in range(0, len(order), batch_size):
                    idx = order[s : s + batch_size]
                    batch = collate_batch([source[(i, variant)] for i in idx])
                    pixels = batch["pixel_values"].to(device).to(torch.float32) / 255.0
                    hidden, lengths = model.embed(pixels, batch["widths"].to(device))
                    hidden = model.run_blocks(hidden, lengths, 0, split)
                    for j, i in enumerate(idx):
                        per_line[i] = hidden[j, : int(lengths[j])].to(torch.bfloat16).cpu().clone()
                self.features.append(per_line)
        model.train(was_training)
        self.widths = [f.shape[0] for f in self.features[0]]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int] | int):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        variant = int(np.random.default_rng([self.seed, epoch, index]).integers(self.variants))
        return self.features[variant][index], self.labels[index]


def collate_features(items: list[tuple[torch.Tensor, list[int]]]) -> dict[str, torch.Tensor]:
    frames = torch.tensor([f.shape[0] for f, _ in items], dtype=torch.long)
    # Frames rounded up to 32 (images: 256 px = 32 frames): few distinct shapes, so oneDNN's per-shape kernels
    # and the allocator's blocks are reused instead of piling up epoch after epoch.
    padded = -(-int(frames.max()) // 32) * 32
    hidden = torch.zeros((len(items), padded, items[0][0].shape[1]), dtype=torch.float32)
    for i, (f, _) in enumerate(items):
        hidden[i, : f.shape[0]] = f
    return {"pixel_values": hidden, "widths": frames, **_pad_labels([lab for _, lab in items])}


class _TopOnFeatures(torch.nn.Module):
    """Runs the top blocks + head of `model` on cached features: the training step's stand-in for forward."""

    def __init__(self, model: CompactOCRModel, split: int):
        super().__init__()
        self.model, self.split = model, split

    def forward(self, pixel_values: torch.Tensor, widths: torch.Tensor, labels: torch.Tensor,
                label_lengths: torch.Tensor, marks_optional: torch.Tensor | None = None) -> CompactOCROutput:
        hidden = self.model.run_blocks(pixel_values, widths, self.split)
        logits, lengths = self.model.head(hidden, widths)
        return CompactOCROutput(loss=self.model.loss(logits, lengths, labels, label_lengths, marks_optional),
                                logits=logits, output_lengths=lengths)


class BucketBatchSampler:
    """Shuffled batches of similar-width lines; a DistributedSampler shards them across ranks (1 rank: all)."""

    def __init__(
        self, sampler: DistributedSampler, widths: Sequence[float], batch_size: int, bucket_batches: int, seed: int
    ):
        self.sampler, self.widths, self.batch_size = sampler, widths, batch_size
        self.bucket, self.seed, self.epoch, self.start = batch_size * bucket_batches, seed, 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch
        self.sampler.set_epoch(epoch)

    def _batches(self) -> list[list[int]]:
        indices = list(self.sampler)
        batches = []
        for s in range(0, len(indices), self.bucket):
            part = sorted(indices[s : s + self.bucket], key=lambda i: self.widths[i])
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        random.Random(self.seed * 100_003 + self.epoch).shuffle(batches)
        return batches

    def __iter__(self):
        for batch in self._batches()[self.start :]:
            yield [(i, self.epoch) for i in batch]

    def __len__(self) -> int:
        per_rank = len(self.sampler)
        full, rest = divmod(per_rank, self.bucket)
        return full * math.ceil(self.bucket / self.batch_size) + math.ceil(rest / self.batch_size) - self.start


# ---- distributed, checkpoints, schedule ---------------------------------------------------------------------


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    device: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    return _Dist(world=world, rank=dist.get_rank(), device=f"cuda:{local}" if cuda else "cpu")


def _epochs_since_best(history: list[dict]) -> int:
    """Epochs at the end of `history` (a resumed run's) without a lower validation CER than every one before."""
    best, since = None, 0
    for metrics in history:
        cer = metrics.get("val_cer")
        if cer is None:
            continue
        if best is None or cer < best:
            best, since = cer, 0
        else:
            since += 1
    return since


def _stop_now(stop: bool, ctx: "_Dist", device) -> bool:
    """Rank 0's early-stopping decision (only it holds the validation lines), the same on every rank."""
    if ctx.world <= 1:
        return stop
    flag = torch.tensor([1 if stop else 0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _barrier(ctx: _Dist) -> None:
    if ctx.world > 1:
        dist.barrier()


def _rng_state() -> dict:
    """RNG states as plain lists and tensors, so the checkpoint loads with torch.load(weights_only=True)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _base_model(model: torch.nn.Module) -> CompactOCRModel:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, CompactOCRModel):
        raise ModelError(f"train_compact needs a CompactOCRModel (optionally peft-wrapped); got {type(base).__name__}")
    return base


def _save_checkpoint(directory: Path, model: torch.nn.Module, state: dict) -> None:
    """Write last/ atomically: a crash mid-write leaves the previous checkpoint readable."""
    tmp, last, old = directory / "last.tmp", directory / "last", directory / "last.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _base_model(model).config.to_json_file(tmp / "config.json")
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(state, tmp / TRAINER_STATE)
    if last.exists():
        shutil.rmtree(old, ignore_errors=True)
        last.rename(old)
    tmp.rename(last)
    shutil.rmtree(old, ignore_errors=True)


def _find_checkpoint(directory: Path | None) -> Path | None:
    if directory is None:
        return None
    for name in ("last", "last.old"):  # last.old survives a crash between the two renames above
        if (directory / name / TRAINER_STATE).is_file():
            return directory / name
    return None


def checkpoint_progress(directory: Path | None) -> dict | None:
    """{"epoch", "step", "path"} of the checkpoint a run in `directory` would resume from, or None."""
    found = _find_checkpoint(Path(directory) if directory else None)
    if found is None:
        return None
    state = torch.load(found / TRAINER_STATE, map_location="cpu", weights_only=True)
    return {"epoch": int(state["epoch"]), "step": int(state["step"]), "path": str(found)}


def _schedule(total: int, warmup_fraction: float, min_ratio: float) -> Callable[[int], float]:
    warmup = max(1, int(total * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _autocast(device: str, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=dtype)


def _amp_dtype(option: str, device: str) -> torch.dtype | None:
    if option == "off":
        return None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if option == "bf16":
        return torch.bfloat16
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
    return torch.bfloat16 if native else None


# ---- evaluation ---------------------------------------------------------------------------------------------


def evaluate_cer(
    model: torch.nn.Module,
    dataset: LineDataset,
    texts: Sequence[str],
    codec: Codec,
    device: str,
    batch_size: int = 64,
    amp: torch.dtype | None = None,
) -> dict:
    """Greedy-decode the dataset and score it: cer and cer_norm (ocr_assets.metrics), lines, and the readings."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(dataset)), key=lambda i: dataset.widths[i])
    hyps: dict[int, str] = {}
    with torch.inference_mode(), _autocast(device, amp):
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = collate_batch([dataset[i] for i in idx])
            out = model(pixel_values=batch["pixel_values"].to(device), widths=batch["widths"].to(device))
            for i, (ids, _, _) in zip(idx, greedy_decode(out.logits, out.output_lengths)):
                hyps[i] = codec.decode(ids)
    model.train(was_training)
    refs = [texts[i] for i in range(len(dataset))]
    preds = [hyps[i] for i in range(len(dataset))]
    cer, cer_norm = _cer_functions()
    return {"cer": cer(refs, preds), "cer_norm": cer_norm(refs, preds), "lines": len(refs), "readings": preds}


def _cer_functions():
    try:
        from ocr_assets.metrics import cer, cer_norm
    except ImportError:  # a bare GPU image without jiwer/sacrebleu: the same definition, plain edit distance
        from ocr_assets.text import strip_tashkeel

        def corpus(refs, hyps):
            chars = sum(len(r) for r in refs)
            return sum(_edit_distance(r, h) for r, h in zip(refs, hyps)) / chars if chars else float(any(hyps))

        def cer(refs, hyps):
            return corpus([normalize(r) for r in refs], [normalize(h) for h in hyps])

        def cer_norm(refs, hyps):
            return corpus([strip_tashkeel(r) for r in refs], [strip_tashkeel(h) for h in hyps])

    return cer, cer_norm


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


# ---- training -----------------------------------------------------------------------------------------------


def _encode_all(
    codec: Codec, texts: Sequence[str], frames: Sequence[int]
) -> tuple[list[int], list[list[int]], CodecStats, int]:
    """Keep lines CTC can align (labels + repeats <= frames); return kept indices, labels, stats, skipped count."""
    stats, keep, labels, skipped = CodecStats(), [], [], 0
    for i, text in enumerate(texts):
        ids = codec.encode(text or "", stats)
        repeats = sum(1 for a, b in zip(ids, ids[1:]) if a == b)
        if len(ids) + repeats > frames[i]:
            skipped += 1
            continue
        keep.append(i)
        labels.append(ids)
    return keep, labels, stats, skipped


class _Subset:
    def __init__(self, items: Sequence, keep: list[int]):
        self.items, self.keep = items, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int):
        return self.items[self.keep[i]]


def _prepare_split(
    samples: Samples, codec: Codec, config: CompactOCRConfig, augment: bool, seed: int, limit: int | None = None,
    marks_optional: Sequence[str] = (),
):
    images, texts, widths, heights = load_samples(samples)
    optional = _marks_optional_rows(samples, texts, marks_optional)
    if limit is not None:
        images, texts = _Subset(images, list(range(min(limit, len(texts))))), texts[:limit]
        widths, heights = (widths[:limit] if widths else None), (heights[:limit] if heights else None)
    # Sizes from width/height columns where a shard has them (PAIR_SCHEMA), else from the image header.
    widths, heights = list(widths or [None] * len(texts)), list(heights or [None] * len(texts))
    for i in range(len(texts)):
        if widths[i] is None or heights[i] is None:
            widths[i], heights[i] = _image_size(images[i])
    scaled = [max(1, round(w * config.input_height / max(h, 1))) for w, h in zip(widths, heights)]
    frames = [math.ceil(w / config.width_reduction) * config.frame_split for w in scaled]
    keep, labels, stats, skipped = _encode_all(codec, texts, frames)
    labels = [MarkFreeLabels(lab) if optional[i] else lab for i, lab in zip(keep, labels)]
    widths = [scaled[i] for i in keep]
    dataset = LineDataset(_Subset(images, keep), labels, widths, config.input_height, augment=augment, seed=seed)
    return dataset, [normalize(texts[i] or "") for i in keep], stats, skipped


def add_missing_characters(model: CompactOCRModel, texts: Sequence[str]) -> list[str]:
    """Grow the model's alphabet by the characters of texts it has no label for (before wrapping it in LoRA)."""
    return model.extend_alphabet(Codec.from_config(model.config).missing(texts))


def train_compact(
    model: torch.nn.Module | None,
    train_samples: Samples,
    val_samples: Samples | None,
    config: TrainConfig,
    codec: Codec | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    options: CompactTrainOptions | None = None,
) -> TrainResult:
    """Train with CTC (AdamW, warmup + cosine, clipping, bf16 autocast); resumes from config.checkpoint_dir.

    model None builds one from scratch (alphabet: `codec`, else the default alphabet + the training texts'
    characters). A peft-wrapped model trains its adapters only. Under torchrun (WORLD_SIZE > 1) each rank
    trains on its shard through DistributedDataParallel; rank 0 validates and writes checkpoints.
    """
    options = options or CompactTrainOptions()
    given = model is not None  # trained weights to start from (a fine-tune), not a fresh model
    ctx = _init_distributed()
    device = ctx.device or resolve_device(config.device)
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    resume_from = _find_checkpoint(ckpt_dir)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    if model is None:
        if resume_from is not None:
            model = CompactOCRModel(CompactOCRConfig.from_json_file(str(resume_from / "config.json")))
        else:
            if codec is None:
                codec = Codec.from_texts(load_samples(train_samples)[1])
            model = CompactOCRModel(CompactOCRConfig(alphabet=codec.alphabet, **options.model_config))
    base = _base_model(model)
    if codec is not None and codec.alphabet != base.config.alphabet:
        raise ModelError(
            "codec alphabet differs from the model's; grow the model with add_missing_characters(model, texts) "
            "(before applying LoRA) and leave codec=None"
        )
    codec = Codec.from_config(base.config)

    train_set, _, stats, skipped = _prepare_split(train_samples, codec, base.config, options.augment, config.seed,
                                                  marks_optional=options.marks_optional)
    if options.marks_optional and ctx.main:
        flagged = sum(isinstance(lab, MarkFreeLabels) for lab in train_set.labels)
        logger.info("%d of %d training lines train with vowel marks optional", flagged, len(train_set))
    if len(train_set) == 0:
        raise ModelError("no trainable lines: every sample was too long for its width or the set is empty")
    if skipped and ctx.main:
        logger.warning("%d training lines left out: more labels than CTC frames for their width", skipped)
    if stats.unknown_chars and ctx.main:
        logger.warning(
            "%d characters have no label (mapped to <unk>): %s", stats.unknown_chars, stats.as_dict(10)["unknown_top"]
        )
    val = None
    if val_samples is not None and ctx.main:
        val_set, val_texts, _, _ = _prepare_split(
            val_samples, codec, base.config, False, config.seed, options.val_max_lines
        )
        val = (val_set, val_texts) if len(val_set) else None

    model.to(device)
    amp = _amp_dtype(options.amp, device)
    split = len(base.blocks) - options.top_layers if options.top_layers else None
    if split is not None:
        if not 0 <= split < len(base.blocks):
            raise ModelError(f"top_layers {options.top_layers} must be between 1 and the model's {len(base.blocks)} blocks")
        if ctx.world > 1:
            raise ModelError("top_layers (cached features) trains on one process; leave it 0 under torchrun")
        start_cache = time.perf_counter()
        train_set = CachedFeatures(base, train_set, split, options.feature_variants, device, amp, config.seed)
        if ctx.main:
            logger.info("cached the lower %d blocks' features of %d lines x %d variants in %.1f s", split,
                        len(train_set), options.feature_variants, time.perf_counter() - start_cache)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for n, p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)

    sampler = DistributedSampler(train_set, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=config.seed)
    batches = BucketBatchSampler(sampler, train_set.widths, config.batch_size, options.bucket_batches, config.seed)
    per_epoch = len(batches)
    total = per_epoch * config.epochs if config.max_steps is None else min(per_epoch * config.epochs, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(total, options.warmup_fraction, options.min_lr_ratio)
    )

    step = start_epoch = start_batch = 0
    history: list[dict] = []
    best_cer, best_state, resumed, skipped_updates = None, None, None, 0
    val_readings = None  # the returned weights' readings of the validation lines
    if resume_from is not None:
        load_model(model, str(resume_from / "model.safetensors"), device=str(device))
        state = torch.load(resume_from / TRAINER_STATE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, start_epoch, start_batch = state["step"], state["epoch"], state["batch_in_epoch"]
        history, best_cer, resumed = json.loads(state["history"]), state["best_val_cer"], state["step"]
        if state["batches_per_epoch"] != per_epoch:  # data or world size changed: restart the epoch cleanly
            start_batch = 0
        if start_batch >= per_epoch:  # stopped on an epoch's last batch: go on with the next epoch
            start_epoch, start_batch = start_epoch + 1, 0
        if ctx.main:
            logger.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, step, start_epoch, start_batch)

    if given and val is not None and options.keep_best and resume_from is None:
        # The starting weights are a candidate too: a fine-tune that only makes its held-out lines worse returns them.
        scores = evaluate_cer(model, val[0], val[1], codec, device, options.val_batch_size, amp)
        best_cer, val_readings = scores["cer"], scores["readings"]
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ctx.main:
            logger.info("before training: val CER %.4f (kept unless an epoch does better)", best_cer)

    runner = model if split is None else _TopOnFeatures(base, split)
    if ctx.world > 1:
        runner = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.startswith("cuda") else None
        )
    workers = config.num_workers if split is None else 0  # cached features live in this process's memory
    loader = DataLoader(
        train_set,
        batch_sampler=batches,
        collate_fn=collate_batch if split is None else collate_features,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: creating an epoch's iterator must not draw from the global RNG (dropout), or a resumed
        # run would see different dropout masks than an uninterrupted one.
        generator=torch.Generator().manual_seed(config.seed),
    )

    def checkpoint(epoch: int, batch_in_epoch: int) -> None:
        if ckpt_dir is not None and ctx.main:
            _save_checkpoint(
                ckpt_dir,
                model,
                {
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "batches_per_epoch": per_epoch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(),
                    "history": json.dumps(history),
                    "best_val_cer": best_cer,
                },
            )
        _barrier(ctx)

    stopped = config.max_steps is not None and step >= config.max_steps
    since_best = _epochs_since_best(history)  # epochs in a row without a lower validation CER (config.patience)
    for epoch in range(start_epoch, config.epochs):
        if stopped:
            break
        batches.set_position(epoch, start_batch if epoch == start_epoch else 0)
        done_in_epoch = start_batch if epoch == start_epoch else 0
        runner.train()  # frozen BatchNorms (LoRA) keep their statistics: see CompactOCRModel.train
        loss_sum, loss_n, seen, t0 = 0.0, 0, 0, time.perf_counter()
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with _autocast(device, amp):
                loss = runner(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], options.grad_clip or float("inf"))
            # A non-finite gradient (every rank sees the same, all-reduced) skips the update instead of poisoning it.
            if torch.isfinite(norm):
                optimizer.step()
                loss_sum, loss_n = loss_sum + loss.detach(), loss_n + 1
            else:
                skipped_updates += 1
                logger.warning("step %d: non-finite gradient norm, update skipped", step + 1)
            scheduler.step()
            step += 1
            done_in_epoch += 1
            seen += len(batch["widths"]) * ctx.world
            if ctx.main and options.log_every and step % options.log_every == 0:
                rate = seen / (time.perf_counter() - t0)
                logger.info(
                    "step %d epoch %d loss %.4f lr %.2e %.1f samples/s",
                    step,
                    epoch,
                    float(loss_sum) / max(loss_n, 1),
                    scheduler.get_last_lr()[0],
                    rate,
                )
            stopped = config.max_steps is not None and step >= config.max_steps
            if stopped or (config.checkpoint_every and step % config.checkpoint_every == 0):
                checkpoint(epoch, done_in_epoch)
            if stopped:
                break
        if stopped and done_in_epoch < per_epoch:
            break
        seconds = time.perf_counter() - t0
        metrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": float(loss_sum) / max(loss_n, 1),
            "lr": scheduler.get_last_lr()[0],
            "samples_per_s": seen / max(seconds, 1e-9),
            "seconds": seconds,
        }
        if val is not None:
            scores = evaluate_cer(model, val[0], val[1], codec, device, options.val_batch_size, amp)
            metrics.update(val_cer=scores["cer"], val_cer_norm=scores["cer_norm"], val_lines=scores["lines"])
            improved = best_cer is None or scores["cer"] < best_cer
            if improved or not options.keep_best:  # the weights this returns (the best, else the last)
                val_readings = scores["readings"]
            since_best = 0 if improved else since_best + 1
            if improved:
                best_cer = scores["cer"]
                if options.keep_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if ckpt_dir is not None:
                        save_model(model, str(_fresh_dir(ckpt_dir / "best") / "model.safetensors"))
                        base.config.to_json_file(ckpt_dir / "best" / "config.json")
        if ctx.main:
            history.append(metrics)
            logger.info("epoch %d done: %s", epoch, json.dumps(metrics))
            if on_epoch is not None:
                on_epoch(epoch, metrics)
        checkpoint(epoch + 1, 0)
        if config.patience and epoch + 1 < config.epochs and _stop_now(
                val is not None and since_best >= config.patience, ctx, device):
            if ctx.main:
                logger.info("no lower validation CER in %d epochs: stopping after epoch %d of %d (best %.4f kept)",
                            since_best, epoch, config.epochs, best_cer)
            break

    if options.keep_best and best_state is not None:
        model.load_state_dict(best_state)
    elif (
        options.keep_best
        and best_cer is not None
        and ckpt_dir is not None
        and (ckpt_dir / "best" / "model.safetensors").is_file()
    ):
        load_model(model, str(ckpt_dir / "best" / "model.safetensors"), device=str(device))  # best came before a resume
    model.eval()
    return TrainResult(
        model=model,
        codec=codec,
        history=history,
        steps=step,
        resumed_from_step=resumed,
        codec_stats=stats,
        skipped_too_long=skipped,
        skipped_updates=skipped_updates,
        best_val_cer=best_cer,
        checkpoint_dir=ckpt_dir,
        val_readings=list(zip(val[1], val_readings)) if val is not None and val_readings is not None else None,
    )


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---- command line -------------------------------------------------------------------------------------------


def _split_paths(value: str | None) -> list[str] | None:
    return [p for p in value.split(",") if p] if value else None


def main(argv: list[str] | None = None) -> int:
    """Pretrain or continue training from Parquet shards (columns text + image bytes)."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m ocr_assets.models.compact.train", description=main.__doc__)
    parser.add_argument("--train", required=True, help="Parquet files or folders, comma-separated")
    parser.add_argument("--val", help="Parquet files or folders, comma-separated")
    parser.add_argument("--out", required=True, help="output folder: model/ (best), checkpoints/, history.json")
    parser.add_argument("--init", help="start from this model directory instead of from scratch")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", "--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps)
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--num-workers", type=int, default=defaults.num_workers)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--marks-optional", default="",
                        help="comma-separated Parquet files of real lines whose transcription drops printed vowel marks")
    parser.add_argument("--val-max-lines", type=int)
    parser.add_argument("--log-every", type=int, default=CompactTrainOptions.log_every)
    parser.add_argument("--model-config", default="{}", help='JSON CompactOCRConfig overrides, e.g. {"num_layers": 6}')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    out = Path(args.out)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        max_steps=args.max_steps,
        seed=args.seed,
        device=args.device,
        checkpoint_dir=str(out / "checkpoints"),
        checkpoint_every=args.checkpoint_every,
        num_workers=args.num_workers,
    )
    options = CompactTrainOptions(
        model_config=json.loads(args.model_config),
        augment=args.augment,
        val_max_lines=args.val_max_lines,
        log_every=args.log_every,
        marks_optional=tuple(_split_paths(args.marks_optional) or ()),
    )
    model = None
    if args.init:
        model = CompactOCRModel.from_pretrained(args.init, dtype=torch.float32)
        added = add_missing_characters(model, load_samples(_split_paths(args.train))[1])
        logger.info("starting from %s; alphabet grew by %d characters", args.init, len(added))
    result = train_compact(model, _split_paths(args.train), _split_paths(args.val), config, options=options)
    if int(os.environ.get("RANK", "0")) == 0:
        result.model.save_pretrained(out / "model")
        (out / "history.json").write_text(json.dumps(result.history, indent=1))
        (out / "codec_stats.json").write_text(json.dumps(result.codec_stats.as_dict(50), ensure_ascii=False, indent=1))
        logger.info("saved %s (best val CER %s)", out / "model", result.best_val_cer)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
