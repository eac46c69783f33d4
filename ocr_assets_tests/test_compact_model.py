"""The compact CTC recognizer on real rendered Arabic lines: codec, model, recognizer, training, resume."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from ocr_assets.errors import ModelError
from ocr_assets.models.base import TrainConfig
from ocr_assets.models.compact import Codec, CodecStats, CompactOCRConfig, CompactOCRModel, CompactRecognizer
from ocr_assets.models.compact.config import UNK_ID
from ocr_assets.models.compact.modeling import mirror_within_width
from ocr_assets.models.compact.train import CompactTrainOptions, train_compact
from ocr_assets_tests.tiny_models import TINY_COMPACT as TINY  # same architecture as the shipped one, tiny
from ocr_assets_tests.tiny_models import tiny_compact as tiny_model
WORDS = ["كتاب", "قال", "الله", "محمد", "في", "من", "على", "بن", "عن", "حدثنا"]


def arabic_font_path() -> Path:
    """Amiri from the fontpkg-amiri dependency, else a Debian Arabic font."""
    try:
        import fontpkg_amiri

        packaged = Path(fontpkg_amiri.__file__).parent / "files" / "Amiri-Regular.ttf"
        if packaged.is_file():
            return packaged
    except ImportError:
        pass
    for pattern in ("Amiri-Regular.ttf", "NotoNaskhArabic-Regular.ttf", "Scheherazade*Regular.ttf"):
        found = sorted(Path("/usr/share/fonts").rglob(pattern))
        if found:
            return found[0]
    pytest.skip("no Arabic font found (install fonts-hosny-amiri or the fontpkg-amiri package)")


def render_line(text: str, size: int = 28, font_path: Path | None = None) -> Image.Image:
    """Black-on-white line rendered right-to-left with raqm shaping."""
    font = ImageFont.truetype(str(font_path or arabic_font_path()), size)
    left, top, right, bottom = font.getbbox(text, direction="rtl", language="ar")
    image = Image.new("L", (right - left + 16, bottom - top + 12), 255)
    ImageDraw.Draw(image).text((8 - left, 6 - top), text, font=font, fill=0, direction="rtl", language="ar")
    return image


def word_lines(count: int, seed: int) -> list[tuple[Image.Image, str]]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))) for _ in range(count)]
    return [(render_line(t), t) for t in texts]


# ---- codec ----------------------------------------------------------------------------------------------


def test_codec_gives_tashkeel_their_own_labels_and_round_trips():
    text = "كَتَبَ الكِتَابَ"
    codec = Codec.from_texts([text], base=[])
    ids = codec.encode(text)
    assert len(ids) == len(text)  # every mark is a label of its own, not merged into its letter
    assert codec.encode("\u064e") == [codec.encode("كَ")[1]]
    assert codec.decode(ids) == text
    assert UNK_ID not in ids


def test_codec_counts_unknown_characters_instead_of_failing():
    codec = Codec.from_texts(["قال"], base=[])
    stats = CodecStats()
    ids = codec.encode("قال ٣ قال", stats)
    assert ids.count(UNK_ID) == 3  # space, digit three, space
    assert stats.unknown[" "] == 2 and stats.unknown["٣"] == 1
    assert stats.lines_with_unknown == 1 and stats.as_dict()["unknown_chars"] == 3
    assert codec.decode(ids) == "قال\ufffd\ufffd\ufffdقال"
    assert codec.missing(["قال ٣٣ ٣"]) == ["٣", " "]  # most frequent first


def test_extending_alphabet_keeps_old_ids_and_old_outputs():
    model = tiny_model(list("ابت")).eval()
    pixels = torch.rand(1, 1, 32, 64)
    with torch.no_grad():
        before = model(pixels).logits
    added = model.extend_alphabet(["ث", "ا"])
    assert added == ["ث"] and model.config.alphabet == list("ابتث")
    assert Codec.from_config(model.config).encode("ث") == [5]
    with torch.no_grad():
        after = model(pixels).logits
    assert after.shape[-1] == before.shape[-1] + 1
    torch.testing.assert_close(after[..., :-1], before)
    assert (after.argmax(-1) == before.argmax(-1)).all()  # the new label does not take over any frame


# ---- model ----------------------------------------------------------------------------------------------


def test_mirror_puts_rightmost_column_first_and_keeps_padding_right():
    pixels = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 1, 1, 6) + 1
    out = mirror_within_width(pixels, torch.tensor([6, 4]))
    assert out[0, 0, 0].tolist() == [6, 5, 4, 3, 2, 1]
    assert out[1, 0, 0].tolist() == [10, 9, 8, 7, 0, 0]


def test_padding_in_a_batch_does_not_change_a_line_reading():
    model = tiny_model(list("ابت")).eval()
    short, long = torch.rand(1, 32, 40), torch.rand(1, 32, 96)
    batch = torch.zeros(2, 1, 32, 96)
    batch[0, :, :, :40], batch[1] = short, long
    with torch.no_grad():
        alone = model(short.unsqueeze(0))
        together = model(batch, widths=torch.tensor([40, 96]))
    n = int(alone.output_lengths[0])
    assert int(together.output_lengths[0]) == n
    torch.testing.assert_close(together.logits[0, :n], alone.logits[0], atol=1e-4, rtol=1e-4)


def test_config_rejects_a_height_the_convolutions_cannot_reduce():
    with pytest.raises(ValueError, match="input_height 30"):
        CompactOCRConfig(alphabet=["ا"], **{**TINY, "input_height": 30})


def test_shipping_size_fits_the_16_mb_fp16_budget():
    from ocr_assets.models.compact.codec import default_alphabet

    model = CompactOCRModel(CompactOCRConfig(alphabet=default_alphabet()))
    params = sum(p.numel() for p in model.parameters())
    assert 3_000_000 <= params <= 8_000_000
    assert params * 2 <= 16 * 1024 * 1024


# ---- recognizer -----------------------------------------------------------------------------------------


def _frames(*peaks: tuple[int, float], labels: int = 4) -> torch.Tensor:
    """Log-probabilities with the given (label, probability) peak per frame, the rest spread evenly."""
    rows = []
    for label, p in peaks:
        row = torch.full((labels,), (1 - p) / (labels - 1))
        row[label] = p
        rows.append(row)
    return torch.stack(rows).log()


def test_greedy_decode_collapses_runs_drops_blanks_and_ignores_padding():
    from ocr_assets.models.compact.recognizer import greedy_decode

    a, b = 2, 3
    line0 = _frames((a, 0.9), (a, 0.6), (0, 0.8), (a, 0.7), (b, 0.8), (0, 0.9))
    line1 = _frames((0, 0.9), (0, 0.7), (0, 0.8), (a, 0.99), (a, 0.99), (a, 0.99))  # frames 3.. are padding
    out = greedy_decode(torch.stack([line0, line1]), torch.tensor([6, 3]))
    ids, confs, line = out[0]
    assert ids == [a, a, b]  # a blank between the two a's keeps both
    assert confs == pytest.approx([0.9, 0.7, 0.8])
    assert line == pytest.approx(0.8)
    assert out[1][0] == [] and out[1][2] == pytest.approx(0.8)  # empty line: mean blank probability


def test_prepare_line_gives_ink_high_for_dark_or_light_text():
    dark_on_light = render_line("قال محمد")
    light_on_dark = Image.eval(dark_on_light, lambda v: 255 - v)
    from ocr_assets.models.compact import prepare_line

    a, b = prepare_line(dark_on_light, 32), prepare_line(light_on_dark, 32)
    assert a.dtype == np.uint8 and a.shape[0] == 32
    assert a.shape[1] == round(dark_on_light.width * 32 / dark_on_light.height)
    assert np.median(a) == 0 and a.max() == 255  # background 0, darkest ink stretched to 255
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_recognize_gives_confidences_and_error_rows_for_bad_images(tmp_path):
    lines = word_lines(3, seed=1)
    alphabet = sorted({ch for _, t in lines for ch in t})
    rec = CompactRecognizer(tiny_model(alphabet), device="cpu", cpu_precision="fp32")
    png = io.BytesIO()
    lines[1][0].save(png, format="PNG")
    truncated = png.getvalue()[:40]
    images = [lines[0][0], truncated, png.getvalue(), b"", tmp_path / "missing.png", Image.new("RGBA", (50, 20))]
    out = rec.recognize(images, batch_size=2)
    assert len(out) == len(images)
    assert [r.error is not None for r in out] == [False, True, False, True, True, False]
    assert "missing.png" in out[4].error
    for r in out:
        assert 0.0 <= r.confidence <= 1.0
        assert len(r.char_confidences) == len(r.text)
        assert all(0.0 <= c <= 1.0 for c in r.char_confidences)
    assert out[1].text == "" and out[1].confidence == 0.0
    # The same image as a PIL object and as PNG bytes reads the same.
    again = rec.recognize([lines[1][0]])[0]
    assert again.text == out[2].text and again.confidence == pytest.approx(out[2].confidence, abs=1e-6)


def test_save_and_load_round_trip_reads_identically(tmp_path):
    lines = word_lines(6, seed=2)
    alphabet = sorted({ch for _, t in lines for ch in t})
    rec = CompactRecognizer(tiny_model(alphabet, seed=3), device="cpu", cpu_precision="fp32")
    images = [im for im, _ in lines]
    first = rec.recognize(images)
    loaded = CompactRecognizer.load(rec.save(tmp_path / "fp32", dtype="float32"), device="cpu", cpu_precision="fp32")
    assert loaded.model.config.alphabet == alphabet
    again = loaded.recognize(images)
    assert [r.text for r in again] == [r.text for r in first]
    assert [r.confidence for r in again] == pytest.approx([r.confidence for r in first], abs=1e-6)
    # The shipped form: float16 on disk, half the bytes, read back in float32.
    half = rec.save(tmp_path / "fp16")
    size32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    assert (half / "model.safetensors").stat().st_size < 0.6 * size32
    assert CompactRecognizer.load(half, device="cpu").model.dtype == torch.float32


def test_load_explains_a_folder_without_a_model(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        CompactRecognizer.load(tmp_path)


def test_lower_precision_cpu_paths_read_like_fp32():
    lines = word_lines(8, seed=4)
    alphabet = sorted({ch for _, t in lines for ch in t})
    model = tiny_model(alphabet, seed=5)
    images = [im for im, _ in lines]
    ref = CompactRecognizer(model, device="cpu", cpu_precision="fp32").recognize(images)
    for precision in ("bf16", "int8"):
        out = CompactRecognizer(model, device="cpu", cpu_precision=precision).recognize(images)
        assert [r.error for r in out] == [None] * len(images)
        # Untrained logits are nearly flat, so compare confidences rather than exact strings.
        assert np.mean([abs(a.confidence - b.confidence) for a, b in zip(out, ref)]) < 0.05


# ---- training -------------------------------------------------------------------------------------------


def test_training_stopped_by_max_steps_resumes_from_that_step(tmp_path):
    lines = word_lines(40, seed=6)
    codec = Codec.from_texts([t for _, t in lines], base=[])
    options = CompactTrainOptions(model_config=TINY, log_every=0, amp="off")
    ckpt = str(tmp_path / "ckpt")
    first = train_compact(
        None,
        lines,
        None,
        TrainConfig(epochs=2, batch_size=8, max_steps=3, checkpoint_dir=ckpt),
        codec=codec,
        options=options,
    )
    assert first.steps == 3 and first.history == [] and (tmp_path / "ckpt" / "last" / "trainer_state.pt").is_file()
    second = train_compact(
        None, lines, None, TrainConfig(epochs=2, batch_size=8, checkpoint_dir=ckpt), codec=codec, options=options
    )
    assert second.resumed_from_step == 3
    assert second.steps == 10  # 2 epochs of 5 batches: it went on from step 3, not 3 + a fresh 10
    assert [h["epoch"] for h in second.history] == [0, 1] and second.history[0]["step"] == 5


def test_crashed_training_resumes_exactly_as_if_never_stopped(tmp_path):
    lines = word_lines(48, seed=6)
    codec = Codec.from_texts([t for _, t in lines], base=[])
    options = CompactTrainOptions(model_config=TINY, log_every=0, amp="off")
    config = dict(epochs=2, batch_size=8, learning_rate=2e-3, seed=11, checkpoint_every=4)
    straight = train_compact(
        None, lines, None, TrainConfig(**config, checkpoint_dir=str(tmp_path / "a")), codec=codec, options=options
    )
    assert straight.steps == 12

    def crash(epoch, metrics):
        raise RuntimeError("simulated kill at the end of epoch 0")

    with pytest.raises(RuntimeError, match="simulated kill"):
        train_compact(
            None,
            lines,
            None,
            TrainConfig(**config, checkpoint_dir=str(tmp_path / "b")),
            codec=codec,
            options=options,
            on_epoch=crash,
        )
    resumed = train_compact(
        None, lines, None, TrainConfig(**config, checkpoint_dir=str(tmp_path / "b")), codec=codec, options=options
    )
    assert resumed.resumed_from_step == 4 and resumed.steps == 12
    # Model, optimizer, schedule, RNG and batch order all came back: the same weights as the run never stopped.
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{name} differs after resume")


def test_training_reads_parquet_shards_augments_and_reports_unknown_characters(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = word_lines(12, seed=7)
    rows = []
    for image, text in lines:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        rows.append({"image": buf.getvalue(), "text": text + " ٣", "width": image.width, "height": image.height})
    # A shard in the pair schema (with sizes) and one as the synthetic renderer writes it (text + image only).
    pq.write_table(pa.Table.from_pylist(rows[:8]), tmp_path / "pairs.parquet")
    pq.write_table(
        pa.Table.from_pylist([{"text": r["text"], "image": r["image"]} for r in rows[8:]]), tmp_path / "synth.parquet"
    )
    codec = Codec.from_texts([t for _, t in lines], base=[])  # knows no "٣"
    seen = []
    result = train_compact(
        None,
        [str(tmp_path / "pairs.parquet"), str(tmp_path / "synth.parquet")],
        str(tmp_path),  # a folder of shards
        TrainConfig(epochs=1, batch_size=4, learning_rate=1e-3),
        codec=codec,
        options=CompactTrainOptions(model_config=TINY, log_every=0, augment=True),
        on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)),
    )
    assert result.codec_stats.unknown["٣"] == 12 and result.codec_stats.lines_with_unknown == 12
    assert result.steps == 3 and seen and seen[0][0] == 0
    assert seen[0][1]["val_lines"] == 12
    assert {"train_loss", "val_cer", "val_cer_norm", "samples_per_s"} <= set(seen[0][1])
    assert result.history == [m for _, m in seen]


def test_model_learns_to_read_rendered_lines_right_to_left():
    train, val = word_lines(200, seed=8), word_lines(40, seed=9)
    codec = Codec.from_texts([t for _, t in train], base=[])
    untrained = CompactRecognizer(tiny_model(codec.alphabet), device="cpu", cpu_precision="fp32")
    from ocr_assets.metrics import cer

    refs = [t for _, t in val]
    before = cer(refs, [r.text for r in untrained.recognize([im for im, _ in val])])
    result = train_compact(
        None,
        train,
        val,
        TrainConfig(epochs=40, batch_size=16, learning_rate=3e-3, seed=0),
        codec=codec,
        options=CompactTrainOptions(model_config=TINY, log_every=0),
    )
    rec = CompactRecognizer(result.model, device="cpu")
    hyps = [r.text for r in rec.recognize([im for im, _ in val])]
    after = cer(refs, hyps)
    assert before > 0.9
    assert after < 0.3, f"held-out CER {after:.3f} after training (untrained {before:.3f})"  # ~0.1 here in ~10 s
    assert result.history[-1]["val_cer"] < 0.3
    # Logical order: the first word read is the rightmost one in the image, i.e. the first of the text.
    first_words_right = sum(h.split(" ")[0] == r.split(" ")[0] for h, r in zip(hyps, refs) if h)
    assert first_words_right >= 0.7 * len(refs)
    reversed_refs = [" ".join(reversed(r.split(" "))) for r in refs]
    assert cer(reversed_refs, hyps) > after + 0.2


def test_patience_stops_a_run_whose_held_out_cer_no_longer_falls_and_keeps_the_best_weights():
    """`TrainConfig.patience`: after that many epochs in a row without a lower validation CER the loop stops (a
    CPU fine-tune measured the same CER in about half the time, docs/NOTES.md session 14); the weights returned
    are the best seen. A learning rate of zero (and BatchNorm statistics that do not move) leaves the model as it
    starts, so no epoch beats the start."""
    from ocr_assets.settings import FinetuneSettings

    train, val = word_lines(24, seed=3), word_lines(8, seed=4)
    codec = Codec.from_texts([t for _, t in train], base=[])

    def run(patience: int, learning_rate: float = 0.0, epochs: int = 6):
        torch.manual_seed(0)
        model = tiny_model(codec.alphabet)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0
        return train_compact(model, train, val, TrainConfig(epochs=epochs, batch_size=8, learning_rate=learning_rate,
                                                            patience=patience),
                             codec=codec, options=CompactTrainOptions(log_every=0))

    stopped, full = run(2), run(0)
    assert len(stopped.history) == 2 and len(full.history) == 6
    assert stopped.best_val_cer == full.best_val_cer == stopped.history[0]["val_cer"] == full.history[-1]["val_cer"]
    # A resumed run counts on from its history: two epochs since the lowest CER (0.4; a tie is no improvement).
    from ocr_assets.models.compact.train import _epochs_since_best

    assert _epochs_since_best([{"val_cer": 0.5}, {"val_cer": 0.4}, {"val_cer": 0.45}, {"val_cer": 0.4}]) == 2
    assert _epochs_since_best([{"train_loss": 1.0}]) == 0
    # The user-facing default: 4 when the epoch count is automatic, none when the user named the epochs.
    assert FinetuneSettings().auto_patience() == 4 and FinetuneSettings(epochs=9).auto_patience() == 0
    assert FinetuneSettings(epochs=9, patience=3).auto_patience() == 3
    assert TrainConfig.for_finetune(FinetuneSettings(), 200, 1e-3).patience == 4
