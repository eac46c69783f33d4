"""The compact recognizer's network in torch alone: its layers and the inference steps (embed -> run_blocks -> head).

`CompactOCRNet` reads a saved model directory (config.json + model.safetensors) without importing transformers, which
costs 2-5 s of start-up (docs/NOTES.md, session 13); `modeling.CompactOCRModel` is the same network with
transformers' `PreTrainedModel` for training, LoRA and saving. Both take their layers from `CompactOCRLayers`, so their
weights have the same names and a state dict moves between them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ocr_assets.models.compact.sizes import CompactOCRSizes, read_sizes

# What LoRA adapts by default (peft matches these as name suffixes): the encoder's Linear layers and the
# projection from conv features, so a new book's typeface can shift what the encoder sees.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "input_proj"]
WEIGHTS = "model.safetensors"


def may_be_shorter(lengths: torch.Tensor, size: int) -> bool:
    """Whether any line in the batch may be shorter than `size` (so padding must be masked). On an accelerator always
    True: asking would make the host wait for the device and stop it queueing the next batch, and a mask that covers
    every column reads the same."""
    return lengths.device.type != "cpu" or bool((lengths < size).any())


def mirror_within_width(pixels: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Flip each image horizontally inside its own width; padding stays on the right."""
    width = pixels.shape[-1]
    cols = torch.arange(width, device=pixels.device)
    source = widths.to(pixels.device)[:, None] - 1 - cols[None, :]  # (batch, width)
    valid = source >= 0
    index = source.clamp(min=0)[:, None, None, :].expand_as(pixels)
    return torch.gather(pixels, -1, index) * valid[:, None, None, :].to(pixels.dtype)


class ConvFrontEnd(nn.Module):
    """3x3 conv + BatchNorm + SiLU stages; narrow and strided early, so little compute runs at full width."""

    def __init__(self, config: CompactOCRSizes):
        super().__init__()
        layers, in_ch = [], 1
        for out_ch, (stride_h, stride_w) in zip(config.conv_channels, config.conv_strides):
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=(stride_h, stride_w), padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.SiLU(inplace=True),
            ]
            in_ch = out_ch
        self.layers = nn.Sequential(*layers)
        self.strides = [stride_w for _, stride_w in config.conv_strides]
        self.out_features = in_ch * (config.input_height // config.height_reduction)

    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        for stride in self.strides:
            widths = torch.div(widths - 1, stride, rounding_mode="floor") + 1  # kernel 3, padding 1
        return widths

    def forward(self, pixels: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, frames, features); with widths, columns past each line's end are zeroed after every stage,
        exactly as the convolutions' own zero padding would see them, so batching never changes a reading."""
        features = pixels
        padded = widths is not None and may_be_shorter(widths, pixels.shape[-1])
        for layer in self.layers:
            features = layer(features)
            if padded and isinstance(layer, nn.Conv2d):
                widths = torch.div(widths - 1, layer.stride[1], rounding_mode="floor") + 1
            elif padded and isinstance(layer, nn.SiLU):
                columns = torch.arange(features.shape[-1], device=features.device)
                features = features * (columns[None, :] < widths[:, None])[:, None, None, :].to(features.dtype)
        batch, channels, height, frames = features.shape
        return features.reshape(batch, channels * height, frames).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out Linear layers, so peft LoRA can adapt each."""

    def __init__(self, config: CompactOCRSizes):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, d = x.shape
        shape = (batch, frames, self.num_heads, d // self.num_heads)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, d))


class DepthwiseConv(nn.Module):
    """Residual GELU(depthwise conv over time): local context and relative position for the encoder."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if keep is not None:
            x = x * keep  # padding frames must not leak into real ones through the conv
        return F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)


class EncoderBlock(nn.Module):
    """Pre-norm Transformer block (optional local conv, self-attention, feed-forward) built from nn.Linear."""

    def __init__(self, config: CompactOCRSizes):
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.local_norm = nn.LayerNorm(d, eps=eps) if config.local_conv_kernel else None
        self.local_conv = DepthwiseConv(d, config.local_conv_kernel) if config.local_conv_kernel else None
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.attention = SelfAttention(config)
        self.ffn_norm = nn.LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, config.ffn_size)
        self.fc2 = nn.Linear(config.ffn_size, d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None, attn_mask: torch.Tensor | None) -> torch.Tensor:
        if self.local_conv is not None:
            x = x + self.dropout(self.local_conv(self.local_norm(x), keep))
        x = x + self.dropout(self.attention(self.attn_norm(x), attn_mask))
        return x + self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.ffn_norm(x))))))


