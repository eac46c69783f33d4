"""DeepSeek-OCR-2 through transformers' native classes: recognizer, collator, LoRA fine-tune and merge."""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from PIL import Image

from ocr_assets.models.base import (
    LoraSettings,
    ModelError,
    ModelNotFoundError,
    Recognition,
    Recognizer,
    TrainConfig,
    batched,
    resolve_device,
)
from ocr_assets.text import normalize

# The transformers conversion of deepseek-ai/DeepSeek-OCR-2 (whose own repo is remote code, model_type deepseek_vl_v2).
DEFAULT_MODEL = "deepseek-community/DeepSeek-OCR-2"
PROMPT = "<image>\nFree OCR."
IGNORE_INDEX = -100
SETTINGS_FILE = "ocr_assets_recognizer.json"
BACKEND = "deepseek_ocr2"
# Special-token spellings of the real tokenizer, reused by the tiny one so prompts read the same.
BOS, EOS, PAD, IMAGE = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<image>"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_LM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Ocr2Settings:
    """How the recognizer prompts, tiles and decodes; saved beside the weights."""

    prompt: str = PROMPT
    crop_to_patches: bool = True  # global 1024 view plus 768 tiles, as the processor does by default
    min_patches: int = 2
    max_patches: int = 6
    max_new_tokens: int = 256
    no_repeat_ngram_size: int = 20  # token n-grams; 0 turns the guard off
    repetition_penalty: float = 1.0
    loop_max_repeats: int = 3  # the post-hoc trimmer cuts a unit repeated more often than this
    loop_min_chars: int = 12
    max_target_tokens: int = 512

    def __post_init__(self):
        if IMAGE not in self.prompt:
            raise ModelError(f"prompt {self.prompt!r} has no {IMAGE!r} placeholder; use e.g. {PROMPT!r}")
        if not 1 <= self.min_patches <= self.max_patches:
            raise ModelError(f"min_patches={self.min_patches}, max_patches={self.max_patches}: need 1 <= min <= max")

    def images_kwargs(self) -> dict:
        # Passed on every call: the processor's own defaults (2..6 tiles) override the image processor's.
        return {
            "crop_to_patches": self.crop_to_patches,
            "min_patches": self.min_patches,
            "max_patches": self.max_patches,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Ocr2Settings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown recognizer settings {unknown}; allowed: {sorted(known)}")
        return cls(**data)


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


# ---------------------------------------------------------------------------------------------- tiny model


_TINY_CORPUS = (
    "بسم الله الرحمن الرحيم",
    "الحمد لله رب العالمين والصلاة والسلام على رسوله الكريم",
    "قال أبو عبد الله رحمه الله تعالى في كتابه",
    "وهذا باب في معرفة الأسماء والكنى",
)


def tiny_processor(texts: Iterable[str] = (), vocab_size: int = 384, image_size: int = 24):
    """An offline DeepseekOcr2Processor: a byte-level BPE trained here on Arabic text, small image views."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import DeepseekOcr2ImageProcessorPil
    from transformers.models.deepseek_ocr2.processing_deepseek_ocr2 import DeepseekOcr2Processor

    if image_size % 12:
        raise ModelError(f"image_size={image_size} must be a multiple of 12 (12 x 12 queries per view); try 24")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, IMAGE],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknown tokens
        show_progress=False,
    )
    tok.train_from_iterator([*_TINY_CORPUS, PROMPT, *texts], trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, extra_special_tokens={"image_token": IMAGE}
    )
    tokenizer.padding_side = "left"
    image_processor = DeepseekOcr2ImageProcessorPil(
        size={"height": image_size, "width": image_size}, tile_size=image_size
    )
    # The vision tower emits 144 queries for any view of <= 144 patches; patch_size * downsample_ratio = size / 12
    # makes the processor count those same 144 tokens per view.
    return DeepseekOcr2Processor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=image_size // 12, downsample_ratio=1
    )


def tiny_config(processor, hidden_size: int = 32, num_layers: int = 2):
    """A random DeepseekOcr2Config small enough for forward, generate and LoRA backward on CPU in seconds."""
    from transformers import DeepseekOcr2Config

    tokenizer = processor.tokenizer
    size = processor.image_processor.size["height"]
    vision = {
        "sam_config": {
            "hidden_size": 16,
            "output_channels": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": 2,
            "window_size": 0,
            "global_attn_indexes": [0],
            "downsample_channels": [16, hidden_size],
        },
        "encoder_config": {
            "hidden_size": hidden_size,  # must equal the SAM neck's last downsample channel count
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
        },
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        # Like the real model: a dense first layer, then mixture-of-experts layers with shared experts.
        "mlp_layer_types": ["dense"] + ["sparse"] * (num_layers - 1),
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": hidden_size // 2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return DeepseekOcr2Config(vision_config=vision, text_config=text, image_token_id=processor.image_token_id)


TINY_SETTINGS = Ocr2Settings(min_patches=1, max_patches=2, max_new_tokens=16)


# ---------------------------------------------------------------------------------------------- collator


class DeepseekOcr2Collator:
    """(image, text) pairs -> model inputs: processor views, `<image>` expansion, prompt masked out of the labels."""

    def __init__(self, processor, settings: Ocr2Settings | None = None):
        self.processor = processor
        self.settings = settings or Ocr2Settings()
        self.tokenizer = processor.tokenizer
        if self.tokenizer.pad_token_id is None or self.tokenizer.eos_token_id is None:
            raise ModelError("the tokenizer needs pad and eos tokens for training; set tokenizer.pad_token / eos_token")

    def prompt_inputs(self, image: Image.Image) -> dict:
        """The processor's own encoding of one image and the prompt (image tokens expanded as it does)."""
        return self.processor(
            images=[image], text=[self.settings.prompt], return_tensors="pt", **self.settings.images_kwargs()
        )

    def target_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(normalize(text), add_special_tokens=False)["input_ids"]
        return ids[: self.settings.max_target_tokens - 1] + [self.tokenizer.eos_token_id]

    def __call__(self, samples: Sequence[tuple[Image.Image, str]]) -> dict:
        rows, globals_, locals_, counts = [], [], [], []
        for image, text in samples:
            enc = self.prompt_inputs(as_rgb(image))
            prompt = enc["input_ids"][0].tolist()
            target = self.target_ids(text)
            rows.append((prompt + target, [IGNORE_INDEX] * len(prompt) + target))
            globals_.append(enc["pixel_values"])
            counts.append(int(enc["num_local_patches"][0]))
            if "pixel_values_local" in enc:
                locals_.append(enc["pixel_values_local"])
        batch = {
            **pad_batch(rows, self.tokenizer.pad_token_id),
            "pixel_values": torch.cat(globals_),
            "num_local_patches": torch.tensor(counts),
        }
        if locals_:
            batch["pixel_values_local"] = torch.cat(locals_)
        return batch


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


# ---------------------------------------------------------------------------------------------- recognizer


class DeepseekOcr2Recognizer(Recognizer):
    """DeepSeek-OCR-2 reading line images with a loop guard and token-probability confidences."""

    backend = BACKEND

    def __init__(self, model, processor, settings: Ocr2Settings | None = None):
        self.model = model
        self.processor = processor
        self.settings = settings or Ocr2Settings()
        processor.tokenizer.padding_side = "left"  # batched generation needs the prompts right-aligned

    @classmethod
    def from_config(cls, config, processor, settings: Ocr2Settings | None = None, seed: int = 0):
        """Randomly initialised weights (tests, smoke runs)."""
        from transformers import DeepseekOcr2ForConditionalGeneration

        torch.manual_seed(seed)
        return cls(DeepseekOcr2ForConditionalGeneration(config).eval(), processor, settings)

    @classmethod
    def tiny(cls, texts: Iterable[str] = (), seed: int = 0) -> "DeepseekOcr2Recognizer":
        """A random tiny recognizer with an offline tokenizer trained on `texts`."""
        processor = tiny_processor(texts)
        return cls.from_config(tiny_config(processor), processor, TINY_SETTINGS, seed=seed)

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path = DEFAULT_MODEL,
        device: str = "auto",
        dtype: str | None = None,
        *,
        local_files_only: bool | None = None,
        settings: Ocr2Settings | None = None,
    ) -> "DeepseekOcr2Recognizer":
        """Load a deepseek_ocr2 checkpoint from a local directory or the hub (dtype: float32/float16/bfloat16/auto)."""
        from transformers import AutoProcessor, DeepseekOcr2ForConditionalGeneration

        device = resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, device)
        source, config_file = _locate(str(path_or_hub_id), local_files_only)
        model_type = json.loads(Path(config_file).read_text(encoding="utf-8")).get("model_type")
        if model_type != "deepseek_ocr2":
            raise ModelError(
                f"{source!r} holds a {model_type!r} checkpoint, not deepseek_ocr2 (deepseek-ai's own repo is remote "
                f"code); use {DEFAULT_MODEL!r}, its transformers conversion, or the unsloth backend for v1"
            )
        kwargs = {"local_files_only": bool(local_files_only)}
        model = DeepseekOcr2ForConditionalGeneration.from_pretrained(source, dtype=torch_dtype, **kwargs)
        processor = AutoProcessor.from_pretrained(source, **kwargs)
        if settings is None:
            settings = _read_settings(source)
        return cls(model.to(device).eval(), processor, settings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.base_model.parameters()).dtype

    @property
    def base_model(self):
        """The transformers model under any peft wrapper."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def to(self, device: str) -> "DeepseekOcr2Recognizer":
        self.model.to(resolve_device(device))
        return self

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def lora_target_modules(self) -> list[str]:
        """Every language-model attention/MLP projection, by full name: the vision tower stays frozen."""
        return [
            name
            for name, module in self.base_model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and ".language_model." in f".{name}"
            and name.rsplit(".", 1)[-1] in _LM_TARGETS
        ]

    def save(self, path: str | Path, dtype: str | None = None) -> Path:
        """Weights (safetensors, optionally cast to `dtype`), processor files and the recognizer settings."""
        if self.model is not self.base_model:
            raise ModelError("the model carries unmerged LoRA adapters; use merge_and_save() or save_adapters()")
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        model, state, kept = self.model, None, self.model.config.dtype
        if dtype is not None:
            target = _DTYPES[_check_dtype(dtype)]
            state = {k: v.to(target) if v.is_floating_point() else v for k, v in model.state_dict().items()}
            model.config.dtype = target  # config.json tells loaders (dtype="auto") what the file holds
        try:
            model.save_pretrained(out, state_dict=state)
        finally:
            model.config.dtype = kept
        self.processor.save_pretrained(out)
        _write_settings(out, self.settings)
        return out

    def recognize(self, images: Sequence[Image.Image], batch_size: int = 8) -> list[Recognition]:
        results: list[Recognition | None] = [None] * len(images)
        ready = []
        for index, image in enumerate(images):
            try:
                ready.append((index, as_rgb(image)))
            except Exception as exc:  # one bad image gives one error row, never a crash
                results[index] = Recognition(text="", confidence=0.0, error=one_line(exc))
        for chunk in batched(ready, max(1, batch_size)):
            try:
                outs = self._generate([image for _, image in chunk])
            except Exception:  # read the batch one by one: only the image that broke it gets an error row
                outs = [_failed(image, self._generate) for _, image in chunk]
            for (index, _), out in zip(chunk, outs):
                results[index] = out
        return results

    @torch.inference_mode()
    def _generate(self, images: list[Image.Image]) -> list[Recognition]:
        s = self.settings
        tok = self.processor.tokenizer
        enc = self.processor(
            images=images, text=[s.prompt] * len(images), return_tensors="pt", padding=True, **s.images_kwargs()
        )
        inputs = to_device(dict(enc), self.device, self.dtype)
        self.model.eval()
        out = self.model.generate(
            **inputs,
            max_new_tokens=s.max_new_tokens,
            do_sample=False,
            num_beams=1,
            no_repeat_ngram_size=s.no_repeat_ngram_size,
            repetition_penalty=s.repetition_penalty,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        new = out.sequences[:, inputs["input_ids"].shape[1] :]
        logits = torch.stack(out.logits, dim=1).float()[:, : new.shape[1]]
        # Raw (unpenalised) logits: the model's own belief in each token it emitted.
        probs = logits.log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1).exp()
        return [
            recognition_from_tokens(tok, ids.tolist(), p.tolist(), s.loop_max_repeats, s.loop_min_chars)
            for ids, p in zip(new, probs)
        ]


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


def _failed(image, generate) -> Recognition:
    try:
        return generate([image])[0]
    except Exception as exc:
        return Recognition(text="", confidence=0.0, error=one_line(exc))


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


def one_line(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


def _check_dtype(dtype: str) -> str:
    if dtype not in _DTYPES:
        raise ModelError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    return dtype


def _resolve_dtype(dtype: str | None, device: str):
    if dtype is None:  # bf16 halves memory on GPUs; CPUs compute fp32 fastest and exactly
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype == "auto":
        return "auto"
    return _DTYPES[_check_dtype(dtype)]


def _locate(source: str, local_files_only: bool | None) -> tuple[str, str]:
    """(where to load from, its config.json on disk); ModelNotFoundError in one line otherwise."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"directory {str(path)!r} has no config.json; pass a model directory written by save()/finetune "
                f"or a hub id like {DEFAULT_MODEL!r}"
            )
        return str(path), str(path / "config.json")
    looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None and not source.startswith(".")
    if not looks_like_hub_id:
        raise ModelNotFoundError(
            f"no DeepSeek-OCR-2 model directory at {source!r}; pass an existing directory holding config.json "
            f"and *.safetensors, or a hub id like {DEFAULT_MODEL!r}"
        )
    from huggingface_hub import hf_hub_download

    try:
        config_file = hf_hub_download(source, "config.json", local_files_only=bool(local_files_only))
    except Exception as exc:
        raise ModelNotFoundError(
            f"DeepSeek-OCR-2 model {source!r} not found: no such local directory, and the hub "
            f"{'was not asked (local_files_only)' if local_files_only else 'could not provide it'} "
            f"[{one_line(exc)}]; fix: pass a local model directory, or download {source!r} where the hub is reachable"
        ) from None
    return source, config_file


