"""Export a compact model directory (shipped, pretrained, fine-tuned or merged: anything `CompactRecognizer.load`
reads) to one ONNX graph for ONNX Runtime: uint8 lines and their widths in, each CTC frame's best label, its
probability and the valid frames per line out (the softmax and arg-max run inside the graph, so a batch hands back
(batch, frames) numbers instead of (batch, frames, labels) logits).

The graph always applies the padding masks (the eager model skips them when a batch has no padding, which gives
the same numbers), so one graph serves every batch shape. Needs torch; the reader (`onnx_reader`) does not.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ocr_assets.models.compact.layers import CompactOCRNet, mirror_within_width

OPSET = 17  # LayerNormalization is a native op from 17 on
INPUTS = ("pixels", "widths")
OUTPUTS = ("best", "prob", "lengths")


class InferenceGraph(nn.Module):
    """The compact network's forward for inference, without data-dependent branches, ending in (best, prob, lengths)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, pixels: torch.Tensor, widths: torch.Tensor):
        m = self.model
        x = mirror_within_width(pixels.to(torch.float32) / 255.0, widths)
        lengths = widths
        for layer in m.frontend.layers:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                lengths = torch.div(lengths - 1, layer.stride[1], rounding_mode="floor") + 1
            elif isinstance(layer, nn.SiLU):
                columns = torch.arange(x.shape[-1], device=x.device)
                x = x * (columns[None, :] < lengths[:, None])[:, None, None, :].to(x.dtype)
        batch, channels, height, frames = x.shape
        hidden = m.input_proj(x.reshape(batch, channels * height, frames).transpose(1, 2))
        valid = torch.arange(frames, device=x.device)[None, :] < lengths[:, None]
        keep = valid[:, :, None].to(hidden.dtype)
        attn_mask = valid[:, None, None, :]
        if m.position_conv is not None:
            hidden = hidden + m.position_conv(hidden, keep)
        for block in m.blocks:
            hidden = block(hidden, keep, attn_mask)
        hidden = m.final_norm(hidden)
        if m.frame_split is not None:
            split = m.config.frame_split
            hidden = m.split_norm(m.frame_split(hidden).reshape(batch, frames * split, -1))
            lengths = lengths * split
        prob, best = m.classifier(hidden).softmax(-1).max(-1)
        return best, prob, lengths


def export_onnx(model_dir: str | Path, out: str | Path, quantize: bool = False) -> Path:
    """Write the ONNX graph of the model in `model_dir` to `out` (atomically: a reader never sees half a file);
    `quantize` stores the matrix multiplications as int8 (dynamic quantization of activations)."""
    import warnings

    from ocr_assets.models.compact.recognizer import _fuse_conv_bn

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _network(Path(model_dir))
    _fuse_conv_bn(model)
    graph = InferenceGraph(model)
    height = model.config.input_height
    # Two lines of different widths, so the traced masks and shapes are the general (padded) case.
    pixels = torch.randint(0, 256, (2, 1, height, 96), dtype=torch.uint8)
    widths = torch.tensor([96, 61], dtype=torch.long)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".onnx-") as tmp:
        plain = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter is marked deprecated; it still works
            torch.onnx.export(graph, (pixels, widths), str(plain), input_names=list(INPUTS),
                              output_names=list(OUTPUTS), opset_version=OPSET, dynamo=False,
                              dynamic_axes={"pixels": {0: "batch", 3: "width"}, "widths": {0: "batch"},
                                            "best": {0: "batch", 1: "frames"}, "prob": {0: "batch", 1: "frames"},
                                            "lengths": {0: "batch"}})
        final = plain
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            final = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(plain), str(final), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        staged = Path(tmp) / "staged"
        os.replace(final, staged)
        os.replace(staged, out)
    return out


def _network(model_dir: Path) -> nn.Module:
    """The model's network in float32: through torch alone (`CompactOCRNet`), or transformers for a directory that
    one cannot read (weights in several files)."""
    try:
        return CompactOCRNet.load(model_dir)
    except ValueError:
        pass
    from transformers.utils import logging as hf_logging

    from ocr_assets.models.compact.modeling import CompactOCRModel

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights" would be noise in a CLI that exports on first use
    try:
        return CompactOCRModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
