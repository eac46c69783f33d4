"""The compact CTC line recognizer: the platform's embedded default model (docs/ARCHITECTURE.md, "The compact recognizer")."""

from ocr_assets.models.compact.codec import Codec, CodecStats, default_alphabet
from ocr_assets.models.compact.config import CompactOCRConfig
from ocr_assets.models.compact.modeling import CompactOCRModel
from ocr_assets.models.compact.recognizer import CompactRecognizer, prepare_line

__all__ = [
    "Codec",
    "CodecStats",
    "CompactOCRConfig",
    "CompactOCRModel",
    "CompactRecognizer",
    "default_alphabet",
    "prepare_line",
]
