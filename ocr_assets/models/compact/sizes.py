"""The compact recognizer's sizes and alphabet as a plain dataclass: what a reader needs from config.json, without
transformers (`CompactOCRConfig` adds transformers' configuration machinery on top of these same fields)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from ocr_assets.models.compact.labels import SPECIAL_LABELS

MODEL_TYPE = "compact_ctc_ocr"


@dataclass
class CompactOCRSizes:
    """Sizes and alphabet of a compact model; label id of alphabet[i] is i + 2 (0 blank, 1 <unk>)."""

    alphabet: list[str] | tuple[str, ...] = ()
    input_height: int = 48
    # One 3x3 conv (+BatchNorm+SiLU) per entry; strides are (height, width). Width shrinks 8x, then frame_split
    # gives CTC 1/4 width: vocalised lines carry up to ~2 labels per letter and CTC needs frames >= labels + repeats.
    conv_channels: list[int] | tuple[int, ...] = (24, 48, 96, 128, 160)
    conv_strides: list[list[int]] | tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (1, 1), (2, 1), (2, 2))
    hidden_size: int = 256
    num_layers: int = 8
    num_heads: int = 4
    ffn_size: int = 1024
    position_conv_kernel: int = 15  # depthwise conv before the encoder: relative position, as in wav2vec2
    local_conv_kernel: int = 0  # optional depthwise conv inside each block (0: none; costs CPU time)
    # Each encoder frame emits this many CTC frames, so the encoder runs at 1/8 width while CTC keeps 1/4.
    frame_split: int = 2
    dropout: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5

    def _normalise(self) -> None:
        self.alphabet = list(self.alphabet)
        self.conv_channels = [int(c) for c in self.conv_channels]
        self.conv_strides = [[int(s) for s in pair] for pair in self.conv_strides]

    def _check(self) -> None:
        bad = [ch for ch in self.alphabet if not isinstance(ch, str) or len(ch) != 1]
        if bad:
            raise ValueError(
                f"alphabet entries must be single code points; got {bad[:5]!r}; build it with Codec.from_texts"
            )
        if len(set(self.alphabet)) != len(self.alphabet):
            dupes = sorted({ch for ch in self.alphabet if self.alphabet.count(ch) > 1})
            raise ValueError(f"alphabet has duplicates {dupes!r}; each character needs exactly one label")
        if len(self.conv_channels) != len(self.conv_strides):
            raise ValueError(
                f"conv_channels ({len(self.conv_channels)} entries) and conv_strides ({len(self.conv_strides)}) "
                "must have one entry per conv layer"
            )
        if self.input_height % self.height_reduction:
            fits = self.height_reduction * max(1, self.input_height // self.height_reduction)
            raise ValueError(
                f"input_height {self.input_height} must be divisible by the conv height strides' product "
                f"{self.height_reduction}; pick e.g. {fits}"
            )
        if self.frame_split < 1 or self.width_reduction % self.frame_split:
            raise ValueError(
                f"frame_split {self.frame_split} must be >= 1 and divide the width reduction {self.width_reduction}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @property
    def height_reduction(self) -> int:
        return math.prod(stride_h for stride_h, _ in self.conv_strides)

    @property
    def width_reduction(self) -> int:
        return math.prod(stride_w for _, stride_w in self.conv_strides)

    @property
    def ctc_reduction(self) -> int:
        """Pixels of input width per CTC frame."""
        return self.width_reduction // self.frame_split

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + len(SPECIAL_LABELS)


def read_sizes(model_dir: str | Path) -> CompactOCRSizes:
    """The sizes in a model directory's config.json (keys other than the sizes are ignored); ValueError when it
    is not a compact model's."""
    path = Path(model_dir) / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{path} is a {data.get('model_type')!r} model's, not {MODEL_TYPE!r}")
    sizes = CompactOCRSizes(**{f.name: data[f.name] for f in fields(CompactOCRSizes) if f.name in data})
    sizes._normalise()
    sizes._check()
    return sizes
