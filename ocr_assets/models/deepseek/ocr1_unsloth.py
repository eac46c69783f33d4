"""DeepSeek-OCR v1 through Unsloth's FastVisionModel: remote code, CUDA only, an optional extra."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, ImageOps

from ocr_assets.errors import ModelError, ModelNotFoundError, RemoteCodeNotAllowedError
from ocr_assets.models.base import Recognition, Recognizer, TrainConfig
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

DEFAULT_MODEL = "unsloth/DeepSeek-OCR"
PROMPT = "<image>\nFree OCR."
BACKEND = "deepseek_ocr1_unsloth"
SETTINGS_FILE = "ocr_assets_recognizer.json"
GPU_ONLY = "GPU only: install the `unsloth` extra on a CUDA machine (pip install 'ocr_assets[unsloth]')"
# The seed plan's LoRA targets: every attention and MLP projection (Unsloth picks language/vision by flags).
SEED_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_MEAN = (0.5, 0.5, 0.5)  # DeepSeek-OCR normalises to [-1, 1] and pads with the mean grey


class UnslothUnavailableError(ModelError):
    """No CUDA device or no unsloth package here."""


def require_unsloth():
    """Import unsloth lazily; raise one clear error where it cannot run (no CUDA, or not installed)."""
    import torch

    if not torch.cuda.is_available():
        raise UnslothUnavailableError(f"{GPU_ONLY}; torch {torch.__version__} sees no CUDA device here")
    try:
        import unsloth
    except ImportError as exc:
        raise UnslothUnavailableError(f"{GPU_ONLY}; importing unsloth failed: {one_line(exc)}") from None
    return unsloth


@dataclass
class Ocr1Settings:
    """DeepSeek-OCR v1 views ("Gundam": 1024 global + 640 tiles) and decoding; saved beside the weights."""

    prompt: str = PROMPT
    base_size: int = 1024
    image_size: int = 640
    crop_mode: bool = True
    min_crops: int = 2
    max_crops: int = 9
    max_new_tokens: int = 256
    no_repeat_ngram_size: int = 20
    repetition_penalty: float = 1.0
    loop_max_repeats: int = 3
    loop_min_chars: int = 12
    max_target_tokens: int = 512

    def __post_init__(self):
        if "<image>" not in self.prompt:
            raise ModelError(f"prompt {self.prompt!r} has no '<image>' placeholder; use e.g. {PROMPT!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "Ocr1Settings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown recognizer settings {unknown}; allowed: {sorted(known)}")
        return cls(**data)


class DeepseekOcr1Collator:
    """The seed plan's collator: global view + tiles, `<image>` expanded to the v1 token layout, prompt masked."""

    patch_size = 16
    downsample_ratio = 4

    def __init__(self, tokenizer, settings: Ocr1Settings | None = None, dtype=None):
        import torch

        self.tokenizer = tokenizer
        self.settings = settings or Ocr1Settings()
        self.dtype = dtype or torch.bfloat16
        self.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
        if self.tokenizer.pad_token_id is None or self.tokenizer.eos_token_id is None:
            raise ModelError("the tokenizer needs pad and eos tokens; set tokenizer.pad_token / eos_token")

    def _tensor(self, image: Image.Image):
        import numpy as np
        import torch

        array = torch.from_numpy(np.asarray(image, dtype="float32") / 255.0).permute(2, 0, 1)
        return ((array - 0.5) / 0.5).to(self.dtype)

    def views(self, image: Image.Image):
        """(global view, tiles, (columns, rows)) for one RGB image."""
        from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import get_optimal_tiled_canvas

        s = self.settings
        grey = tuple(int(m * 255) for m in _MEAN)
        global_view = self._tensor(ImageOps.pad(image, (s.base_size, s.base_size), color=grey))
        if not s.crop_mode or (image.width <= s.image_size and image.height <= s.image_size):
            return global_view, [], (1, 1)
        # Same closest-aspect-ratio grid rule as DeepSeek's dynamic_preprocess (InternVL style).
        cols, rows = get_optimal_tiled_canvas(
            (image.height, image.width), (s.image_size, s.image_size), s.min_crops, s.max_crops
        )
        canvas = image.resize((cols * s.image_size, rows * s.image_size), Image.BICUBIC)
        side = s.image_size
        tiles = [
            self._tensor(canvas.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)))
            for r in range(rows)
            for c in range(cols)
        ]
        return global_view, tiles, (cols, rows)

    def image_token_count(self, grid: tuple[int, int]) -> int:
        """v1 layout: one newline token per query row, a view separator, then the tiles' rows."""
        s = self.settings
        base = math.ceil(s.base_size / self.patch_size / self.downsample_ratio)
        count = (base + 1) * base + 1
        cols, rows = grid
        if cols > 1 or rows > 1:
            local = math.ceil(s.image_size / self.patch_size / self.downsample_ratio)
            count += (local * cols + 1) * (local * rows)
        return count

    def encode_prompt(self, image: Image.Image) -> dict:
        """Prompt ids with the image expanded, its mask, and the views for one image."""
        global_view, tiles, grid = self.views(as_rgb(image))
        before, after = self.settings.prompt.split("<image>", 1)
        enc = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
        n_image = self.image_token_count(grid)
        ids = [self.tokenizer.bos_token_id] + enc(before) + [self.image_token_id] * n_image + enc(after)
        mask = [False] * (1 + len(enc(before))) + [True] * n_image + [False] * len(enc(after))
        return {"ids": ids, "image_mask": mask, "global": global_view, "tiles": tiles, "grid": grid}

    def _images_entry(self, prompt: dict):
        import torch

        s = self.settings
        tiles = torch.stack(prompt["tiles"]) if prompt["tiles"] else torch.zeros(1, 3, s.base_size, s.base_size)
        return (tiles.to(self.dtype), prompt["global"].unsqueeze(0))

    def __call__(self, samples: Sequence[tuple[Image.Image, str]]) -> dict:
        import torch

        rows, masks, images, grids = [], [], [], []
        for image, text in samples:
            prompt = self.encode_prompt(image)
            target = self.tokenizer(normalize(text), add_special_tokens=False)["input_ids"]
            target = target[: self.settings.max_target_tokens - 1] + [self.tokenizer.eos_token_id]
            rows.append((prompt["ids"] + target, [IGNORE_INDEX] * len(prompt["ids"]) + target))
            masks.append(prompt["image_mask"] + [False] * len(target))
            images.append(self._images_entry(prompt))
            grids.append(list(prompt["grid"]))
        batch = pad_batch(rows, self.tokenizer.pad_token_id)
        width = batch["input_ids"].shape[1]
        batch["images_seq_mask"] = torch.tensor([m + [False] * (width - len(m)) for m in masks])
        batch["images"] = images
        batch["images_spatial_crop"] = torch.tensor(grids)
        return batch


