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
from ocr_assets.models.compact.layers import (  # noqa: F401 (the layers and LORA_TARGETS re-exported)
    LORA_TARGETS, CompactOCRLayers, ConvFrontEnd, DepthwiseConv, EncoderBlock, SelfAttention, may_be_shorter,
    mirror_within_width)
from ocr_assets.text import TASHKEEL

# Arguments trainers and peft pass to every model; accepted and ignored (anything else is a caller's mistake).
TOLERATED_KWARGS = {"num_items_in_batch", "return_dict", "output_attentions", "output_hidden_states", "use_cache"}


@dataclass
class CompactOCROutput(ModelOutput):
    """CTC loss (when labels are given), per-frame logits (batch, frames, labels) and valid frames per line."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    output_lengths: torch.Tensor | None = None


class CompactOCRModel(CompactOCRLayers, PreTrainedModel):
    """Line image -> per-frame label logits; CTC loss when labels are given."""

    config_class = CompactOCRConfig
    base_model_prefix = "compact"
    main_input_name = "pixel_values"
    _no_split_modules = ["EncoderBlock"]
    default_lora_targets = LORA_TARGETS

    def __init__(self, config: CompactOCRConfig):
        super().__init__(config)
        self._build_layers(config)
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
        logits, lengths = self.frame_logits(pixel_values, widths)
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
