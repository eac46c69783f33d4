"""The lean CPU reader of a compact model: its ONNX graph under ONNX Runtime, with no torch or transformers in the
process once the graph is cached (start-up ~0.3 s instead of ~4 s; docs/NOTES.md, issue 14).

The graph is exported on first use (`onnx_export`, needs torch) into a cache folder keyed by the SHA-256 of the
model's config and weights, so a fine-tuned or merged model gets its own graph and an unchanged one is never
exported twice; a damaged cached file is rebuilt with a one-line message. Lines are prepared on all cores while
the model reads the previous batch, and batches group similar widths so little padding is computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from ocr_assets.errors import ModelError, ModelNotFoundError
from ocr_assets.models.base import Recognition, Recognizer
from ocr_assets.models.compact.codec import Codec
from ocr_assets.models.compact.lines import decode_best, pad_batch, prepare_line, width_batches

LOG = logging.getLogger("ocr_assets.onnx")
EXPORT_VERSION = 1  # bump when the exported graph changes, so old cache entries are not read
PRECISIONS = ("int8", "fp32")
MODEL_TYPE = "compact_ctc_ocr"
KEEP_CACHED = 24  # graphs kept in the cache (the least recently used beyond this are removed after an export)


def model_digest(model_dir: Path) -> str:
    """SHA-256 over config.json and the weights (every *.safetensors / *.bin file, by name), first 16 hex digits."""
    files = [model_dir / "config.json"] + sorted(
        p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin"))
    digest = hashlib.sha256(f"export-v{EXPORT_VERSION}".encode())
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def cached_onnx(model_dir: Path, precision: str, cache_dir: Path) -> Path:
    """Where the graph of `model_dir` at `precision` is cached (whether or not it is there yet)."""
    return cache_dir / "onnx" / f"compact-{model_digest(model_dir)}-{precision}.onnx"


def _export(model_dir: Path, path: Path, precision: str) -> None:
    from ocr_assets.models.compact.onnx_export import export_onnx

    root = logging.getLogger()
    quiet = logging.NullHandler()  # onnxruntime's quantizer logs advice through the root logger; not ours to show
    root.addHandler(quiet)
    try:
        export_onnx(model_dir, path, quantize=precision == "int8")
    finally:
        root.removeHandler(quiet)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle ONNX Runtime threads would spin and starve the threads preparing the next lines (measured: 86 vs 168
    # lines/s on 2 cores, docs/NOTES.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _prune(folder: Path, keep: int = KEEP_CACHED) -> None:
    """Every fine-tune makes a new graph: keep the `keep` most recently used ones."""
    graphs = sorted(folder.glob("compact-*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in graphs[keep:]:
        old.unlink(missing_ok=True)


def open_session(model_dir: Path, precision: str, cache_dir: Path, threads: int):
    """(session, graph path): the cached graph, exported first when missing, rebuilt once when it cannot be read."""
    path = cached_onnx(model_dir, precision, cache_dir)
    if not path.is_file():
        _export(model_dir, path, precision)
        _prune(path.parent)
        return _session(path, threads), path
    os.utime(path)  # recently used: kept by _prune
    try:
        return _session(path, threads), path
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types for a damaged protobuf
        reason = " ".join(str(exc).split())[:160]
        LOG.warning(f"ocr-assets: cached ONNX graph {path} is damaged ({reason}); rebuilding it")
        path.unlink(missing_ok=True)
        _export(model_dir, path, precision)
        return _session(path, threads), path


class OnnxRecognizer(Recognizer):
    """A compact model read by ONNX Runtime on the CPU: the same lines, labels and confidences as CompactRecognizer."""

    backend = "compact"
    device = "cpu"

    def __init__(self, model_dir: Path, session, onnx_path: Path, config: dict, precision: str, threads: int):
        self.model_dir, self.session, self.onnx_path = model_dir, session, onnx_path
        self.codec = Codec(config["alphabet"])
        self.input_height = int(config.get("input_height", 48))
        self.precision, self.threads = precision, threads

    @classmethod
    def load(cls, model_dir: str | Path, precision: str = "int8", cache_dir: str | Path | None = None,
             threads: int | None = None) -> "OnnxRecognizer":
        """The reader of a compact model directory; `cache_dir` default: ocr_assets.settings.cache_dir()."""
        if precision not in PRECISIONS:
            raise ModelError(f"ONNX precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        model_dir = Path(model_dir)
        try:
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelNotFoundError(f"{model_dir} has no config.json; pass a saved compact model directory") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"{model_dir / 'config.json'} is not valid JSON ({exc}); the model directory is damaged") from None
        if config.get("model_type") != MODEL_TYPE:
            raise ModelError(f"{model_dir} holds a {config.get('model_type')!r} model; the ONNX reader reads {MODEL_TYPE!r}")
        if cache_dir is None:
            from ocr_assets.settings import cache_dir as default_cache_dir

            cache_dir = default_cache_dir()
        threads = threads or os.cpu_count() or 1
        session, path = open_session(model_dir, precision, Path(cache_dir), threads)
        return cls(model_dir, session, path, config, precision, threads)

    # --- reading -------------------------------------------------------------------------------------------

    def _run(self, arrays: Sequence[np.ndarray], batch: list[int]) -> list[tuple]:
        pixels, widths = pad_batch([arrays[i] for i in batch])
        best, prob, lengths = self.session.run(None, {"pixels": pixels, "widths": widths})
        return decode_best(best, prob, lengths)

    def _result(self, ids, confs, line, where) -> Recognition:
        return Recognition(text=self.codec.decode(ids), confidence=line, char_confidences=confs, char_positions=where)

    def recognize_arrays(self, arrays: Sequence[np.ndarray], batch_size: int = 32) -> list[Recognition]:
        """Read lines already passed through `prepare_line`, in batches of similar widths."""
        results: list[Recognition | None] = [None] * len(arrays)
        for batch in width_batches([a.shape[1] for a in arrays], batch_size):
            for i, decoded in zip(batch, self._run(arrays, batch)):
                results[i] = self._result(*decoded)
        return results  # type: ignore[return-value]

    def _prepare(self, image) -> np.ndarray | Recognition:
        try:
            return prepare_line(image, self.input_height)
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
            return Recognition(text="", confidence=0.0, error=f"{type(exc).__name__}: {exc}")

    def recognize(self, images: Sequence, batch_size: int = 32) -> list[Recognition]:
        """Read line images (PIL images, encoded bytes or paths); an unreadable one gives a row with `error`.

        Threads prepare the next chunk of lines while ONNX Runtime reads the current one (Pillow and ONNX Runtime
        both release the GIL), so decoding and resizing use the cores the model leaves idle.
        """
        if batch_size < 1:
            raise ModelError(f"batch_size {batch_size} must be >= 1")
        chunk = max(batch_size * 8, 256)
        parts = [images[s : s + chunk] for s in range(0, len(images), chunk)]
        results: list[Recognition] = []
        with ThreadPoolExecutor(self.threads) as pool:
            pending = [pool.submit(self._prepare, im) for im in parts[0]] if parts else []
            for k in range(len(parts)):
                prepared = [f.result() for f in pending]
                pending = [pool.submit(self._prepare, im) for im in parts[k + 1]] if k + 1 < len(parts) else []
                good = [i for i, p in enumerate(prepared) if isinstance(p, np.ndarray)]
                read = iter(self.recognize_arrays([prepared[i] for i in good], batch_size))
                results += [next(read) if isinstance(p, np.ndarray) else p for p in prepared]
        return results

    # --- the rest of the Recognizer interface: through the torch model, loaded only when asked ---------------

    def _torch(self, device: str = "cpu"):
        from ocr_assets.models.compact.recognizer import CompactRecognizer

        return CompactRecognizer.load(self.model_dir, device=device, reading_only=True)

    def save(self, path: str | Path, dtype: str = "float16") -> Path:
        return self._torch().save(path, dtype=dtype)

    @property
    def lora_target_modules(self) -> list[str]:
        from ocr_assets.models.compact.layers import LORA_TARGETS

        return list(LORA_TARGETS)

    def to(self, device: str) -> "OnnxRecognizer":
        if device not in ("cpu", "auto"):
            raise ModelError(f"the ONNX Runtime reader runs on the CPU, not {device!r}; load the model with "
                             "runtime torch (--runtime torch) to read on a GPU")
        return self

    def parameters_count(self) -> int:
        return self._torch().parameters_count()
