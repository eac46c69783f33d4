"""Real books whose transcription drops the vowel marks their print has: their mark-free lines train with marks
optional (a printed mark read as a mark or as nothing costs the same), so they stop teaching the model to omit
marks. What must hold: the loss, the flag from file to batch, and the command line that pretraining runs."""

from __future__ import annotations

import io
import json
import math

import pyarrow as pa
import pytest
import pyarrow.parquet as pq
import torch

from ocr_assets.models.base import ModelError
from ocr_assets.models.compact import CompactOCRModel
from ocr_assets.models.compact.codec import Codec
from ocr_assets.models.compact.train import MarkFreeLabels, _prepare_split, collate_batch, main
from ocr_assets_tests.test_compact_model import render_line
from ocr_assets_tests.tiny_models import TINY_COMPACT, tiny_compact

FATHA = "\u064e"


def _logits(frames: list[str], alphabet: list[str]) -> torch.Tensor:
    """(1, frames, labels) logits that put nearly all mass on each frame's label ('' = blank)."""
    ids = {ch: i + 2 for i, ch in enumerate(alphabet)}
    out = torch.full((1, len(frames), len(alphabet) + 2), -12.0)
    for t, ch in enumerate(frames):
        out[0, t, ids.get(ch, 0)] = 12.0
    return out


def test_a_printed_mark_costs_nothing_on_a_flagged_line_and_everything_else_is_unchanged():
    alphabet = ["ب", FATHA]
    mark_ids = torch.tensor([3])
    labels, label_lengths = torch.tensor([[2, 2]]), torch.tensor([2])  # «بب»: the transcription has no mark
    reads_marks = _logits(["ب", FATHA, "", "ب", FATHA, ""], alphabet)  # the model reads «بَبَ»
    lengths = torch.tensor([6])

    def loss(logits, flag):
        logits = logits.clone().requires_grad_(True)
        value = CompactOCRModel.ctc_loss(logits, lengths, labels, label_lengths, torch.tensor([flag]), mark_ids)
        value.backward()
        return float(value.detach()), logits.grad

    plain, _ = loss(reads_marks, False)
    optional, grad = loss(reads_marks, True)
    assert plain > 5.0 and optional < 0.01, (plain, optional)  # the mark frames cost ~12 nats each, unflagged
    assert grad is not None and torch.isfinite(grad).all()
    no_marks = _logits(["ب", "", "", "ب", "", ""], alphabet)
    assert math.isclose(loss(no_marks, False)[0], loss(no_marks, True)[0], abs_tol=1e-4)
    wrong = _logits(["ب", FATHA, "", "", "", ""], alphabet)  # a letter missing still costs, flagged or not
    assert loss(wrong, True)[0] > 5.0


def _shard(path, texts):
    blobs = []
    for text in texts:
        buf = io.BytesIO()
        render_line(text).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    pq.write_table(pa.table({"image": blobs, "text": texts}), path)
    return path


def test_the_flag_travels_from_the_named_files_mark_free_lines_to_the_batch_and_the_command_line(tmp_path):
    real = _shard(tmp_path / "real.parquet", ["كتب الكتاب", "كَتَبَ الكتاب", "قال أبو"])
    synth = _shard(tmp_path / "synth.parquet", ["كتب أبو", "قال الكتاب"])
    alphabet = sorted(set("كتب الكتاب قال أبو") | {FATHA})
    model = tiny_compact(alphabet, seed=1)
    codec = Codec.from_config(model.config)
    dataset, texts, _, _ = _prepare_split([str(real), str(synth), str(real)], codec, model.config, False, 0,
                                          marks_optional=[str(real)])
    flags = [isinstance(lab, MarkFreeLabels) for lab in dataset.labels]
    # The real file's two mark-free lines, each time it is listed; never its vocalised line, never the other file.
    assert flags == [True, False, True, False, False, True, False, True], list(zip(texts, flags))
    batch = collate_batch([dataset[i] for i in range(len(dataset))])
    assert batch["marks_optional"].tolist() == flags
    assert model.mark_ids(batch["marks_optional"]).tolist() == codec.encode(FATHA)  # the codec's id for the mark
    model.eval()
    with torch.no_grad():
        flagged = model(**batch).loss
        plain = model(**{k: v for k, v in batch.items() if k != "marks_optional"}).loss
    # An untrained model gives the mark some probability on every frame: counted as blank, flagged lines cost less.
    assert torch.isfinite(flagged) and flagged < plain - 1e-3, (float(flagged), float(plain))
    with pytest.raises(ModelError, match="not training files"):  # a folder or a typo must not silently do nothing
        _prepare_split([str(real)], codec, model.config, False, 0, marks_optional=[str(tmp_path)])
    unflagged = collate_batch([dataset[i] for i in (1, 3, 4)])
    assert "marks_optional" not in unflagged  # batches without such lines are exactly as before

    run = tmp_path / "run"
    tiny = {k: v for k, v in TINY_COMPACT.items()}
    assert main(["--train", f"{real},{synth}", "--val", str(synth), "--out", str(run), "--epochs", "1",
                 "--batch-size", "2", "--device", "cpu", "--marks-optional", str(real),
                 "--model-config", json.dumps(tiny)]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history and math.isfinite(history[-1]["train_loss"])
