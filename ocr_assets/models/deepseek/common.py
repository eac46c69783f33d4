"""What DeepSeek-OCR-2 and DeepSeek-OCR v1 share: batching, decoding with confidences, the loop guard and the
one LoRA training loop (docs/ARCHITECTURE.md, "Backends").
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from PIL import Image

from ocr_assets.errors import ModelError
from ocr_assets.models.base import Recognition, TrainConfig, batched
from ocr_assets.text import normalize

IGNORE_INDEX = -100

Sample = tuple[Image.Image, str]
Collate = Callable[[Sequence[Sample]], dict]


# ---------------------------------------------------------------------------------------------- batching


def pad_batch(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """(ids, labels) rows -> right-padded input_ids, labels (-100 on pads) and attention_mask."""
    width = max(len(ids) for ids, _ in rows)
    # Right padding: the loss ignores pads, and every row keeps the positions it had alone.
    return {
        "input_ids": torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows]),
        "labels": torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in rows]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
    }


def as_rgb(image) -> Image.Image:
    """A decoded RGB copy, or a ModelError naming what is wrong with the image."""
    if not isinstance(image, Image.Image):
        raise ModelError(f"expected a PIL image, got {type(image).__name__}")
    image.load()  # decode now so a truncated file fails here, for this image only
    if image.width < 2 or image.height < 2:
        raise ModelError(f"image is {image.width}x{image.height} pixels; a line image needs at least 2x2")
    return image.convert("RGB")


def to_device(value, device, dtype):
    """Tensors (also inside dicts, lists, tuples) to `device`; floating ones to `dtype`."""
    if isinstance(value, torch.Tensor):
        return value.to(device, dtype=dtype if value.is_floating_point() else None)
    if isinstance(value, dict):
        return {key: to_device(item, device, dtype) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(item, device, dtype) for item in value)
    return value


def one_line(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


# ---------------------------------------------------------------------------------------------- loop guard


def loop_spans(text: str, max_repeats: int = 3, min_chars: int = 12, max_unit: int = 100) -> list[tuple[int, int]]:
    """Character ranges to delete: every copy after the first of a unit repeated more than `max_repeats` times."""
    spans, i, n = [], 0, len(text)
    while i < n:
        found = None
        limit = i + min(max_unit, (n - i) // (max_repeats + 1))
        # Only sizes at which the unit's first character recurs can start a second copy.
        j = text.find(text[i], i + 1, limit + 1)
        while j != -1:
            size = j - i
            unit = text[i:j]
            reps = 1
            while text.startswith(unit, i + reps * size):
                reps += 1
            if reps > max_repeats and reps * size >= min_chars:
                found = (size, reps)
                break
            j = text.find(text[i], j + 1, limit + 1)
        if found is None:
            i += 1
            continue
        size, reps = found
        end = i + reps * size
        # A loop cut off by max_new_tokens usually ends in a partial copy: drop it too.
        if end < n and text[i : i + size].startswith(text[end:]):
            end = n
        spans.append((i + size, end))
        i = end
    return spans


def trim_repetition(text: str, max_repeats: int = 3, min_chars: int = 12) -> str:
    """Collapse generation loops ("X X X X X ...") to one copy of the repeated unit."""
    return _cut(text, loop_spans(text, max_repeats, min_chars))


def _cut(items, spans):
    kept, start = [], 0
    for lo, hi in spans:
        kept.append(items[start:lo])
        start = hi
    kept.append(items[start:])
    return "".join(kept) if isinstance(items, str) else [x for part in kept for x in part]


# ---------------------------------------------------------------------------------------------- decoding


def decode_with_confidences(tokenizer, ids: list[int], probs: list[float]) -> tuple[str, list[float]]:
    """Decoded text and, per character, the probability of the token that produced it."""
    text, confs = "", []
    for k in range(len(ids)):
        current = tokenizer.decode(ids[: k + 1], skip_special_tokens=True)
        same = 0
        limit = min(len(text), len(current))
        while same < limit and text[same] == current[same]:
            same += 1
        # A byte-level token can end inside a character: the character is credited to the token completing it.
        confs = confs[:same] + [probs[k]] * (len(current) - same)
        text = current
    return text, confs


def recognition_from_tokens(tokenizer, ids: list[int], probs: list[float], max_repeats: int, min_chars: int):
    """Generated ids and their probabilities -> loop-trimmed, normalized text with confidences."""
    ended = tokenizer.eos_token_id in ids
    if ended:
        cut = ids.index(tokenizer.eos_token_id)
        ids, probs = ids[:cut], probs[:cut]
    raw, confs = decode_with_confidences(tokenizer, ids, probs)
    spans = loop_spans(raw, max_repeats, min_chars)
    text, confs = _cut(raw, spans), _cut(confs, spans)
    final = normalize(text)
    lead = len(text) - len(text.lstrip())
    # Stripping keeps the alignment; NFC or collapsed spaces move characters, so then none is given.
    confs = confs[lead : lead + len(final)] if final == text.strip() else []
    confidence = sum(probs) / len(probs) if probs and final else 0.0
    if spans or not ended:
        confidence *= 0.5  # a trimmed loop or a cut-off line is suspect: rank it low for review
    return Recognition(text=final, confidence=float(confidence), char_confidences=confs)


# ---------------------------------------------------------------------------------------------- LoRA training


@dataclass
class FinetuneResult:
    """What a LoRA run did."""

    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trainable_parameters: int = 0
    total_parameters: int = 0
    history: list[dict] = field(default_factory=list)  # one entry per completed pass over the samples


def lora_train_step(model, batches: dict | Sequence[dict], optimizer, max_grad_norm: float = 1.0) -> float:
    """One optimizer step over one batch, or over micro-batches whose gradients add up to one batch."""
    batches = [batches] if isinstance(batches, dict) else list(batches)
    device = next(model.parameters()).device
    frozen = [p.dtype for p in model.parameters() if p.is_floating_point() and not p.requires_grad]
    dtype = frozen[0] if frozen else torch.float32  # inputs follow the frozen base weights (bf16 on GPUs)
    counts = [int((b["labels"] != IGNORE_INDEX).sum()) for b in batches]
    targets = sum(counts)
    if targets == 0:
        raise ModelError("batch has no target tokens (all labels are -100); check the samples' texts")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for batch, count in zip(batches, counts):
        # Each micro-batch's mean loss weighted by its share of target tokens: the step sees one batch's mean.
        loss = model(**to_device(batch, device, dtype)).loss * (count / targets)
        loss.backward()
        total += float(loss.detach())
    trainable = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    return total


def lora_training_loop(
    model,
    samples: Sequence[Sample],
    collate: Collate,
    train: TrainConfig,
    *,
    micro_batch_size: int = 4,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    save_checkpoint: Callable[[], None] | None = None,
) -> FinetuneResult:
    """The LoRA loop of both DeepSeek backends: AdamW on the trainable (adapter) weights, linear warmup then a
    linear decay to a tenth, shuffled batches split into micro-batches; `save_checkpoint` every
    `train.checkpoint_every` steps when `train.checkpoint_dir` is set. The model is left in eval mode."""
    if not samples:
        raise ModelError("finetune got no samples; pass (PIL image, text) pairs")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModelError("the model has no trainable parameters; attach LoRA adapters first")
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)
    per_epoch = math.ceil(len(samples) / train.batch_size)
    total_steps = train.max_steps or train.epochs * per_epoch
    warmup = max(1, total_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.1, (total_steps - s) / max(1, total_steps - warmup)))
    )
    rng = random.Random(train.seed)
    order = list(range(len(samples)))
    result = FinetuneResult(
        steps=0,
        trainable_parameters=sum(p.numel() for p in params),
        total_parameters=sum(p.numel() for p in model.parameters()),
    )
    started = time.perf_counter()
    epoch = 0
    while result.steps < total_steps:
        rng.shuffle(order)
        epoch_losses, epoch_start = [], time.perf_counter()
        for start in range(0, len(order), train.batch_size):
            chosen = [samples[i] for i in order[start : start + train.batch_size]]
            micro = [collate(part) for part in batched(chosen, max(1, micro_batch_size))]
            loss = lora_train_step(model, micro, optimizer)
            schedule.step()
            result.steps += 1
            result.losses.append(loss)
            epoch_losses.append(loss)
            if on_step:
                on_step(result.steps, loss)
            if save_checkpoint and train.checkpoint_dir and result.steps % train.checkpoint_every == 0:
                save_checkpoint()
            if result.steps >= total_steps:
                break
        if len(epoch_losses) == per_epoch:  # a whole pass: report it like the compact trainer does
            metrics = {
                "epoch": epoch,
                "step": result.steps,
                "train_loss": sum(epoch_losses) / len(epoch_losses),
                "lr": schedule.get_last_lr()[0],
                "seconds": time.perf_counter() - epoch_start,
            }
            result.history.append(metrics)
            if on_epoch:
                on_epoch(epoch, metrics)
        epoch += 1
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
