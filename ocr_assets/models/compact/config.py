"""The compact recognizer's configuration for transformers: the sizes of `sizes.CompactOCRSizes` (alphabet, input
height, conv front end and encoder) with `PretrainedConfig`'s saving and loading."""

from __future__ import annotations

from transformers import PretrainedConfig

from ocr_assets.models.compact.labels import BLANK_ID, SPECIAL_LABELS, UNK_ID  # noqa: F401 (re-exported)
from ocr_assets.models.compact.sizes import MODEL_TYPE, CompactOCRSizes


class CompactOCRConfig(PretrainedConfig, CompactOCRSizes):
    """Sizes and alphabet of a CompactOCRModel (fields and defaults: `CompactOCRSizes`)."""

    model_type = MODEL_TYPE

    def __post_init__(self, **kwargs):
        self._normalise()
        super().__post_init__(**kwargs)
        self._check()