class UnslothDeepseekOcrRecognizer(Recognizer):
    """DeepSeek-OCR v1 (3B) loaded by Unsloth; LoRA through FastVisionModel.get_peft_model."""

    backend = BACKEND

    def __init__(self, model, tokenizer, settings: Ocr1Settings | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or Ocr1Settings()

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path = DEFAULT_MODEL,
        *,
        trust_remote_code: bool = False,
        load_in_4bit: bool = False,
        settings: Ocr1Settings | None = None,
    ) -> "UnslothDeepseekOcrRecognizer":
        """Load through FastVisionModel; runs the checkpoint's own code, so it needs trust_remote_code=True."""
        if trust_remote_code is not True:
            raise RemoteCodeNotAllowedError(
                f"DeepSeek-OCR v1 ({path_or_hub_id!r}) runs Python code shipped with the checkpoint; "
                "pass trust_remote_code=True if you trust its source"
            )
        require_unsloth()
        from transformers import AutoModel
        from unsloth import FastVisionModel

        source = str(path_or_hub_id)
        try:
            model, tokenizer = FastVisionModel.from_pretrained(
                source,
                load_in_4bit=load_in_4bit,
                auto_model=AutoModel,
                trust_remote_code=True,
                unsloth_force_compile=True,
                use_gradient_checkpointing="unsloth",
            )
        except OSError as exc:
            raise ModelNotFoundError(
                f"DeepSeek-OCR v1 model {source!r} not found [{one_line(exc)}]; pass a local copy of "
                f"{DEFAULT_MODEL!r} or run where the hub is reachable"
            ) from None
        if settings is None:
            settings = _read_settings(Path(source))
        return cls(model, tokenizer, settings)

    @property
    def lora_target_modules(self) -> list[str]:
        return list(SEED_TARGETS)

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def add_lora(self, lora: LoraSettings | None = None, finetune_vision_layers: bool = False, seed: int = 3407):
        """The seed plan's adapters (r=16 on every projection); the vision tower stays frozen unless asked."""
        from unsloth import FastVisionModel

        from ocr_assets.training.lora import lora_kwargs

        lora = lora or LoraSettings()
        self.model = FastVisionModel.get_peft_model(
            self.model,
            **lora_kwargs(lora, lora.target_modules or self.lora_target_modules),
            random_state=seed,
            finetune_vision_layers=finetune_vision_layers,
            finetune_language_layers=True,
            finetune_attention_modules=True,
            finetune_mlp_modules=True,
        )
        return self.model

    def recognize(self, images: Sequence[Image.Image], batch_size: int = 1) -> list[Recognition]:
        """One image per generate call: the remote code's batched image masks are not relied on."""
        from unsloth import FastVisionModel

        FastVisionModel.for_inference(self.model)
        collator = DeepseekOcr1Collator(self.tokenizer, self.settings, self.model.dtype)
        results = []
        for image in images:
            try:
                results.append(self._generate(collator, image))
            except Exception as exc:  # one bad image gives one error row
                results.append(Recognition(text="", confidence=0.0, error=one_line(exc)))
        return results

    def _generate(self, collator: DeepseekOcr1Collator, image: Image.Image) -> Recognition:
        import torch

        s = self.settings
        prompt = collator.encode_prompt(image)
        device = next(self.model.parameters()).device
        inputs = to_device(
            {
                "input_ids": torch.tensor([prompt["ids"]]),
                "images": [collator._images_entry(prompt)],
                "images_seq_mask": torch.tensor([prompt["image_mask"]]),
                "images_spatial_crop": torch.tensor([list(prompt["grid"])]),
            },
            device,
            self.model.dtype,
        )
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=s.max_new_tokens,
                do_sample=False,
                no_repeat_ngram_size=s.no_repeat_ngram_size,
                repetition_penalty=s.repetition_penalty,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                output_logits=True,
                return_dict_in_generate=True,
                use_cache=True,
            )
        new = out.sequences[0, inputs["input_ids"].shape[1] :]
        logits = torch.stack(out.logits, dim=1)[0, : new.shape[0]].float()
        probs = logits.log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1).exp()
        return recognition_from_tokens(
            self.tokenizer, new.tolist(), probs.tolist(), s.loop_max_repeats, s.loop_min_chars
        )

    def save(self, path: str | Path) -> Path:
        """Merged 16-bit weights when adapters are on (Unsloth's merged_16bit), else the model as it is."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        if hasattr(self.model, "save_pretrained_merged"):
            self.model.save_pretrained_merged(str(out), self.tokenizer, save_method="merged_16bit")
        else:
            self.model.save_pretrained(out)
            self.tokenizer.save_pretrained(out)
        _write_settings(out, self.settings)
        return out


def finetune(
    recognizer: UnslothDeepseekOcrRecognizer,
    samples: Sequence[tuple[Image.Image, str]],
    lora: LoraSettings | None = None,
    train: TrainConfig | None = None,
    *,
    micro_batch_size: int = 2,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> FinetuneResult:
    """LoRA fine-tune through the shared loop of common.py; Unsloth supplies adapters and gradient checkpointing."""
    from unsloth import FastVisionModel

    train = train or TrainConfig()
    if not samples:
        raise ModelError("finetune got no samples; pass (PIL image, text) pairs")
    if not hasattr(recognizer.model, "peft_config"):
        recognizer.add_lora(lora, seed=train.seed)
    model = recognizer.model
    FastVisionModel.for_training(model)
    collator = DeepseekOcr1Collator(recognizer.tokenizer, recognizer.settings, model.dtype)
    try:
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
    finally:
        FastVisionModel.for_inference(model)


def save_adapters(recognizer: UnslothDeepseekOcrRecognizer, out_dir: str | Path) -> Path:
    """The LoRA adapters (safetensors + adapter_config.json) and the recognizer settings, for `merge_into`."""
    if not hasattr(recognizer.model, "peft_config"):
        raise ModelError("the recognizer has no LoRA adapters to save; run finetune() or add_lora() first")
    out = Path(out_dir)
    recognizer.model.save_pretrained(str(out), safe_serialization=True)
    _write_settings(out, recognizer.settings)
    return out


def merge_into(recognizer: UnslothDeepseekOcrRecognizer, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Put the adapters of `adapter_dir` on the loaded base model and save merged 16-bit weights to out_dir."""
    from peft import PeftModel

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"no adapter_config.json in {str(path)!r}; pass a directory written by save_adapters")
    recognizer.model = PeftModel.from_pretrained(recognizer.model, str(path))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(recognizer.model, "save_pretrained_merged"):  # Unsloth's own merge (patched onto its models)
        recognizer.model.save_pretrained_merged(str(out), recognizer.tokenizer, save_method="merged_16bit")
    else:
        import torch

        merged = recognizer.model.merge_and_unload()
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        merged.to(half).save_pretrained(out, safe_serialization=True)
        recognizer.tokenizer.save_pretrained(out)
        recognizer.model = merged
    _write_settings(out, recognizer.settings)
    return out


def _write_settings(out: Path, settings: Ocr1Settings) -> None:
    payload = {"backend": BACKEND, "settings": asdict(settings)}
    (out / SETTINGS_FILE).write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")


def _read_settings(source: Path) -> Ocr1Settings:
    path = source / SETTINGS_FILE
    if not path.is_file():
        return Ocr1Settings()
    payload = json.loads(path.read_text(encoding="utf-8"))
    if payload.get("backend") != BACKEND:
        raise ModelError(f"{path} names backend {payload.get('backend')!r}, not {BACKEND!r}")
    return Ocr1Settings.from_dict(payload.get("settings", {}))
