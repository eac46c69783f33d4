"""The CPU adaptation recipe (FinetuneSettings.top_layers): the top encoder blocks and the head train on cached
features of the frozen lower part. What must hold: the cache is exactly the lower part of forward, a fine-tune
moves only the top blocks and the head, and the adapters merge."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from ocr_assets.models.compact import CompactOCRModel, CompactRecognizer
from ocr_assets.models.compact.codec import Codec
from ocr_assets.models.compact.train import (
    CachedFeatures,
    _prepare_split,
    _TopOnFeatures,
    collate_batch,
    collate_features,
)
from ocr_assets.settings import FinetuneSettings
from ocr_assets.training.finetune import lora_finetune, merge_adapters
from ocr_assets_tests.test_compact_model import word_lines
from ocr_assets_tests.tiny_models import TINY_COMPACT, tiny_compact


def _pairs_table(lines):
    import io

    import pyarrow as pa

    blobs = []
    for image, _ in lines:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        blobs.append(buf.getvalue())
    return pa.table({"image": blobs, "text": [t for _, t in lines]})


def test_cached_features_then_top_blocks_give_the_models_own_loss_and_logits():
    lines = word_lines(12, seed=3)
    model = tiny_compact(sorted({ch for _, t in lines for ch in t}), seed=4)
    assert len(model.blocks) == TINY_COMPACT["num_layers"] == 2
    model.set_dropout(0.0)
    model.eval()
    codec = Codec.from_config(model.config)
    dataset, _, _, _ = _prepare_split([(im, t) for im, t in lines], codec, model.config, False, 0)
    cached = CachedFeatures(model, dataset, split=1, variants=1, device="cpu", amp=None, seed=0)
    assert len(cached) == len(dataset) and cached.widths == [f.shape[0] for f in cached.features[0]]

    idx = list(range(len(dataset)))
    images = collate_batch([dataset[i] for i in idx])
    with torch.no_grad():
        full = model(**images)
        top = _TopOnFeatures(model, 1).eval()(**collate_features([cached[(i, 0)] for i in idx]))
    # Features are cached in bfloat16 (half the memory); the top block and the head see them rounded.
    torch.testing.assert_close(top.loss, full.loss, rtol=0.02, atol=0.02)
    for j, n in enumerate(full.output_lengths.tolist()):
        assert int(top.output_lengths[j]) == n
        assert (top.logits[j, :n].argmax(-1) == full.logits[j, :n].argmax(-1)).float().mean() > 0.97


def test_top_layers_fine_tune_moves_only_the_top_blocks_and_the_head(tmp_path):
    base_lines = word_lines(24, seed=10)
    alphabet = sorted({ch for _, t in base_lines for ch in t})
    base = tiny_compact(alphabet, seed=11)
    CompactRecognizer(base, device="cpu").save(tmp_path / "base", dtype="float32")
    book = word_lines(48, seed=12)
    settings = FinetuneSettings(epochs=12, batch_size=8, learning_rate=5e-3, device="cpu", top_layers=1,
                                feature_variants=2, conventions=False)
    report = lora_finetune(tmp_path / "base", _pairs_table(book[:40]), None, settings, tmp_path / "adapters")
    record = json.loads((tmp_path / "adapters" / "training.json").read_text())
    assert record["top_layers"] == 1
    losses = [h["train_loss"] for h in report.history]
    # It learned (from an untrained tiny base the loss falls 3.76 -> 2.72; the shipped model's accuracy gain with
    # this recipe is test_conventions.py's fine-tune test, which runs it by default).
    assert losses[-1] < 0.85 * losses[0], losses

    adapter = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert adapter["layers_to_transform"] == [1] and adapter["layers_pattern"] == "blocks"
    merge_adapters(tmp_path / "base", tmp_path / "adapters", tmp_path / "merged", dtype="float32")
    before = load_file(str(tmp_path / "base" / "model.safetensors"))
    after = load_file(str(tmp_path / "merged" / "model.safetensors"))
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved, "nothing trained"
    # Frozen: the convolutions (and their BatchNorm statistics), the input projection, the first block.
    assert not {k for k in moved if k.startswith(("frontend.", "input_proj.", "position_conv.", "blocks.0."))}, moved
    assert any(k.startswith("blocks.1.") for k in moved) and any(k.startswith("classifier.") for k in moved)

    merged = CompactRecognizer.load(tmp_path / "merged", device="cpu")
    assert isinstance(merged.model, CompactOCRModel) and merged.model.config.dropout == base.config.dropout
