"""peft LoRA on the compact recognizer: apply, train, save adapters, reload, merge; merged == adapted."""

from __future__ import annotations

import pytest
import torch

from ocr_assets.errors import ModelError
from ocr_assets.models.base import TrainConfig
from ocr_assets.models.compact import CompactOCRModel, CompactRecognizer
from ocr_assets.models.compact.recognizer import collate_lines, prepare_line
from ocr_assets.models.compact.train import CompactTrainOptions, add_missing_characters, train_compact
from ocr_assets.settings import LoraSettings
from ocr_assets.training.lora import apply_lora, load_adapters, merge_and_save, save_adapters, trainable_parameters
from ocr_assets_tests.test_compact_model import render_line, tiny_model, word_lines


def _logits(model: torch.nn.Module, pixels: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(pixel_values=pixels, widths=widths).logits


def test_lora_fine_tune_with_a_new_character_saves_reloads_and_merges(tmp_path):
    base_lines = word_lines(16, seed=20)
    base_model = tiny_model(sorted({ch for _, t in base_lines for ch in t}), seed=21)
    base_model.save_pretrained(tmp_path / "base")
    before = {k: v.clone() for k, v in base_model.state_dict().items()}

    # The book to adapt to has a character the base model has no label for ("ة" is not in WORDS).
    book = [(render_line(text + "ة"), text + "ة") for _, text in word_lines(24, seed=22)]
    assert add_missing_characters(base_model, [t for _, t in book]) == ["ة"]
    rec = CompactRecognizer(base_model, device="cpu")
    peft_model = apply_lora(
        base_model, LoraSettings(rank=4, alpha=8, modules_to_save=["classifier"]), rec.lora_target_modules
    )
    trained, total = trainable_parameters(peft_model)
    assert 0 < trained < 0.5 * total

    result = train_compact(
        peft_model,
        book,
        None,
        TrainConfig(epochs=1, batch_size=8, learning_rate=5e-3, max_steps=3),
        options=CompactTrainOptions(log_every=0),
    )
    assert result.steps == 3 and result.codec.alphabet[-1] == "ة"
    # Only adapters and the saved classifier moved: base weights and BatchNorm statistics are untouched.
    base_now = peft_model.get_base_model().state_dict()
    for name, value in before.items():
        if name.startswith("classifier"):
            continue
        key = (
            name
            if name in base_now
            else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        )
        torch.testing.assert_close(base_now[key], value, msg=f"{name} changed under LoRA")
    lora_b = [v for k, v in peft_model.state_dict().items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means the adapters trained

    pixels, widths = collate_lines([prepare_line(im, base_model.config.input_height) for im, _ in book[:6]])
    adapted = _logits(peft_model, pixels, widths)
    save_adapters(peft_model, tmp_path / "adapters")
    assert (tmp_path / "adapters" / "adapter_model.safetensors").is_file()

    fresh = CompactOCRModel.from_pretrained(tmp_path / "base")
    reloaded = load_adapters(fresh, tmp_path / "adapters")
    assert reloaded.get_base_model().config.alphabet[-1] == "ة"
    torch.testing.assert_close(_logits(reloaded, pixels, widths), adapted)

    merged = merge_and_save(reloaded, tmp_path / "merged", dtype="float32")
    assert type(merged) is CompactOCRModel
    torch.testing.assert_close(_logits(merged, pixels, widths), adapted, atol=1e-4, rtol=1e-4)
    from_disk = CompactOCRModel.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(_logits(from_disk, pixels, widths), adapted, atol=1e-4, rtol=1e-4)
    # The merged folder is a plain recognizer model, usable as --model.
    assert CompactRecognizer.load(tmp_path / "merged", device="cpu").codec.alphabet[-1] == "ة"


def test_merge_can_save_half_precision(tmp_path):
    model = tiny_model(list("ابت"))
    peft_model = apply_lora(model, LoraSettings(rank=2), model.default_lora_targets)
    merged = merge_and_save(peft_model, tmp_path / "m16")
    assert merged.dtype == torch.float32
    assert CompactOCRModel.from_pretrained(tmp_path / "m16").dtype == torch.float16


def test_apply_lora_names_an_unknown_target_and_the_fix():
    model = tiny_model(list("ابت"))
    with pytest.raises(ModelError, match=r"\['query'\] name no module"):
        apply_lora(model, LoraSettings(target_modules=["query"]))


def test_adapters_for_another_alphabet_are_refused(tmp_path):
    model = tiny_model(list("ابت"))
    peft_model = apply_lora(model, LoraSettings(rank=2, modules_to_save=["classifier"]))
    save_adapters(peft_model, tmp_path / "ad")
    with pytest.raises(ModelError, match="does not extend"):
        load_adapters(tiny_model(list("جدت")), tmp_path / "ad")
