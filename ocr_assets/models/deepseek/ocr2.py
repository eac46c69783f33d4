"""DeepSeek-OCR-2 through transformers' native classes: recognizer, collator, LoRA fine-tune and merge.

The parts shared with DeepSeek-OCR v1 (batching, decoding, loop guard, the LoRA loop) live in
`ocr_assets.models.deepseek.common`; the backend wrapper is `ocr_assets.models.deepseek.backend.Ocr2Backend`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ocr_assets.errors import ModelError, ModelNotFoundError
from ocr_assets.models.base import Recognition, Recognizer, TrainConfig, batched, resolve_device
from ocr_assets.models.deepseek.common import (
    IGNORE_INDEX,
    FinetuneResult,
    as_rgb,
    lora_training_loop,
    one_line,
    pad_batch,
    recognition_from_tokens,
    to_device,
)
from ocr_assets.settings import LoraSettings
from ocr_assets.text import normalize

# The transformers conversion of deepseek-ai/DeepSeek-OCR-2 (whose own repo is remote code, model_type deepseek_vl_v2).
DEFAULT_MODEL = "deepseek-community/DeepSeek-OCR-2"
PROMPT = "<image>\nFree OCR."
SETTINGS_FILE = "ocr_assets_recognizer.json"
BACKEND = "deepseek_ocr2"
# Special-token spellings of the real tokenizer (a test tokenizer reuses them so prompts read the same).
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


def _failed(image, generate) -> Recognition:
    try:
        return generate([image])[0]
    except Exception as exc:
        return Recognition(text="", confidence=0.0, error=one_line(exc))


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


def attach_lora(recognizer: DeepseekOcr2Recognizer, lora: LoraSettings | None = None, gradient_checkpointing=False):
    """Wrap the recognizer's model in peft LoRA adapters (kept as they are when it already has some)."""
    from peft import PeftModel, get_peft_model

    from ocr_assets.training.lora import lora_config

    if isinstance(recognizer.model, PeftModel):
        for name, param in recognizer.model.named_parameters():
            param.requires_grad = "lora_" in name
        return recognizer.model
    lora = lora or LoraSettings()
    base = recognizer.model
    if gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = lora.target_modules or recognizer.lora_target_modules
    recognizer.model = get_peft_model(base, lora_config(lora, targets))
    return recognizer.model


def finetune(
    recognizer: DeepseekOcr2Recognizer,
    samples: Sequence[tuple[Image.Image, str]],
    lora: LoraSettings | None = None,
    train: TrainConfig | None = None,
    *,
    micro_batch_size: int = 4,
    gradient_checkpointing: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> FinetuneResult:
    """LoRA fine-tune on (image, text) pairs (the shared loop of common.py); the recognizer keeps the adapters
    (see merge_and_save)."""
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
    return lora_training_loop(
        model,
        samples,
        collator,
        train,
        micro_batch_size=micro_batch_size,
        on_step=on_step,
        on_epoch=on_epoch,
        save_checkpoint=lambda: save_adapters(recognizer, Path(train.checkpoint_dir) / "adapter"),
    )


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
