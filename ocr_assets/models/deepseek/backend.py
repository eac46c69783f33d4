"""The DeepSeek backends: DeepSeek-OCR-2 through transformers' own classes, DeepSeek-OCR v1 through Unsloth.

v1 (model_type deepseek_vl_v2 / deepseek_ocr) loads Python code shipped with the checkpoint, so it is a
`remote_code` backend: `check_remote_code` refuses it unless the caller opted in (docs/ARCHITECTURE.md, "Backends").
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

from ocr_assets.models.backends import Backend, OnEpoch, Samples, TrainReport
from ocr_assets.models.base import TrainConfig, peak_rss_mb


def _images(samples: Samples):
    """(encoded image, text) -> (PIL image, text); the collators convert to RGB themselves."""
    from PIL import Image

    return [(Image.open(io.BytesIO(image)), text) for image, text in samples]


def _report(start: float, result, config: TrainConfig, backend: str) -> TrainReport:
    extra = {"backend": backend, "epochs": config.epochs, "learning_rate": config.learning_rate,
             "steps": result.steps, "trainable_params": result.trainable_parameters,
             "total_params": result.total_parameters, "final_loss": result.losses[-1] if result.losses else None}
    return TrainReport(time.perf_counter() - start, peak_rss_mb(), result.history, extra)


def _fresh(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


class _DeepseekBackend(Backend):
    """The fine-tune both DeepSeek backends share; `_module` names the module with finetune / save_adapters."""

    def _module(self):
        raise NotImplementedError

    def finetune(self, base_dir: Path, train: Samples, val: Samples | None, settings, adapter_dir: Path,
                 on_epoch: OnEpoch | None = None) -> TrainReport:
        """LoRA on the language model's projections (the vision tower stays frozen); `val` is not used yet."""
        module = self._module()
        start = time.perf_counter()
        recognizer = self.load(base_dir, device=settings.device)
        config = TrainConfig.for_finetune(settings, len(train), self.default_learning_rate)
        result = module.finetune(recognizer, _images(train), lora=settings.lora(), train=config, on_epoch=on_epoch)
        _fresh(adapter_dir)
        module.save_adapters(recognizer, adapter_dir)
        return _report(start, result, config, self.name)


class Ocr2Backend(_DeepseekBackend):
    """model_type `deepseek_ocr2`: the transformers conversion of DeepSeek-OCR-2 (no remote code)."""

    name = "deepseek_ocr2"
    remote_code = False
    default_learning_rate = 2e-4

    def load(self, model_dir: Path, device: str = "auto"):
        from ocr_assets.models.deepseek.ocr2 import DeepseekOcr2Recognizer

        return DeepseekOcr2Recognizer.from_pretrained(model_dir, device=device, local_files_only=True)

    def _module(self):
        from ocr_assets.models.deepseek import ocr2

        return ocr2

    def merge(self, base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float16") -> Path:
        from ocr_assets.models.deepseek import ocr2

        _fresh(out_dir)
        recognizer = self.load(base_dir, device="cpu")
        ocr2.load_adapters(recognizer, adapter_dir)
        ocr2.merge_and_save(recognizer, out_dir, dtype=dtype)
        return out_dir


class Ocr1UnslothBackend(_DeepseekBackend):
    """model_type `deepseek_vl_v2` / `deepseek_ocr`: DeepSeek-OCR v1 through Unsloth; remote code, CUDA only."""

    name = "deepseek_ocr1_unsloth"
    remote_code = True
    default_learning_rate = 2e-4

    def load(self, model_dir: Path, device: str = "auto"):
        """Callers gate this backend with `check_remote_code` first, so the checkpoint's code is trusted here."""
        from ocr_assets.models.deepseek.ocr1_unsloth import UnslothDeepseekOcrRecognizer, UnslothUnavailableError

        if device == "cpu":
            raise UnslothUnavailableError(f"{self.name} cannot run on device 'cpu': Unsloth needs a CUDA device")
        return UnslothDeepseekOcrRecognizer.from_pretrained(model_dir, trust_remote_code=True)

    def _module(self):
        from ocr_assets.models.deepseek import ocr1_unsloth

        return ocr1_unsloth

    def merge(self, base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float16") -> Path:
        """Base + adapters, saved as merged 16-bit weights (Unsloth's merged_16bit); `dtype` is not used."""
        from ocr_assets.models.deepseek import ocr1_unsloth as ocr1

        _fresh(out_dir)
        recognizer = self.load(base_dir)  # raises UnslothUnavailableError (a ModelError) without CUDA/unsloth
        ocr1.merge_into(recognizer, adapter_dir, out_dir)
        return out_dir
