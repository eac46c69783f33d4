"""CompactOCRModel: a narrow, fast-downsampling conv front end, a small Transformer encoder, and a CTC head.

Right-to-left: labels are in logical order (first character = rightmost glyph), so each line is mirrored
inside its own width before the convolutions; time step 0 is then the right edge of the line and CTC reads the
frames in the order the text is written. Callers pass images in their natural orientation, left-aligned and
padded on the right, with their true widths.

CPU speed: the convolutions shrink the width 8x early, the encoder runs at 1/8 width, and `frame_split`
turns each encoder frame into 2 CTC frames (1/4 width), which vocalised text needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ocr_assets.models.compact.codec import Codec
from ocr_assets.models.compact.config import BLANK_ID, CompactOCRConfig
from ocr_assets.models.compact.labels import UNK_ID
from ocr_assets.text import TASHKEEL

# What LoRA adapts by default (peft matches these as name suffixes): the encoder's Linear layers and the
# projection from conv features, so a new book's typeface can shift what the encoder sees.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "input_proj"]
# Arguments trainers and peft pass to every model; accepted and ignored (anything else is a caller's mistake).
TOLERATED_KWARGS = {"num_items_in_batch", "return_dict", "output_attentions", "output_hidden_states", "use_cache"}


@dataclass
class CompactOCROutput(ModelOutput):
    """CTC loss (when labels are given), per-frame logits (batch, frames, labels) and valid frames per line."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    output_lengths: torch.Tensor | None = None


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

    def __init__(self, config: CompactOCRConfig):
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

    def __init__(self, config: CompactOCRConfig):
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

    def __init__(self, config: CompactOCRConfig):
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


class CompactOCRModel(PreTrainedModel):
    """Line image -> per-frame label logits; CTC loss when labels are given."""

    config_class = CompactOCRConfig
    base_model_prefix = "compact"
    main_input_name = "pixel_values"
    _no_split_modules = ["EncoderBlock"]
    default_lora_targets = LORA_TARGETS

    def __init__(self, config: CompactOCRConfig):
        super().__init__(config)
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
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def train(self, mode: bool = True) -> "CompactOCRModel":
        """Like nn.Module.train, but a BatchNorm whose weights are frozen (LoRA, partial fine-tuning) also keeps
        its running statistics, so saved adapters reproduce the trained model exactly."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d) and module.weight is not None and not module.weight.requires_grad:
                    module.eval()
        return self

    def set_dropout(self, p: float) -> None:
        """Dropout probability of every dropout in the model (a CPU fine-tune turns it off: drawing the masks
        costs more than the small model's matrix products there)."""
        self.config.dropout = p
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, SelfAttention):
                module.dropout = p

    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """CTC frames the model emits for lines of these pixel widths."""
        return self.frontend.output_lengths(widths) * self.config.frame_split

    def forward(
        self,
        pixel_values: torch.Tensor,
        widths: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        label_lengths: torch.Tensor | None = None,
        marks_optional: torch.Tensor | None = None,
        **kwargs,
    ) -> CompactOCROutput:
        """pixel_values: (batch, 1, input_height, width), ink = 1 on background 0 (or uint8 ink = 255), natural
        orientation, right-padded.

        widths: true pixel width of each line (default: all full width). labels: (batch, max_labels) label ids in
        logical order, padded with 0 or -100; label_lengths defaults to the count of ids > 0. marks_optional: (batch,)
        bool, lines whose transcription leaves out the vowel marks the print may have (see ctc_loss).
        """
        unknown = set(kwargs) - TOLERATED_KWARGS
        if unknown:
            raise TypeError(
                f"CompactOCRModel.forward got unexpected arguments {sorted(unknown)}; it takes pixel_values, "
                "widths, labels, label_lengths, marks_optional"
            )
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
        hidden, lengths = self.embed(pixel_values, widths)
        hidden = self.run_blocks(hidden, lengths)
        logits, lengths = self.head(hidden, lengths)
        loss = self.loss(logits, lengths, labels, label_lengths, marks_optional) if labels is not None else None
        return CompactOCROutput(loss=loss, logits=logits, output_lengths=lengths)

    def loss(self, logits: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
             label_lengths: torch.Tensor | None, marks_optional: torch.Tensor | None = None) -> torch.Tensor:
        """ctc_loss with this model's vowel-mark labels for the lines flagged in marks_optional."""
        return self.ctc_loss(logits, lengths, labels, label_lengths, marks_optional, self.mark_ids(marks_optional))

    def mark_ids(self, marks_optional: torch.Tensor | None = None) -> torch.Tensor | None:
        """Label ids of the vowel marks (tashkeel) in this model's alphabet; None when no line needs them."""
        if marks_optional is None or not bool(marks_optional.any()):
            return None
        ids = sorted({i for i in Codec(self.config.alphabet).encode(TASHKEEL) if i != UNK_ID})
        return torch.tensor(ids, dtype=torch.long, device=marks_optional.device) if ids else None

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

    @staticmethod
    def ctc_loss(
        logits: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, label_lengths: torch.Tensor | None,
        marks_optional: torch.Tensor | None = None, mark_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean CTC loss per label (float32 even under autocast); impossible alignments count as zero.

        On lines flagged in `marks_optional` (real books whose transcription drops the marks their print has) a
        vowel mark counts as blank: its probability joins the blank's, so reading a printed mark costs nothing
        and leaving it out costs nothing either; the model is not taught to omit marks it sees."""
        if label_lengths is None:
            label_lengths = (labels > 0).sum(dim=1)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)
        if marks_optional is not None and mark_ids is not None and mark_ids.numel():
            blank = log_probs[..., BLANK_ID]
            merged = torch.logsumexp(torch.cat([blank[..., None], log_probs.index_select(-1, mark_ids)], -1), -1)
            log_probs = log_probs.clone()
            log_probs[..., BLANK_ID] = torch.where(marks_optional.to(blank.device)[None, :], merged, blank)
        return F.ctc_loss(
            log_probs,
            labels.clamp(min=0).long(),
            lengths.long(),
            label_lengths.to(labels.device).long(),
            blank=BLANK_ID,
            reduction="mean",
            zero_infinity=True,
        )

    def extend_alphabet(self, new_chars: list[str]) -> list[str]:
        """Append characters to the alphabet, growing the classifier; old rows (and predictions) are kept."""
        known = set(self.config.alphabet)
        added = [ch for ch in dict.fromkeys(new_chars) if ch not in known]
        if not added:
            return []
        old = self.classifier
        grown = nn.Linear(
            old.in_features, old.out_features + len(added), device=old.weight.device, dtype=old.weight.dtype
        )
        with torch.no_grad():
            grown.weight[: old.out_features] = old.weight
            grown.weight[old.out_features :] = 0.0
            grown.bias[: old.out_features] = old.bias
            # New labels start below every old one (a constant logit under the lowest bias), so existing readings
            # do not change; CTC's alignment posteriors still give them strong gradients once they appear in labels.
            grown.bias[old.out_features :] = old.bias.min() - 5.0
        self.classifier = grown
        self.config.alphabet = list(self.config.alphabet) + added
        return added


AutoConfig.register(CompactOCRConfig.model_type, CompactOCRConfig, exist_ok=True)
AutoModel.register(CompactOCRConfig, CompactOCRModel, exist_ok=True)
