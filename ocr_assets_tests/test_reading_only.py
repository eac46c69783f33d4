"""The compact model read through torch alone (`layers.CompactOCRNet`): `load_recognizer` with the torch runtime
starts without importing transformers, reads exactly as the transformers model does, and a recognizer loaded that
way still saves a model transformers loads with the same weights."""

from __future__ import annotations

import json

import pytest
import torch

from ocr_assets.models.base import ModelError
from ocr_assets.models.compact.layers import CompactOCRNet
from ocr_assets.models.compact.recognizer import CompactRecognizer
from ocr_assets.models.resolve import shipped_model_dir
from ocr_assets_tests.test_compact_model import render_line
from ocr_assets_tests.test_onnx_runtime import recognize_in_a_new_process

TEXTS = ["حدثنا محمد بن عبد الله", "قال رسول الله صلى الله عليه وسلم", "وَالْعَصْرِ إِنَّ الْإِنْسَانَ لَفِي خُسْرٍ"]


def test_the_torch_reader_starts_without_transformers_and_reads(tmp_path):
    folder = tmp_path / "lines"
    folder.mkdir()
    for k, text in enumerate(TEXTS):
        render_line(text, size=34).save(folder / f"{k}.png")
    done, heavy = recognize_in_a_new_process(tmp_path, folder, "--device", "cpu", "--runtime", "torch")
    assert done.returncode == 0, done.stderr
    assert heavy == "['torch']", done.stdout
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["image"] for r in rows] == ["0.png", "1.png", "2.png"]
    assert all(r["text"] and "error" not in r for r in rows), rows


def test_reading_only_reads_exactly_as_the_transformers_model():
    light = CompactRecognizer.load(shipped_model_dir(), device="cpu", cpu_precision="fp32", reading_only=True)
    full = CompactRecognizer.load(shipped_model_dir(), device="cpu", cpu_precision="fp32")
    assert isinstance(light.model, CompactOCRNet) and not isinstance(full.model, CompactOCRNet)
    assert light.model.state_dict().keys() == full.model.state_dict().keys()
    lines = [render_line(t, size=s) for t in TEXTS for s in (28, 40)]
    a, b = light.recognize(lines, batch_size=4), full.recognize(lines, batch_size=4)
    assert [r.text for r in a] == [r.text for r in b]
    assert all(abs(x.confidence - y.confidence) < 1e-6 for x, y in zip(a, b))
    pixels = torch.randint(0, 256, (3, 1, 48, 400), dtype=torch.uint8)
    widths = torch.tensor([400, 250, 37])
    with torch.inference_mode():
        out_a, out_b = light.model(pixels, widths), full.model(pixels, widths)
    assert torch.equal(out_a.output_lengths, out_b.output_lengths)
    assert torch.allclose(out_a.logits, out_b.logits, atol=1e-5)


def test_a_reading_only_recognizer_saves_a_model_transformers_loads(tmp_path):
    light = CompactRecognizer.load(shipped_model_dir(), device="cpu", reading_only=True)
    light.save(tmp_path / "saved", dtype="float32")
    again = CompactRecognizer.load(tmp_path / "saved", device="cpu")
    assert not isinstance(again.model, CompactOCRNet)
    mine, theirs = light.model.state_dict(), again.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].float(), theirs[k].float()) for k in mine)
    assert again.model.config.alphabet == light.model.config.alphabet


def test_a_directory_that_is_not_a_compact_model_is_refused_with_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    with pytest.raises(ValueError, match="'bert' model's, not 'compact_ctc_ocr'"):
        CompactOCRNet.load(tmp_path)
    with pytest.raises((ModelError, ValueError)) as caught:
        CompactRecognizer.load(tmp_path, device="cpu", reading_only=True)
    assert "\n" not in str(caught.value)
