"""Tiny real models for tests: random weights, offline tokenizers, small enough to train on 2 CPU cores in seconds.

Not mocks: the same classes as the production models (transformers' DeepseekOcr2*, CompactOCRModel), only small.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import torch
from PIL import Image, ImageDraw, ImageFont

from ocr_assets.models.compact import CompactOCRConfig, CompactOCRModel, CompactRecognizer
from ocr_assets.models.deepseek.ocr2 import BOS, EOS, IMAGE, PAD, PROMPT, DeepseekOcr2Recognizer, Ocr2Settings

# ---------------------------------------------------------------------------------------------- DeepSeek-OCR-2

TINY_CORPUS = (
    "بسم الله الرحمن الرحيم",
    "الحمد لله رب العالمين والصلاة والسلام على رسوله الكريم",
    "قال أبو عبد الله رحمه الله تعالى في كتابه",
    "وهذا باب في معرفة الأسماء والكنى",
)


def tiny_processor(texts: Iterable[str] = (), vocab_size: int = 384, image_size: int = 24):
    """An offline DeepseekOcr2Processor: a byte-level BPE trained here on Arabic text, small image views."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import DeepseekOcr2ImageProcessorPil
    from transformers.models.deepseek_ocr2.processing_deepseek_ocr2 import DeepseekOcr2Processor

    if image_size % 12:
        raise ValueError(f"image_size={image_size} must be a multiple of 12 (12 x 12 queries per view); try 24")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, IMAGE],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknown tokens
        show_progress=False,
    )
    tok.train_from_iterator([*TINY_CORPUS, PROMPT, *texts], trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, extra_special_tokens={"image_token": IMAGE}
    )
    tokenizer.padding_side = "left"
    image_processor = DeepseekOcr2ImageProcessorPil(
        size={"height": image_size, "width": image_size}, tile_size=image_size
    )
    # The vision tower emits 144 queries for any view of <= 144 patches; patch_size * downsample_ratio = size / 12
    # makes the processor count those same 144 tokens per view.
    return DeepseekOcr2Processor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=image_size // 12, downsample_ratio=1
    )


def tiny_config(processor, hidden_size: int = 32, num_layers: int = 2):
    """A random DeepseekOcr2Config small enough for forward, generate and LoRA backward on CPU in seconds."""
    from transformers import DeepseekOcr2Config

    tokenizer = processor.tokenizer
    size = processor.image_processor.size["height"]
    vision = {
        "sam_config": {
            "hidden_size": 16,
            "output_channels": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": 2,
            "window_size": 0,
            "global_attn_indexes": [0],
            "downsample_channels": [16, hidden_size],
        },
        "encoder_config": {
            "hidden_size": hidden_size,  # must equal the SAM neck's last downsample channel count
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
        },
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        # Like the real model: a dense first layer, then mixture-of-experts layers with shared experts.
        "mlp_layer_types": ["dense"] + ["sparse"] * (num_layers - 1),
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": hidden_size // 2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return DeepseekOcr2Config(vision_config=vision, text_config=text, image_token_id=processor.image_token_id)


TINY_SETTINGS = Ocr2Settings(min_patches=1, max_patches=2, max_new_tokens=16)


def tiny_ocr2(texts: Iterable[str] = (), seed: int = 0) -> DeepseekOcr2Recognizer:
    """A random tiny DeepSeek-OCR-2 recognizer with an offline tokenizer trained on `texts`."""
    processor = tiny_processor(texts)
    return DeepseekOcr2Recognizer.from_config(tiny_config(processor), processor, TINY_SETTINGS, seed=seed)


# ---------------------------------------------------------------------------------------------- compact

# The compact architecture at a size that trains in seconds on 2 CPU cores.
TINY_COMPACT = dict(
    input_height=32,
    conv_channels=[8, 16, 32, 48, 64],
    conv_strides=[[2, 2], [2, 2], [1, 1], [2, 1], [2, 2]],
    hidden_size=96,
    num_layers=2,
    num_heads=4,
    ffn_size=192,
)


def tiny_compact(alphabet: list[str], seed: int = 0) -> CompactOCRModel:
    torch.manual_seed(seed)
    return CompactOCRModel(CompactOCRConfig(alphabet=alphabet, **TINY_COMPACT))


def save_tiny_compact(path: Path, alphabet: list[str], seed: int = 0) -> Path:
    """A tiny compact model directory (as `--model` takes it)."""
    return CompactRecognizer(tiny_compact(alphabet, seed), device="cpu").save(path, dtype="float32")


def latin_line(text: str, height: int = 20) -> bytes:
    """PNG bytes of `text` drawn with Pillow's built-in font (no system font needed): lines for plumbing tests."""
    font = ImageFont.load_default()
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 12, max(height, bottom - top + 8)), 255)
    ImageDraw.Draw(image).text((6 - left, 4 - top), text, font=font, fill=0)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