def _write_settings(out: Path, settings: Ocr2Settings) -> None:
    payload = {"backend": BACKEND, "settings": asdict(settings)}
    (out / SETTINGS_FILE).write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")


def _read_settings(source: str) -> Ocr2Settings:
    path = Path(source) / SETTINGS_FILE
    if not path.is_file():  # a plain transformers checkpoint (or a hub id): the defaults
        return Ocr2Settings()
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("backend") != BACKEND:
        raise ModelError(f"{path} names backend {payload.get('backend')!r}, not {BACKEND!r}")
    return Ocr2Settings.from_dict(payload.get("settings", {}))


# ---------------------------------------------------------------------------------------------- LoRA


@dataclass
class FinetuneResult:
    """What a LoRA run did."""

    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trainable_parameters: int = 0
    total_parameters: int = 0


def attach_lora(recognizer: DeepseekOcr2Recognizer, lora: LoraSettings | None = None, gradient_checkpointing=False):
    """Wrap the recognizer's model in peft LoRA adapters (kept as they are when it already has some)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(recognizer.model, PeftModel):
        for name, param in recognizer.model.named_parameters():
            param.requires_grad = "lora_" in name
        return recognizer.model
    lora = lora or LoraSettings()
    base = recognizer.model
    if gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules or recognizer.lora_target_modules,
        modules_to_save=lora.modules_to_save,
        bias="none",
    )
    recognizer.model = get_peft_model(base, config)
    return recognizer.model


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


def finetune(
    recognizer: DeepseekOcr2Recognizer,
    samples: Sequence[tuple[Image.Image, str]],
    lora: LoraSettings | None = None,
    train: TrainConfig | None = None,
    *,
    micro_batch_size: int = 4,
    gradient_checkpointing: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    """LoRA fine-tune on (image, text) pairs with AdamW; the recognizer keeps the adapters (see merge_and_save)."""
    train = train or TrainConfig()
    if not samples:
        raise ModelError("finetune got no samples; pass (PIL image, text) pairs")
    device = resolve_device(train.device)
    recognizer.to(device)
    if gradient_checkpointing is None:
        gradient_checkpointing = device.startswith("cuda")  # long image-token sequences; CPU runs are tiny
    torch.manual_seed(train.seed)
    model = attach_lora(recognizer, lora, gradient_checkpointing)
    collator = DeepseekOcr2Collator(recognizer.processor, recognizer.settings)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)
    per_epoch = math.ceil(len(samples) / train.batch_size)
    total_steps = train.max_steps or train.epochs * per_epoch
    warmup = max(1, total_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.1, (total_steps - s) / max(1, total_steps - warmup)))
    )
    rng = random.Random(train.seed)
    order = list(range(len(samples)))
    result = FinetuneResult(steps=0, trainable_parameters=sum(p.numel() for p in params))
    result.total_parameters = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    while result.steps < total_steps:
        rng.shuffle(order)
        for start in range(0, len(order), train.batch_size):
            chosen = [samples[i] for i in order[start : start + train.batch_size]]
            micro = [collator(part) for part in batched(chosen, max(1, micro_batch_size))]
            loss = lora_train_step(model, micro, optimizer)
            schedule.step()
            result.steps += 1
            result.losses.append(loss)
            if on_step:
                on_step(result.steps, loss)
            if train.checkpoint_dir and result.steps % train.checkpoint_every == 0:
                save_adapters(recognizer, Path(train.checkpoint_dir) / "adapter")
            if result.steps >= total_steps:
                break
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


def save_adapters(recognizer: DeepseekOcr2Recognizer, out_dir: str | Path) -> Path:
    """adapter_model.safetensors + adapter_config.json (+ recognizer settings) for `load_adapters`."""
    from peft import PeftModel

    if not isinstance(recognizer.model, PeftModel):
        raise ModelError("the recognizer has no LoRA adapters to save; run finetune() or attach_lora() first")
    out = Path(out_dir)
    recognizer.model.save_pretrained(out, safe_serialization=True)
    _write_settings(out, recognizer.settings)
    return out


def load_adapters(recognizer: DeepseekOcr2Recognizer, adapter_dir: str | Path, trainable: bool = False):
    """Put LoRA adapters written by `save_adapters` on the recognizer's base model."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file() or not (path / "adapter_model.safetensors").is_file():
        raise ModelNotFoundError(
            f"no adapter_config.json + adapter_model.safetensors in {str(path)!r}; "
            "pass a directory written by save_adapters"
        )
    config = LoraConfig.from_pretrained(path)
    config.inference_mode = not trainable
    model = get_peft_model(recognizer.base_model, config)
    saved = load_file(path / "adapter_model.safetensors")
    # peft 0.21's own loader re-applies transformers' deepseek_ocr2 renaming to names that are already converted
    # ("language_model.layers" -> "language_model.language_model.layers") and silently drops every adapter weight,
    # so the saved names are matched to the model's here.
    own = {_saved_name(k): k for k in model.state_dict() if "lora_" in k or ".modules_to_save.default." in k}
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or unexpected:
        raise ModelError(
            f"adapters in {str(path)!r} do not fit this model: {len(missing)} missing (e.g. {missing[:1]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:1]}); load the base model they were trained on"
        )
    model.load_state_dict({own[k]: v for k, v in saved.items()}, strict=False)
    recognizer.model = model
    return model


def _saved_name(key: str) -> str:
    key = re.sub(r"\.(lora_[A-Za-z_]+)\.default(?=\.|$)", r".\1", key)
    return key.replace(".modules_to_save.default.", ".")


def merge_and_save(recognizer: DeepseekOcr2Recognizer, out_dir: str | Path, dtype: str = "bfloat16") -> Path:
    """Fold the LoRA weights into the base model and write a plain model directory `from_pretrained` loads."""
    from peft import PeftModel

    _check_dtype(dtype)
    if isinstance(recognizer.model, PeftModel):
        recognizer.model = recognizer.model.merge_and_unload()
    return recognizer.save(out_dir, dtype=dtype)
