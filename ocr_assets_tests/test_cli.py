"""The `ocr-assets` verbs as a user runs them: real subprocesses of the installed `ocr-assets` command, each in a
temp working folder with a temp data root (docs/ARCHITECTURE.md, "CLI")."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ocr_assets_tests.test_images import render_line, write_pair

BIN = Path(sys.executable).with_name("ocr-assets")
COMMAND = [str(BIN)] if BIN.is_file() else [sys.executable, "-m", "ocr_assets.cli"]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A user's folder: the working directory and the data root of every `cli` call, no tracking server."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(folder / "var"))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "OCR_ASSETS_DEBUG", "OCR_ASSETS_TRUST_REMOTE_CODE"):
        monkeypatch.delenv(name, raising=False)
    return folder


def cli(*args, cwd=None, env=None):
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)


def assert_one_line_error(done, code: int = 2) -> str:
    """Exit `code` and exactly one stderr line `ocr-assets: error: ...`, no traceback; returns that line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("ocr-assets: error: "), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return lines[0]


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


def test_validate_writes_the_contract_report(gt_dir, tmp_path, home):
    report = tmp_path / "r.json"
    done = cli("validate", gt_dir, "--report", report, cwd=home)
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text(encoding="utf-8"))
    assert sorted(data) == ["accepted", "quarantined"]
    assert sorted(data["accepted"]) == ["كتاب one/000001", "كتاب one/000002"]
    assert set(data["quarantined"]) == {"orphan image", "latin"}
    assert "transcription" in data["quarantined"]["orphan image"]