class CompactOCRLayers:
    """The layers and inference steps of the compact network, mixed into an `nn.Module` (`CompactOCRNet`) or a
    transformers `PreTrainedModel` (`CompactOCRModel`) that has `config` set."""

    config: CompactOCRSizes

    def _build_layers(self, config: CompactOCRSizes) -> None:
        d, eps = config.hidden_size, config.layer_norm_eps
        self.frontend = ConvFrontEnd(config)
        self.input_proj = nn.Linear(self.frontend.out_features, d)
        self.input_dropout = nn.Dropout(config.dropout)
        self.position_conv = DepthwiseConv(d, config.position_conv_kernel) if config.position_conv_kernel else None
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(d, eps=eps)
        split = config.frame_split
        self.frame_split = nn.Linear(d, d * split) if split > 1 else None
        self.split_norm = nn.LayerNorm(d, eps=eps) if split > 1 else None
        self.classifier = nn.Linear(d, config.vocab_size)

    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """CTC frames the model emits for lines of these pixel widths."""
        return self.frontend.output_lengths(widths) * self.config.frame_split

    def _inputs(self, pixel_values: torch.Tensor, widths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, 1, height, width) float pixels and true widths: uint8 lines scaled on the device, the height
        checked, missing widths set to the full width."""
        if pixel_values.dim() == 3:
            pixel_values = pixel_values.unsqueeze(1)
        if not pixel_values.is_floating_point():  # uint8 lines from prepare_line: scaled here, on the device
            pixel_values = pixel_values.to(torch.float32) / 255.0
        batch, _, height, width = pixel_values.shape
        if height != self.config.input_height:
            raise ValueError(
                f"pixel_values height {height} != config.input_height {self.config.input_height}; "
                "resize lines with ocr_assets.models.compact.recognizer.prepare_line"
            )
        if widths is None:
            widths = torch.full((batch,), width, dtype=torch.long, device=pixel_values.device)
        return pixel_values, widths

    def frame_logits(self, pixel_values: torch.Tensor, widths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame label logits (batch, frames, labels) and valid CTC frames per line."""
        pixel_values, widths = self._inputs(pixel_values, widths)
        hidden, lengths = self.embed(pixel_values, widths)
        return self.head(self.run_blocks(hidden, lengths), lengths)

    # forward = embed -> run_blocks -> head. Split so a fine-tune can freeze the lower part, compute its output once
    # per line and train only the top blocks on those cached features (train.py, FinetuneSettings.top_layers).

    def embed(self, pixel_values: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Line pixels (batch, 1, height, width) -> encoder input (batch, frames, hidden) and valid frames per line."""
        width = pixel_values.shape[-1]
        widths = widths.to(pixel_values.device).long().clamp(min=1, max=width)
        pixels = mirror_within_width(pixel_values, widths)  # time now runs right-to-left: see module docstring
        hidden = self.input_dropout(self.input_proj(self.frontend(pixels, widths)))
        lengths = self.frontend.output_lengths(widths).clamp(max=hidden.shape[1])
        if self.position_conv is not None:
            hidden = hidden + self.position_conv(hidden, self.frame_masks(lengths, hidden)[0])
        return hidden, lengths

    @staticmethod
    def frame_masks(lengths: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(keep, attention mask) for lines shorter than the batch's frames; (None, None) when none is
        (`may_be_shorter`: on an accelerator the masks are always built)."""
        frames = hidden.shape[1]
        if not may_be_shorter(lengths, frames):
            return None, None
        valid = torch.arange(frames, device=hidden.device)[None, :] < lengths[:, None]
        return valid[:, :, None].to(hidden.dtype), valid[:, None, None, :]

    def run_blocks(self, hidden: torch.Tensor, lengths: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Encoder blocks start..stop-1 (all by default)."""
        keep, attn_mask = self.frame_masks(lengths, hidden)
        for block in self.blocks[start:stop]:
            hidden = block(hidden, keep, attn_mask)
        return hidden

    def head(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output -> per-frame logits and CTC frames per line (frame split applied)."""
        hidden = self.final_norm(hidden)
        if self.frame_split is not None:
            split = self.config.frame_split
            batch, frames = hidden.shape[:2]
            hidden = self.split_norm(self.frame_split(hidden).reshape(batch, frames * split, -1))
            lengths = lengths * split
        return self.classifier(hidden), lengths


@dataclass
class LineLogits:
    """What `CompactOCRNet` returns: per-frame logits and valid frames per line (the fields of
    `CompactOCROutput` a reader uses)."""

    logits: torch.Tensor
    output_lengths: torch.Tensor


class CompactOCRNet(CompactOCRLayers, nn.Module):
    """The compact network for reading, in torch alone (see the module docstring)."""

    def __init__(self, config: CompactOCRSizes):
        super().__init__()
        self.config = config
        self._build_layers(config)

    def forward(self, pixel_values: torch.Tensor, widths: torch.Tensor | None = None) -> LineLogits:
        return LineLogits(*self.frame_logits(pixel_values, widths))

    @classmethod
    def load(cls, model_dir: str | Path) -> "CompactOCRNet":
        """A saved model directory's network in float32 (ValueError: not a compact model, or its weights are not
        one safetensors file; the caller then loads it through transformers)."""
        from safetensors.torch import load_file

        sizes = read_sizes(model_dir)
        weights = Path(model_dir) / WEIGHTS
        if not weights.is_file():
            raise ValueError(f"{model_dir} has no {WEIGHTS}")
        net = cls(sizes)
        net.load_state_dict(load_file(weights), strict=True)
        return net.float().eval()
