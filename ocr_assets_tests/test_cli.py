"""The `ocr-assets` verbs as a user runs them (a real subprocess), against the contracts of DESIGN.md section 3."""

import json
import subprocess
import sys

import pytest

from ocr_assets_tests.test_images import render_line, write_pair


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "ocr_assets.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture()
def gt_dir(tmp_path):
    root = tmp_path / "gt"
    write_pair(root / "كتاب one", "000001", "قال أبو عثمان", render_line("قال أبو عثمان"))
    write_pair(root / "كتاب one", "000002", "وكذلك إن تكلم", render_line("وكذلك إن تكلم"), ext=".jpg")
    write_pair(root, "orphan image", None, render_line("بلا نص"))
    write_pair(root, "latin", "just latin text", render_line("latin"))
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from ocr_assets.models.compact import CompactRecognizer

    return CompactRecognizer.new(device="cpu").save(tmp_path_factory.mktemp("m") / "untrained")


def test_validate_writes_the_contract_report(gt_dir, tmp_path):
    report = tmp_path / "r.json"
    done = cli("validate", gt_dir, "--report", report)
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text(encoding="utf-8"))
    assert sorted(data) == ["accepted", "quarantined"]
    assert sorted(data["accepted"]) == ["كتاب one/000001", "كتاب one/000002"]
    assert set(data["quarantined"]) == {"orphan image", "latin"}
    assert "transcription" in data["quarantined"]["orphan image"]


def test_recognize_gives_one_row_per_image_and_error_rows(gt_dir, model_dir, tmp_path):
    (gt_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "p.jsonl"
    done = cli("recognize", gt_dir, "--out", out, "--model", model_dir, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    by_image = {r["image"]: r for r in rows}
    assert set(by_image) == {"broken.png", "كتاب one/000001.png", "كتاب one/000002.jpg", "orphan image.png", "latin.png"}
    assert by_image["broken.png"]["error"] and by_image["broken.png"]["text"] == ""
    for row in rows:
        assert isinstance(row["text"], str) and 0.0 <= row["confidence"] <= 1.0


def test_evaluate_prints_metrics_json(gt_dir, model_dir):
    done = cli("evaluate", gt_dir, "--model", model_dir, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    for key in ("cer", "cer_norm", "wer", "lines", "lines_per_s"):
        assert key in metrics
    assert metrics["lines"] == 2 and metrics["quarantined"] == 2
    assert metrics["cer"] > 0.5  # an untrained model reads nothing right


def test_wrong_model_path_and_alias_give_one_line_errors(gt_dir, tmp_path):
    done = cli("evaluate", gt_dir, "--model", tmp_path / "nope")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "nope" in done.stderr
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    done = cli("recognize", gt_dir, "--out", tmp_path / "x.jsonl", "--model", "models:/nothing@champion", env=env)
    errors = [line for line in done.stderr.splitlines() if line.startswith("ocr-assets: error")]
    assert done.returncode == 2 and len(errors) == 1  # MLflow may warn on import; the error itself is one line
    assert "models:/nothing@champion" in errors[0]


def test_help_lists_every_verb():
    done = cli("--help")
    assert done.returncode == 0
    for verb in ("validate", "recognize", "evaluate", "finetune", "pages", "corpus", "pretrain", "serve"):
        assert verb in done.stdout


def test_finetune_writes_a_model_usable_as_model_and_guards_its_out_folder(gt_dir, model_dir, tmp_path):
    out = tmp_path / "tuned"
    done = cli("finetune", gt_dir, "--out", out, "--base", model_dir, "--epochs", 1, "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["lines"] == 2 and summary["epochs"] == 1 and summary["model"] == str(out.resolve())
    assert (out / "config.json").is_file() and (tmp_path / "tuned.adapters" / "adapter_config.json").is_file()
    scored = cli("evaluate", gt_dir, "--model", out, "--device", "cpu")
    assert scored.returncode == 0 and json.loads(scored.stdout)["lines"] == 2
    # An existing folder that is not a model is never overwritten.
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    refused = cli("finetune", gt_dir, "--out", keep, "--base", model_dir, "--epochs", 1, "--device", "cpu")
    assert refused.returncode == 2 and "not a model directory" in refused.stderr
    assert (keep / "notes.txt").read_text() == "mine"


def test_unwritable_output_is_a_one_line_error(gt_dir, tmp_path):
    done = cli("validate", gt_dir, "--report", tmp_path / "missing" / "r.json")
    assert done.returncode == 2 and done.stderr.strip().startswith("ocr-assets: error")
    assert "Traceback" not in done.stderr


def test_pretrain_renders_trains_and_writes_a_usable_model(tmp_path, gt_dir):
    small = json.dumps({"hidden_size": 64, "num_layers": 1, "ffn_size": 128, "conv_channels": [8, 16, 16, 32, 32]})
    done = cli("pretrain", "--out", tmp_path / "pre", "--synthetic", 24, "--gt", gt_dir, "--epochs", 1, "--batch-size", 8,
               "--model-config", small, "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["synthetic_lines"] == 24 and info["real_lines"] == 2
    assert (tmp_path / "pre" / "config.json").is_file()
    out = cli("evaluate", gt_dir, "--model", tmp_path / "pre", "--device", "cpu")
    assert out.returncode == 0 and json.loads(out.stdout)["lines"] == 2