def test_recognize_reads_every_image_and_exits_1_when_one_failed(gt_dir, model_dir, tmp_path, home):
    (gt_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "p.jsonl"
    done = cli("recognize", gt_dir, "--out", out, "--model", model_dir, "--device", "cpu", cwd=home)
    assert done.returncode == 1, done.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    by_image = {r["image"]: r for r in rows}
    assert set(by_image) == {"broken.png", "كتاب one/000001.png", "كتاب one/000002.jpg", "orphan image.png", "latin.png"}
    assert by_image["broken.png"]["error"] and by_image["broken.png"]["text"] == ""
    assert [r["image"] for r in rows if r.get("error")] == ["broken.png"]  # the good ones were read
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("recognize: 5 inputs, read 4, failed 1, seconds "), done.stderr
    assert f"model: {model_dir}" in done.stderr  # which model was used


def test_recognize_on_an_empty_folder_says_so_and_exits_1(tmp_path, home):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    done = cli("recognize", empty, "--out", tmp_path / "p.jsonl", cwd=home)
    assert done.returncode == 1, done.stderr
    assert "recognize: 0 inputs, read 0, failed 0" in done.stderr
    assert "ocr-assets: error: no images" in done.stderr and "Traceback" not in done.stderr


def test_recognize_on_a_gpu_that_is_not_there_is_one_line_and_leaves_no_worker(gt_dir, tmp_path, home):
    """`--device cuda` forks the GPU path's decode workers while the model loads; without CUDA the run stops with
    one line and its workers go with it (the command returns; a worker left behind would keep its pipes open)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = cli("recognize", gt_dir, "--out", tmp_path / "p.jsonl", "--device", "cuda", cwd=home)
    assert "no CUDA device" in assert_one_line_error(done)


def test_evaluate_reads_with_the_shipped_model_when_none_is_given(gt_dir, model_dir, home):
    shipped = cli("evaluate", gt_dir, "--device", "cpu", cwd=home)
    assert shipped.returncode == 0, shipped.stderr
    metrics = json.loads(shipped.stdout)
    assert metrics["model"] == "shipped default" and "model: shipped default" in shipped.stderr
    assert metrics["lines"] == 2 and metrics["quarantined"] == 2
    untrained = json.loads(cli("evaluate", gt_dir, "--model", model_dir, "--device", "cpu", cwd=home).stdout)
    # The shipped model reads clean Amiri lines nearly perfectly; random weights do not.
    assert metrics["cer_norm"] < 0.15 and metrics["cer_norm"] < untrained["cer_norm"], (metrics, untrained)


def test_pretrain_with_a_missing_gt_folder_is_one_line(tmp_path, home):
    line = assert_one_line_error(cli("pretrain", "--out", tmp_path / "pre", "--gt", "missing/", cwd=home))
    assert "missing/" in line
    assert not (tmp_path / "pre").exists()


def test_a_corrupt_model_config_is_one_line(gt_dir, tmp_path, home):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text('{"model_type": "compact_ctc_ocr", ', encoding="utf-8")
    line = assert_one_line_error(cli("evaluate", gt_dir, "--model", damaged, cwd=home))
    assert "config.json" in line and "damaged" in line
    # OCR_ASSETS_DEBUG=1 gives the traceback instead.
    debug = cli("evaluate", gt_dir, "--model", damaged, cwd=home, env={**os.environ, "OCR_ASSETS_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_model_that_runs_its_own_code_needs_the_opt_in(gt_dir, tmp_path, home):
    remote = tmp_path / "deepseek-v1"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "deepseek_vl_v2"}), encoding="utf-8")
    line = assert_one_line_error(cli("recognize", gt_dir, "--out", tmp_path / "p.jsonl", "--model", remote, cwd=home))
    assert "--trust-remote-code" in line
    assert not (tmp_path / "p.jsonl").exists()  # refused before anything ran


def test_a_missing_model_and_a_missing_registry_model_are_one_line_and_create_no_store(gt_dir, tmp_path, home):
    line = assert_one_line_error(cli("evaluate", gt_dir, "--model", tmp_path / "nope", cwd=home))
    assert "nope" in line
    # No registry anywhere: the alias is refused and no mlflow.db appears, in the cwd or the data root.
    line = assert_one_line_error(cli("recognize", gt_dir, "--out", tmp_path / "x.jsonl", "--model",
                                     "models:/nope@champion", cwd=home))
    assert "models:/nope@champion" in line
    assert not list(home.rglob("mlflow.db")) and not list(tmp_path.rglob("mlflow.db"))
    # An explicit (empty) tracking store: the alias is not found there, still one line.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    line = assert_one_line_error(cli("recognize", gt_dir, "--out", tmp_path / "x.jsonl", "--model",
                                     "models:/nothing@champion", cwd=home, env=env))
    assert "models:/nothing@champion" in line


def test_help_lists_every_verb_and_settings_flags_carry_their_help(home):
    from ocr_assets.settings import FinetuneSettings, PretrainSettings, help_of

    done = cli("--help", cwd=home)
    assert done.returncode == 0
    for verb in ("validate", "recognize", "evaluate", "finetune", "pages", "corpus", "pretrain", "serve"):
        assert verb in done.stdout
    env = {**os.environ, "COLUMNS": "400"}  # one option per line, help unwrapped
    finetune = cli("finetune", "--help", cwd=home, env=env).stdout
    pretrain = cli("pretrain", "--help", cwd=home, env=env).stdout
    assert help_of(FinetuneSettings, "learning_rate") in finetune and "--lr" in finetune
    assert help_of(PretrainSettings, "synthetic_lines") in pretrain and "--synthetic" in pretrain
    for verb in ("recognize", "evaluate", "pages", "corpus", "finetune", "serve"):
        assert "--trust-remote-code" in cli(verb, "--help", cwd=home).stdout


def test_unset_flags_keep_the_settings_defaults_and_bad_values_are_one_line(gt_dir, tmp_path, home):
    from ocr_assets.cli import build_parser, settings_from_args
    from ocr_assets.settings import FinetuneSettings, PretrainSettings

    args = build_parser().parse_args(["finetune", "gt", "--out", "o", "--rank", "8", "--lr", "0.01"])
    assert settings_from_args(FinetuneSettings, args) == FinetuneSettings(rank=8, learning_rate=0.01)
    args = build_parser().parse_args(["pretrain", "--out", "o", "--gt", "a", "--gt", "b", "--synthetic", "5"])
    assert settings_from_args(PretrainSettings, args) == PretrainSettings(gt_folders=["a", "b"], synthetic_lines=5)
    line = assert_one_line_error(cli("finetune", gt_dir, "--out", tmp_path / "t", "--rank", "0", cwd=home))
    assert "rank" in line
    assert not (tmp_path / "t").exists()


def test_unwritable_output_is_a_one_line_error(gt_dir, tmp_path, home):
    assert_one_line_error(cli("validate", gt_dir, "--report", tmp_path / "missing" / "r.json", cwd=home))


@pytest.mark.slow
def test_finetune_writes_a_model_usable_as_model_and_guards_its_out_folder(gt_dir, model_dir, tmp_path, home):
    out = tmp_path / "tuned"
    done = cli("finetune", gt_dir, "--out", out, "--base", model_dir, "--epochs", 1, "--device", "cpu", cwd=home)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["lines"] == 2 and summary["epochs"] == 1 and summary["model"] == str(out.resolve())
    assert (out / "config.json").is_file() and (tmp_path / "tuned.adapters" / "adapter_config.json").is_file()
    scored = cli("evaluate", gt_dir, "--model", out, "--device", "cpu", cwd=home)
    assert scored.returncode == 0 and json.loads(scored.stdout)["lines"] == 2
    # An existing folder that is not a model is never overwritten.
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    refused = cli("finetune", gt_dir, "--out", keep, "--base", model_dir, "--epochs", 1, "--device", "cpu", cwd=home)
    assert "not a model directory" in assert_one_line_error(refused)
    assert (keep / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_pretrain_renders_trains_and_writes_a_usable_model(tmp_path, gt_dir, home):
    small = json.dumps({"hidden_size": 64, "num_layers": 1, "ffn_size": 128, "conv_channels": [8, 16, 16, 32, 32]})
    done = cli("pretrain", "--out", tmp_path / "pre", "--synthetic", 24, "--gt", gt_dir, "--epochs", 1,
               "--batch-size", 8, "--model-config", small, "--device", "cpu", cwd=home)
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["synthetic_lines"] == 24 and info["real_lines"] == 2
    assert json.loads((tmp_path / "pre" / "config.json").read_text())["hidden_size"] == 64  # --model-config applied
    out = cli("evaluate", gt_dir, "--model", tmp_path / "pre", "--device", "cpu", cwd=home)
    assert out.returncode == 0 and json.loads(out.stdout)["lines"] == 2


def test_pages_reads_the_good_pages_and_exits_1_for_a_broken_one(tmp_path, home):
    from ocr_assets.synth.pages import render_page

    pages = tmp_path / "pages"
    pages.mkdir()
    render_page(1).image.save(pages / "good.png")
    (pages / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ncut short")
    out = tmp_path / "out"
    done = cli("pages", pages, "--out", out, "--device", "cpu", cwd=home)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "broken.png: skipped:" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("pages: 2 inputs, read 1, failed 1, seconds ")
    assert (out / "good.txt").read_text(encoding="utf-8").strip() and not (out / "broken.txt").exists()
    empty = tmp_path / "no-pages"
    empty.mkdir()
    done = cli("pages", empty, "--out", out, cwd=home)
    assert done.returncode == 1 and "pages: 0 inputs" in done.stderr and "no page images" in done.stderr


def test_corpus_reads_the_inbox_once_with_the_resolved_model(tmp_path, home, monkeypatch):
    from ocr_assets.synth.pages import render_page

    inbox = home / "var" / "inbox"
    inbox.mkdir(parents=True)
    render_page(2).image.save(inbox / "page.png")
    monkeypatch.setenv("OCR_ASSETS_INBOX_SETTLE_S", "0")
    done = cli("corpus", "--device", "cpu", cwd=home)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["new_scans"] == 1 and summary["pages"] == 1 and summary["lines"] > 5
    assert "model: shipped default" in done.stderr
    assert (home / "var" / "corpus" / "corpus.txt").read_text(encoding="utf-8").strip()
    again = cli("corpus", "--device", "cpu", cwd=home)
    assert again.returncode == 0 and json.loads(again.stdout)["new_scans"] == 0
    assert not list(home.rglob("mlflow.db"))
