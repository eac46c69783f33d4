"""Which engine reads a compact model: ONNX Runtime on the CPU (lean start-up, int8 matrix products) or torch
(training, GPUs, and CPUs without onnxruntime installed).

`auto` is the fastest reader equal in accuracy, measured on the benchmark lines (docs/NOTES.md, issue 14): ONNX
Runtime int8 on a CPU, torch on CUDA. Chosen per call (`CompactBackend.load(runtime=...)`), inside a `using(...)`
block (what the CLI's --runtime does), else $OCR_ASSETS_RUNTIME (ocr_assets.settings), else auto.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
from contextvars import ContextVar

from ocr_assets.errors import ConfigError

RUNTIMES = ("auto", "onnx", "onnx-int8", "onnx-fp32", "torch")
_CHOSEN: ContextVar[str | None] = ContextVar("ocr_assets_compact_runtime", default=None)


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}; auto picks the fastest equal "
                          "in accuracy (ONNX Runtime int8 on a CPU, torch on CUDA)")
    return runtime


@contextlib.contextmanager
def using(runtime: str | None):
    """Models loaded inside this block use `runtime` (None: keep the default)."""
    token = _CHOSEN.set(check_runtime(runtime) if runtime else _CHOSEN.get())
    try:
        yield
    finally:
        _CHOSEN.reset(token)


def gpu_device_node() -> bool:
    """Whether the machine has a GPU device node (NVIDIA, or WSL's); no torch import."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dxg"))


def _cuda_possible() -> bool:
    """Whether a CUDA device may be there, without importing torch (no NVIDIA device node: certainly not)."""
    if not gpu_device_node():
        return False
    import torch

    return torch.cuda.is_available()


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose(runtime: str | None, device: str) -> tuple[str, str | None]:
    """(engine, ONNX precision): ("onnx", "int8" | "fp32") or ("torch", None) for this runtime and device."""
    if runtime is None:
        runtime = _CHOSEN.get()
    if runtime is None:
        from ocr_assets.settings import runtime_from_env

        runtime = runtime_from_env()
    runtime = check_runtime(runtime)
    if runtime == "torch":
        return "torch", None
    if runtime == "auto":
        on_cpu = device == "cpu" or (device == "auto" and not _cuda_possible())
        return ("onnx", "int8") if on_cpu and onnxruntime_installed() else ("torch", None)
    if device.startswith("cuda"):
        raise ConfigError(f"runtime {runtime!r} reads on the CPU; use --device cpu, or runtime torch for {device!r}")
    if not onnxruntime_installed():
        raise ConfigError(f"runtime {runtime!r} needs the onnxruntime package (pip install onnxruntime); "
                          "or use runtime torch")
    return "onnx", "fp32" if runtime == "onnx-fp32" else "int8"
