"""DeepSeek backends at tiny size on CPU: collator masking, LoRA training, adapters, merge, generate, loop guard."""

import copy
import io
import math
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from ocr_assets.errors import ModelError, ModelNotFoundError
from ocr_assets.models.base import TrainConfig
from ocr_assets.models.deepseek import common
from ocr_assets.models.deepseek import ocr1_unsloth as v1
from ocr_assets.models.deepseek import ocr2 as ds
from ocr_assets.settings import LoraSettings
from ocr_assets_tests.tiny_models import tiny_ocr2

LINES = ["بسم الله الرحمن الرحيم", "قال أبو عبد الله رحمه الله", "وهذا باب في معرفة الأسماء"]
FONT_NAMES = ("Scheherazade-Regular.ttf", "NotoNaskhArabic-Regular.ttf", "Amiri-Regular.ttf")


def _debian_font() -> Path:
    for name in FONT_NAMES:
        found = sorted(Path("/usr/share/fonts").rglob(name))
        if found:
            return found[0]
    pytest.skip(f"no Debian Arabic font {FONT_NAMES} under /usr/share/fonts; apt-get install fonts-sil-scheherazade")


def render(text: str, width: int = 240, height: int = 44) -> Image.Image:
    font = ImageFont.truetype(str(_debian_font()), 26)
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).text((width - 8, 4), text, font=font, fill=0, anchor="ra", direction="rtl", language="ar")
    return image


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two threads on two shared cores oversubscribe: one is several times faster here under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images():
    return [render(text) for text in LINES]


def fresh() -> ds.DeepseekOcr2Recognizer:
    return tiny_ocr2(LINES, seed=0)


# --- loop guard -------------------------------------------------------------------------------------


def test_trimmer_collapses_a_generation_loop_and_its_partial_tail():
    head, unit = "قال الشيخ رحمه الله ", "والله أعلم "
    looping = head + unit * 9 + "والل"
    # The loop is cut at its earliest phase (" والله أعلم", from the space before it): one copy stays, no tail.
    assert common.trim_repetition(looping) == (head + unit).rstrip()
    tatweel = "بـ" + "ـ" * 20 + "اب"
    assert common.trim_repetition(tatweel) == "بـاب"


def test_trimmer_leaves_ordinary_lines_and_short_repeats_alone():
    for text in (LINES[0], "ههههه ضحك", "انظر ...... ص ١٢", "لا لا لا"):
        assert common.trim_repetition(text) == text
    assert common.loop_spans(LINES[1]) == []


# --- collator ---------------------------------------------------------------------------------------


def test_collator_masks_prompt_and_image_tokens_and_supervises_only_text_and_eos(images):
    rec = fresh()
    tok = rec.processor.tokenizer
    wide = render(LINES[1], width=400)  # another tiling than the others: rows of different lengths
    samples = [(images[0], LINES[0]), (wide, LINES[1]), (images[2], LINES[2])]
    batch = ds.DeepseekOcr2Collator(rec.processor, rec.settings)(samples)
    prompt_text = tok(ds.PROMPT.split(ds.IMAGE, 1)[1], add_special_tokens=False)["input_ids"]
    image_id = rec.processor.image_token_id
    lengths = []
    for row, (_, text) in enumerate(samples):
        tiles = int(batch["num_local_patches"][row])
        n_image = 144 * (1 + tiles) + 1  # 144 queries per view plus the view separator
        prompt_len = 1 + n_image + len(prompt_text)  # BOS, image, "\nFree OCR."
        target = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids, labels, attention = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        end = prompt_len + len(target)
        assert ids[0] == tok.bos_token_id
        assert (ids[1 : 1 + n_image] == image_id).all() and (ids == image_id).sum() == n_image
        assert (labels[:prompt_len] == -100).all()
        assert labels[prompt_len:end].tolist() == target
        assert (labels[end:] == -100).all() and (ids[end:] == tok.pad_token_id).all()
        assert attention[:end].all() and not attention[end:].any()
        assert tok.decode(labels[labels != -100], skip_special_tokens=True) == text
        lengths.append(end)
    assert len(set(lengths)) > 1 and batch["input_ids"].shape[1] == max(lengths)
    assert batch["pixel_values_local"].shape[0] == int(batch["num_local_patches"].sum())


