"""CompactRecognizer: line images in, text + confidences out, through a CompactOCRModel.

The image chain (`prepare_line`) is the same in training and inference: grayscale, resized to the model's
height keeping the aspect ratio, inverted to ink = 255 on background 0 and contrast stretched, as uint8.
"""

from __future__ import annotations

import copy
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ocr_assets.data.images import to_gray  # noqa: F401 (the one grayscale converter; re-exported for train.py)
from ocr_assets.models.base import ModelError, ModelNotFoundError, Recognition, Recognizer, resolve_device
from ocr_assets.models.compact.codec import Codec
from ocr_assets.models.compact.labels import BLANK_ID
from ocr_assets.models.compact.layers import LORA_TARGETS, CompactOCRNet
from ocr_assets.models.compact.lines import MAX_WIDTH_PER_HEIGHT, open_image, prepare_line  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from ocr_assets.models.compact.modeling import CompactOCRModel

CPU_PRECISIONS = ("auto", "fp32", "bf16", "int8")


def collate_lines(arrays: Sequence[np.ndarray], multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad prepared lines to one width (a multiple of `multiple`): (batch, 1, H, W) and true widths.

    Keeps the arrays' dtype: uint8 lines stay uint8 (4x less to copy to a GPU; the model scales them).
    """
    widths = [a.shape[1] for a in arrays]
    width = -(-max(widths) // multiple) * multiple
    batch = np.zeros((len(arrays), 1, arrays[0].shape[0], width), dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        batch[i, 0, :, : a.shape[1]] = a
    return torch.from_numpy(batch), torch.tensor(widths, dtype=torch.long)


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, positions: bool = False) -> list[tuple]:
    """Best path per line: (label ids, per-label confidence, line confidence 0..1) and, with `positions`, each
    label's place across the line image (0 = left edge, 1 = right edge; the centre of the frame where its run
    starts; frames run right to left, see modeling.mirror_within_width).

    A label's confidence is its highest frame probability; the line's is the mean over its labels, or the mean
    blank probability when nothing was read (an empty line read with certainty scores 1.0). Vectorised over the
    batch: only (batch, frames) ids and probabilities leave the device.
    """
    probs, best = logits.float().softmax(-1).max(-1)
    batch, frames = best.shape
    valid = torch.arange(frames, device=best.device)[None, :] < lengths[:, None].to(best.device)
    blank = (best == BLANK_ID) & valid
    blank_conf = ((probs * blank).sum(1) / blank.sum(1).clamp(min=1)).masked_fill(blank.sum(1) == 0, 1.0)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=-1)
    # A run starts where the label changes; dummy runs at each line's first frame and first padding frame keep every
    # run inside its own line (they are dropped below as padding or blanks).
    starts = ((best != previous) & valid) | (valid.logical_not() & torch.nn.functional.pad(valid[:, :-1], (1, 0)))
    starts[:, 0] = True
    probs, best, valid, starts = (t.cpu().numpy().ravel() for t in (probs, best, valid, starts))
    blank_conf = blank_conf.cpu().numpy()
    first = np.flatnonzero(starts)
    run_conf = np.maximum.reduceat(probs, first) if first.size else np.zeros(0, dtype=probs.dtype)
    keep = valid[first] & (best[first] != BLANK_ID)
    ids, confs, line_of = best[first][keep], run_conf[keep].astype(float), first[keep] // frames
    frame_of = first[keep] % frames
    line_lengths = lengths.cpu().numpy()
    bounds = np.searchsorted(line_of, np.arange(batch + 1))
    out = []
    for i in range(batch):
        lo, hi = bounds[i], bounds[i + 1]
        line_confs = confs[lo:hi].tolist()
        line = float(np.mean(line_confs)) if line_confs else float(blank_conf[i])
        if positions:
            where = (1.0 - (frame_of[lo:hi] + 0.5) / max(int(line_lengths[i]), 1)).round(4).tolist()
            out.append((ids[lo:hi].tolist(), line_confs, line, where))
        else:
            out.append((ids[lo:hi].tolist(), line_confs, line))
    return out


def _fuse_conv_bn(model: CompactOCRModel | CompactOCRNet) -> None:
    """Fold each BatchNorm into the conv before it (inference only: saves a pass over every feature map)."""
    layers = list(model.frontend.layers)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], torch.nn.Conv2d) and isinstance(layers[i + 1], torch.nn.BatchNorm2d):
            layers[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(layers[i], layers[i + 1])
            layers[i + 1] = torch.nn.Identity()
    model.frontend.layers = torch.nn.Sequential(*layers)


def default_cpu_precision() -> str:
    """bf16 where the CPU computes it natively (AVX512-BF16 / AMX), else int8 dynamic quantization."""
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "int8"
    except (AttributeError, RuntimeError):
        return "int8"


class CompactRecognizer(Recognizer):
    """The embedded default backend: a CompactOCRModel with its codec, preprocessing and greedy CTC decoding."""

    backend = "compact"

    def __init__(
        self, model: CompactOCRModel | CompactOCRNet, device: str = "auto", cpu_precision: str = "auto", prep_threads: int | None = None
    ):
        """cpu_precision: auto (bf16 on CPUs that compute it natively, else int8), fp32, bf16 or int8.
        prep_threads: threads preparing images (None: 0 on CPU, where torch uses the cores, up to 8 on CUDA)."""
        if cpu_precision not in CPU_PRECISIONS:
            raise ModelError(f"cpu_precision {cpu_precision!r} is not one of {', '.join(CPU_PRECISIONS)}")
        self.model = model.float().eval()
        self.codec = Codec.from_config(model.config)
        self.device = resolve_device(device)
        self.cpu_precision = default_cpu_precision() if cpu_precision == "auto" else cpu_precision
        self.prep_threads = prep_threads
        self._runner: torch.nn.Module | None = None
        self.model.to(self.device)

    @classmethod
    def new(cls, alphabet: Sequence[str] | None = None, device: str = "auto", **config: object) -> "CompactRecognizer":
        """An untrained recognizer (default alphabet and shipping size unless overridden)."""
        from ocr_assets.models.compact.codec import default_alphabet
        from ocr_assets.models.compact.config import CompactOCRConfig
        from ocr_assets.models.compact.modeling import CompactOCRModel

        alphabet = list(alphabet) if alphabet is not None else default_alphabet()
        return cls(CompactOCRModel(CompactOCRConfig(alphabet=alphabet, **config)), device=device)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", cpu_precision: str = "auto",
             reading_only: bool = False) -> "CompactRecognizer":
        """Read a directory written by `save` (or CompactOCRModel.save_pretrained). `reading_only`: the network in
        torch alone (`layers.CompactOCRNet`, no transformers import: seconds less start-up); the recognizer reads
        the same and `save` still works, but `model` is then no `PreTrainedModel` (no LoRA, no training)."""
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelNotFoundError(f"{path} has no config.json; pass a directory written by CompactRecognizer.save")
        if reading_only:
            try:
                net = CompactOCRNet.load(path)
            except ValueError:  # not one safetensors file, or not a compact model: transformers loads it or says why
                net = None
            if net is not None:
                return cls(net, device=device, cpu_precision=cpu_precision)
        from ocr_assets.models.compact.config import CompactOCRConfig
        from ocr_assets.models.compact.modeling import CompactOCRModel

        config = CompactOCRConfig.from_pretrained(path)
        if config.model_type != CompactOCRConfig.model_type:
            raise ModelError(f"{path} holds a {config.model_type!r} model, not {CompactOCRConfig.model_type!r}")
        model = CompactOCRModel.from_pretrained(path, dtype=torch.float32)
        return cls(model, device=device, cpu_precision=cpu_precision)

    def save(self, path: str | Path, dtype: str = "float16") -> Path:
        """safetensors + config.json; float16 halves the size (the model is run in float32 or lower anyway)."""
        if dtype not in ("float16", "bfloat16", "float32"):
            raise ModelError(f"dtype {dtype!r} is not one of float16, bfloat16, float32")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        to_save = copy.deepcopy(self.trainable_model()).to("cpu", getattr(torch, dtype))
        to_save.save_pretrained(path)
        return path

    def trainable_model(self) -> CompactOCRModel:
        """`model` as a transformers `CompactOCRModel`: `model` itself, or for a reading-only network a converted
        copy with the same weights (training that copy leaves this recognizer as it is)."""
        if not isinstance(self.model, CompactOCRNet):
            return self.model
        from dataclasses import asdict

        from ocr_assets.models.compact.config import CompactOCRConfig
        from ocr_assets.models.compact.modeling import CompactOCRModel

        full = CompactOCRModel(CompactOCRConfig(**asdict(self.model.config)))
        full.load_state_dict(self.model.state_dict())
        return full.to(next(self.model.parameters()).device).eval()

    @property
    def lora_target_modules(self) -> list[str]:
        return list(LORA_TARGETS)

    def to(self, device: str) -> "CompactRecognizer":
        self.device = resolve_device(device)
        self.model.to(self.device)
        self._runner = None
        return self

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def refresh(self) -> None:
        """Forget the inference copy after the weights of `model` changed (e.g. after training)."""
        self._runner = None

    def _inference_model(self) -> torch.nn.Module:
        if self._runner is None:
            runner = copy.deepcopy(self.model).eval()
            _fuse_conv_bn(runner)
            if self.device == "cpu" and self.cpu_precision == "int8":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch marks eager quantization deprecated; it still works
                    runner = torch.ao.quantization.quantize_dynamic(runner, {torch.nn.Linear}, dtype=torch.qint8)
            self._runner = runner
        return self._runner

    def _inference_context(self):
        """Autocast for reading; on CUDA also attention without cuDNN's kernel, which spends ~6 ms of host time per
        call building its plan (8 calls a batch: it, not the GPU, bounded batched reading on an H200); flash and
        memory-efficient attention launch in microseconds and read the same."""
        if self.device.startswith("cuda"):
            from contextlib import ExitStack

            from torch.nn.attention import SDPBackend, sdpa_kernel

            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            stack = ExitStack()
            stack.enter_context(torch.autocast("cuda", dtype=dtype))
            stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]))
            return stack
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_precision == "bf16")

    def recognize_arrays(self, arrays: Sequence[np.ndarray], batch_size: int = 32) -> list[Recognition]:
        """Read lines already passed through `prepare_line`; batches group similar widths to cut padding."""
        results: list[Recognition | None] = [None] * len(arrays)
        order = sorted(range(len(arrays)), key=lambda i: arrays[i].shape[1])
        runner = self._inference_model()
        with torch.inference_mode(), self._inference_context():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                pixels, widths = collate_lines([arrays[i] for i in idx])
                out = runner(pixels.to(self.device, non_blocking=True), widths.to(self.device))
                for i, (ids, confs, line, where) in zip(idx, greedy_decode(out.logits, out.output_lengths, positions=True)):
                    # Padding frames beyond a line's own width are excluded by output_lengths, so positions are
                    # fractions of this line's own (prepared) width.
                    results[i] = Recognition(text=self.codec.decode(ids), confidence=line, char_confidences=confs,
                                             char_positions=where)
        return results  # type: ignore[return-value]

    def _prepare(self, image) -> np.ndarray | Recognition:
        try:
            return prepare_line(image, self.model.config.input_height)
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
            return Recognition(text="", confidence=0.0, error=f"{type(exc).__name__}: {exc}")

    def recognize_encoded(self, blobs: Sequence[bytes], batch_size: int = 1024, workers: int | None = None,
                          pool=None, details: bool = True) -> Iterator[tuple[int, Recognition]]:
        """(index, Recognition) for encoded line images (PNG, JPEG, TIFF, ...) in batch order: the batched GPU line
        path (`device_prep.read_encoded`: decode workers, labels found on the device). `pool`: a
        `line_feed.FeedPool` kept across calls (its workers and page-locked buffers are reused). `details=False`:
        text and line confidence only (no per-character confidences and positions), less host work per line."""
        from ocr_assets.models.compact.device_prep import read_encoded
        from ocr_assets.models.compact.line_feed import default_workers

        workers = default_workers() if workers is None else workers
        return read_encoded(self, blobs, batch_size=batch_size, workers=workers, pool=pool, details=details)

    def recognize(self, images: Sequence[Image.Image], batch_size: int = 32) -> list[Recognition]:
        """Read line images (PIL images, encoded bytes or paths); an unreadable one gives a row with `error`.

        Works through the input in chunks (prepared lines of a whole corpus would not fit in memory); on CUDA,
        threads prepare lines in parallel (Pillow releases the GIL while decoding and resizing).
        """
        if batch_size < 1:
            raise ModelError(f"batch_size {batch_size} must be >= 1")
        threads = (
            self.prep_threads
            if self.prep_threads is not None
            else (min(8, os.cpu_count() or 1) if self.device != "cpu" else 0)
        )
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        results: list[Recognition] = []
        try:
            chunk = batch_size * 16
            for start in range(0, len(images), chunk):
                part = images[start : start + chunk]
                prepared = list(pool.map(self._prepare, part)) if pool else [self._prepare(im) for im in part]
                good = [i for i, p in enumerate(prepared) if isinstance(p, np.ndarray)]
                read = iter(self.recognize_arrays([prepared[i] for i in good], batch_size))
                results += [next(read) if isinstance(p, np.ndarray) else p for p in prepared]
        finally:
            if pool:
                pool.shutdown()
        return results
