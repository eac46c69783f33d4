"""The compact CTC line recognizer: the platform's embedded default model (docs/ARCHITECTURE.md, "The compact recognizer").

Names are imported on first use, so the lean ONNX reader (`onnx_reader`, `lines`) never pulls in torch or
transformers through this package.
"""

import importlib

_WHERE = {
    "Codec": "codec",
    "CodecStats": "codec",
    "default_alphabet": "codec",
    "CompactOCRConfig": "config",
    "CompactOCRModel": "modeling",
    "CompactOCRNet": "layers",
    "CompactRecognizer": "recognizer",
    "prepare_line": "lines",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