def test_forward_gives_a_finite_loss_near_uniform_for_random_weights(images):
    rec = fresh()
    batch = ds.DeepseekOcr2Collator(rec.processor, rec.settings)(list(zip(images, LINES)))
    with torch.no_grad():
        loss = rec.model(**batch).loss
    assert torch.isfinite(loss)
    assert abs(float(loss) - math.log(len(rec.processor.tokenizer))) < 1.0


# --- LoRA -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(images):
    """A tiny recognizer after 6 LoRA steps on one batch, with the batch and the losses."""
    rec = fresh()
    before = {k: v.clone() for k, v in rec.model.state_dict().items()}
    batch = ds.DeepseekOcr2Collator(rec.processor, rec.settings)(list(zip(images, LINES)))
    model = ds.attach_lora(rec, LoraSettings(rank=8, alpha=16, dropout=0.0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = [common.lora_train_step(model, batch, optimizer) for _ in range(6)]
    model.eval()
    return rec, batch, losses, before


def test_lora_targets_the_language_model_only():
    targets = fresh().lora_target_modules
    assert targets and all(".language_model." in name for name in targets)
    leaves = {name.rsplit(".", 1)[-1] for name in targets}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert any("shared_experts" in name for name in targets)  # the MoE layers' dense experts too


def test_lora_steps_change_only_adapter_weights_and_lower_the_loss(trained):
    rec, _, losses, before = trained
    assert losses[-1] < losses[0]
    state = rec.model.get_base_model().state_dict()
    lora_b = [value for name, value in state.items() if "lora_B" in name]
    assert lora_b and all(value.abs().sum() > 0 for value in lora_b)  # peft starts every lora_B at zero
    for name, value in state.items():
        if "lora_" not in name:
            assert torch.equal(value, before[name.replace(".base_layer", "")]), f"{name} is not LoRA but changed"
    trainable = [n for n, p in rec.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)


def test_micro_batches_give_the_same_gradients_as_one_batch(images):
    rec = fresh()
    collate = ds.DeepseekOcr2Collator(rec.processor, rec.settings)
    samples = list(zip(images, LINES))
    model = ds.attach_lora(rec, LoraSettings(rank=4, alpha=8, dropout=0.0))
    # Nudge lora_B off zero so lora_A receives gradients too.
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    grads = []
    for batches in ([collate(samples)], [collate(samples[:1]), collate(samples[1:])]):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
        loss = common.lora_train_step(model, batches, optimizer)
        grads.append((loss, [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (loss_one, g_one), (loss_two, g_two) = grads
    assert loss_one == pytest.approx(loss_two, rel=1e-5)
    for a, b in zip(g_one, g_two):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_adapters_save_and_reload_to_the_same_logits(trained, tmp_path):
    rec, batch, _, _ = trained
    out = ds.save_adapters(rec, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    reloaded = fresh()
    ds.load_adapters(reloaded, out)
    reloaded.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded.model(**batch).logits, rec.model(**batch).logits, atol=1e-6)


def test_merge_matches_the_peft_model_and_the_saved_directory_loads(trained, tmp_path):
    rec, batch, _, _ = copy.deepcopy(trained)  # merging rewrites the model: keep the shared one intact
    with torch.no_grad():
        peft_logits = rec.model(**batch).logits
    out = ds.merge_and_save(rec, tmp_path / "merged", dtype="float16")
    assert not hasattr(rec.model, "peft_config")
    with torch.no_grad():
        merged_logits = rec.model(**batch).logits
    assert torch.allclose(merged_logits, peft_logits, atol=1e-5)
    loaded = ds.DeepseekOcr2Recognizer.from_pretrained(out, device="cpu")
    assert loaded.settings == rec.settings and loaded.dtype == torch.float32
    with torch.no_grad():
        loaded_logits = loaded.model(**batch).logits
    # fp16 storage: about three significant digits survive.
    assert torch.allclose(loaded_logits, peft_logits, atol=5e-3 * float(peft_logits.abs().max()))


# --- inference --------------------------------------------------------------------------------------


def test_recognize_returns_text_with_confidences_and_error_rows_for_bad_images(images):
    rec = fresh()
    png = io.BytesIO()
    images[0].save(png, format="PNG")
    truncated = Image.open(io.BytesIO(png.getvalue()[: len(png.getvalue()) // 2]))
    wide = render(LINES[2], width=400)  # more tiles, a longer prompt: batched with images[0] it is left-padded
    inputs = [images[0], Image.new("RGB", (0, 0)), wide, truncated, images[1]]
    out = rec.recognize(inputs, batch_size=2)
    assert len(out) == len(inputs)
    for index in (0, 2, 4):
        r = out[index]
        assert r.error is None and isinstance(r.text, str)
        assert 0.0 <= r.confidence <= 1.0
        assert r.char_confidences == [] or len(r.char_confidences) == len(r.text)
    for index in (1, 3):
        assert out[index].text == "" and out[index].confidence == 0.0 and out[index].error
        assert "\n" not in out[index].error
    alone = rec.recognize([images[0], wide], batch_size=1)
    assert [r.text for r in alone] == [out[0].text, out[2].text]
    assert [r.confidence for r in alone] == pytest.approx([out[0].confidence, out[2].confidence], rel=1e-4)


def test_finetune_then_recognize_reads_the_trained_line(images, tmp_path):
    rec = fresh()
    result = ds.finetune(
        rec,
        [(images[0], LINES[0])],
        LoraSettings(rank=8, alpha=16, dropout=0.0),
        TrainConfig(max_steps=30, batch_size=1, learning_rate=2e-2, device="cpu", checkpoint_dir=str(tmp_path),
                    checkpoint_every=15),
    )
    assert result.steps == 30 and result.losses[-1] < result.losses[0]
    assert 0 < result.trainable_parameters < result.total_parameters
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert rec.recognize([images[0]])[0].text == LINES[0]


# --- loading errors ---------------------------------------------------------------------------------


def test_missing_model_gives_one_line_errors_naming_what_was_looked_for(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError) as err:
        ds.DeepseekOcr2Recognizer.from_pretrained(missing, device="cpu")
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelNotFoundError) as err:
        ds.DeepseekOcr2Recognizer.from_pretrained("someone/not-cached-ocr", device="cpu", local_files_only=True)
    assert "someone/not-cached-ocr" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelNotFoundError, match="config.json"):
        ds.DeepseekOcr2Recognizer.from_pretrained(tmp_path, device="cpu")


def test_remote_code_checkpoints_and_unknown_settings_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "deepseek_vl_v2"}', encoding="utf-8")
    with pytest.raises(ModelError, match="deepseek-community/DeepSeek-OCR-2"):
        ds.DeepseekOcr2Recognizer.from_pretrained(tmp_path, device="cpu")
    with pytest.raises(ModelError, match="max_new_tokenz"):
        ds.Ocr2Settings.from_dict({"max_new_tokenz": 3})


# --- DeepSeek-OCR v1 (Unsloth) ----------------------------------------------------------------------


def test_unsloth_backend_needs_opt_in_then_a_cuda_machine():
    with pytest.raises(v1.RemoteCodeNotAllowedError, match="trust_remote_code=True"):
        v1.UnslothDeepseekOcrRecognizer.from_pretrained("unsloth/DeepSeek-OCR")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU-only error path cannot be observed")
    with pytest.raises(v1.UnslothUnavailableError) as err:
        v1.UnslothDeepseekOcrRecognizer.from_pretrained("unsloth/DeepSeek-OCR", trust_remote_code=True)
    assert "GPU only: install the `unsloth` extra on a CUDA machine" in str(err.value)


def test_v1_collator_expands_image_tokens_in_the_v1_layout_and_masks_the_prompt(images):
    tok = fresh().processor.tokenizer
    settings = v1.Ocr1Settings(base_size=64, image_size=32)  # small views; the layout rule is size-independent
    collate = v1.DeepseekOcr1Collator(tok, settings, dtype=torch.float32)
    batch = collate([(images[0], LINES[0]), (render(LINES[1], width=20, height=20), LINES[1])])
    base, local = math.ceil(64 / 16 / 4), math.ceil(32 / 16 / 4)  # queries per side of a view
    cols, rows = batch["images_spatial_crop"][0].tolist()
    assert cols * rows > 1 and batch["images_spatial_crop"][1].tolist() == [1, 1]
    expected = [(base + 1) * base + 1 + (local * cols + 1) * (local * rows), (base + 1) * base + 1]
    image_id = tok.convert_tokens_to_ids("<image>")
    for row, n_image in enumerate(expected):
        mask, ids, labels = batch["images_seq_mask"][row], batch["input_ids"][row], batch["labels"][row]
        assert int(mask.sum()) == n_image and (ids[mask] == image_id).all()
        assert (labels[mask] == -100).all()
        target = tok(LINES[row], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert labels[labels != -100].tolist() == target
    crops, global_view = batch["images"][0]
    assert crops.shape == (cols * rows, 3, 32, 32) and global_view.shape == (1, 3, 64, 64)
