"""peft LoRA for any recognizer's torch model: apply, save adapters (safetensors), reload, merge into a plain model.

The one place LoraSettings become adapter arguments: `lora_kwargs` (also what Unsloth's get_peft_model takes)
and `lora_config` (peft's LoraConfig from the same kwargs).

Backend-neutral: target modules come from LoraSettings, else the caller's default, else the model's
`default_lora_targets`. A model whose label set grew (compact: `extend_alphabet`) lists its output layer in
`modules_to_save`; the adapter folder then keeps the grown config (`base_config.json`) so reloading grows a fresh
base model the same way before the adapter weights go in.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ocr_assets.errors import ModelError
from ocr_assets.settings import LoraSettings

BASE_CONFIG = "base_config.json"


def lora_kwargs(settings: LoraSettings, targets: Sequence[str]) -> dict:
    """The adapter arguments for these settings, named as peft's LoraConfig and Unsloth's get_peft_model take them."""
    return {
        "r": settings.rank,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": list(targets),
        "modules_to_save": list(settings.modules_to_save) if settings.modules_to_save else None,
        "bias": "none",
        **({"layers_to_transform": list(settings.layers), "layers_pattern": settings.layers_pattern}
           if settings.layers else {}),
    }


def lora_config(settings: LoraSettings, targets: Sequence[str]) -> LoraConfig:
    """The peft LoraConfig for these settings (rank, alpha, dropout, targets, modules_to_save); LoraSettings
    validated rank and dropout when it was built."""
    return LoraConfig(**lora_kwargs(settings, targets))


def apply_lora(
    model: torch.nn.Module, settings: LoraSettings, default_targets: Sequence[str] | None = None
) -> PeftModel:
    """Wrap `model` in LoRA adapters; only adapter (and modules_to_save) weights stay trainable."""
    targets = settings.target_modules or default_targets or getattr(model, "default_lora_targets", None)
    if not targets:
        raise ModelError(
            f"no LoRA target modules for {type(model).__name__}: set LoraSettings.target_modules "
            "(e.g. ['q_proj', 'v_proj']) or pass the backend's lora_target_modules as default_targets"
        )
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ModelError(
            f"LoRA targets {missing} name no module of {type(model).__name__}; its modules include {sorted(names)[:20]}"
        )
    return get_peft_model(model, lora_config(settings, targets))


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def save_adapters(model: PeftModel, path: str | Path) -> Path:
    """adapter_model.safetensors + adapter_config.json, and the base config it was trained against."""
    if not isinstance(model, PeftModel):
        raise ModelError(f"save_adapters needs a peft model (from apply_lora); got {type(model).__name__}")
    path = Path(path)
    # A grown label set is carried by modules_to_save and base_config.json; peft's own guess (it compares the
    # vocab size with the base directory's config and then wants input embeddings, which a line recognizer has
    # none of) must not kick in.
    model.save_pretrained(path, safe_serialization=True, save_embedding_layers=False)
    base = model.get_base_model()
    if hasattr(base, "config") and hasattr(base.config, "to_dict"):
        (path / BASE_CONFIG).write_text(json.dumps(base.config.to_dict(), ensure_ascii=False, indent=1))
    return path


def _align_labels(base: torch.nn.Module, saved: dict) -> None:
    """Grow a fresh base model's alphabet to the one the adapters were trained with (same order)."""
    alphabet = getattr(getattr(base, "config", None), "alphabet", None)
    wanted = saved.get("alphabet")
    if alphabet is None or wanted is None or list(alphabet) == list(wanted):
        return
    if list(wanted[: len(alphabet)]) != list(alphabet) or not hasattr(base, "extend_alphabet"):
        raise ModelError(
            "the adapters were trained on a model whose alphabet does not extend this base model's; "
            "load them onto the base model they were trained from"
        )
    base.extend_alphabet(list(wanted[len(alphabet) :]))


def load_adapters(base: torch.nn.Module, path: str | Path, trainable: bool = False) -> PeftModel:
    """Attach saved adapters to a base model (growing its label set first when the adapters need it)."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"{path} has no adapter_config.json; pass a folder written by save_adapters")
    if (path / BASE_CONFIG).is_file():
        _align_labels(base, json.loads((path / BASE_CONFIG).read_text()))
    return PeftModel.from_pretrained(base, str(path), is_trainable=trainable)


def merge_and_save(model: PeftModel, path: str | Path, dtype: str | None = "float16") -> torch.nn.Module:
    """Fold the adapters into the base weights and save a plain model (save_pretrained) in `dtype`.

    Returns the merged model in its working precision; only the saved copy is cast.
    """
    if not isinstance(model, PeftModel):
        raise ModelError(
            f"merge_and_save needs a peft model (from apply_lora or load_adapters); got {type(model).__name__}"
        )
    if dtype not in (None, "float16", "bfloat16", "float32"):
        raise ModelError(f"dtype {dtype!r} is not one of float16, bfloat16, float32 or None (keep as is)")
    merged = model.merge_and_unload()
    to_save = copy.deepcopy(merged).to(getattr(torch, dtype)) if dtype else merged
    to_save.save_pretrained(Path(path))
    return merged
