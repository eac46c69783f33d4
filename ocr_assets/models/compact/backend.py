"""The compact CTC recognizer as a backend: load, LoRA fine-tune (growing the alphabet when a book needs it), merge."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from ocr_assets.models.backends import Backend, OnEpoch, Samples, TrainReport
from ocr_assets.models.base import TrainConfig, peak_rss_mb

CACHED_LINE_VARIANTS = 16_000  # lines x variants the top_layers recipe caches (~0.75 GB of features)


class CompactBackend(Backend):
    """model_type `compact_ctc_ocr` (ocr_assets.models.compact): the platform's embedded default."""

    name = "compact"
    remote_code = False
    default_learning_rate = 2e-3

    def load(self, model_dir: Path, device: str = "auto", runtime: str | None = None):
        """ONNX Runtime on a CPU (the graph exported and cached on first use), torch otherwise; `runtime`
        (auto, onnx, onnx-int8, onnx-fp32, torch; None: see ocr_assets.models.compact.runtime) overrides."""
        from ocr_assets.models.compact.runtime import choose

        engine, precision = choose(runtime, device)
        if engine == "onnx":
            from ocr_assets.models.compact.onnx_reader import OnnxRecognizer

            return OnnxRecognizer.load(model_dir, precision=precision)
        from ocr_assets.models.compact.recognizer import CompactRecognizer

        return CompactRecognizer.load(model_dir, device=device, reading_only=True)

    def resume_point(self, checkpoint_dir: Path) -> dict | None:
        from ocr_assets.models.compact.train import checkpoint_progress

        return checkpoint_progress(checkpoint_dir)

    def finetune(self, base_dir: Path, train: Samples, val: Samples | None, settings, adapter_dir: Path,
                 on_epoch: OnEpoch | None = None) -> TrainReport:
        """Grow the alphabet by the book's new characters (their output rows then train in full), wrap the encoder
        in LoRA adapters, train them with CTC and save them to adapter_dir."""
        import torch

        from ocr_assets.models.compact.modeling import LORA_TARGETS, CompactOCRModel
        from ocr_assets.models.compact.train import (CompactTrainOptions, _base_model, add_missing_characters,
                                                     train_compact)
        from ocr_assets.training import lora

        start = time.perf_counter()
        model = CompactOCRModel.from_pretrained(base_dir, dtype=torch.float32)
        added = add_missing_characters(model, [text for _, text in train])
        saved_dropout = model.config.dropout
        if settings.model_dropout is not None:
            model.set_dropout(settings.model_dropout)
        top = min(settings.top_layers, len(model.blocks))
        variants = settings.feature_variants
        if top and len(train) * variants > CACHED_LINE_VARIANTS:
            # The cache holds ~46 KB per line and variant (90 frames x 256 x bf16): fewer variants for larger sets,
            # and past CACHED_LINE_VARIANTS lines LoRA over the whole encoder, which needs no cache.
            variants = max(1, CACHED_LINE_VARIANTS // len(train))
            if len(train) > CACHED_LINE_VARIANTS:
                logging.getLogger(__name__).info("%d lines: LoRA over every block (top_layers needs a feature "
                                                 "cache; it is kept for up to %d lines)", len(train),
                                                 CACHED_LINE_VARIANTS)
                top = 0
        if top:
            # The top blocks get adapters, the head trains in full; everything below is frozen and cached.
            head = ["final_norm", "frame_split", "split_norm", "classifier"]
            lora_settings = settings.lora([m for m in head if getattr(model, m, None) is not None],
                                          list(range(len(model.blocks) - top, len(model.blocks))), "blocks")
        else:
            lora_settings = settings.lora(["classifier"] if added else None)
        peft_model = lora.apply_lora(model, lora_settings, default_targets=LORA_TARGETS)
        trainable, total = lora.trainable_parameters(peft_model)
        config = TrainConfig.for_finetune(settings, len(train), self.default_learning_rate, weight_decay=0.0,
                                          checkpoint_dir=settings.checkpoint_dir)
        result = train_compact(peft_model, train, val or None, config, on_epoch=on_epoch,
                               options=CompactTrainOptions(augment=True, top_layers=top,
                                                           feature_variants=variants))
        _base_model(result.model).set_dropout(saved_dropout)  # the saved config keeps the model's own dropout
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        lora.save_adapters(result.model, adapter_dir)
        extra = {"epochs": len(result.history) or config.epochs, "epochs_planned": config.epochs,  # patience
                 "top_layers": top, "feature_variants": variants if top else 0,
                 "learning_rate": config.learning_rate, "trainable_params": trainable,
                 "total_params": total, "added_characters": "".join(added), "best_val_cer": result.best_val_cer,
                 **result.codec_stats.as_dict(10)}
        return TrainReport(time.perf_counter() - start, peak_rss_mb(), result.history, extra, result.val_readings)

    def merge(self, base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float16") -> Path:
        import torch

        from ocr_assets.models.compact.modeling import CompactOCRModel
        from ocr_assets.training import lora

        if out_dir.exists():
            shutil.rmtree(out_dir)
        base = CompactOCRModel.from_pretrained(base_dir, dtype=torch.float32)
        lora.merge_and_save(lora.load_adapters(base, adapter_dir), out_dir, dtype=dtype)
        return out_dir
