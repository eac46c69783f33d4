"""Backends found from a model directory alone: selection, the remote-code gate, damaged directories, and a
LoRA fine-tune + merge through the backend-neutral training flow (real tiny models, CPU)."""

from __future__ import annotations

import io
import json
import random

import pyarrow as pa
import pytest
import torch
from PIL import Image

from ocr_assets.errors import ModelError, RemoteCodeNotAllowedError
from ocr_assets.models.backends import BACKENDS, TrainReport, backend_for
from ocr_assets.models.compact.backend import CompactBackend
from ocr_assets.models.deepseek.backend import Ocr1UnslothBackend, Ocr2Backend
from ocr_assets.models.resolve import load_recognizer
from ocr_assets.settings import FinetuneSettings, LoraSettings
from ocr_assets.training.finetune import finetune_gt_dir, lora_finetune, merge_adapters
from ocr_assets.training.lora import lora_config, lora_kwargs
from ocr_assets_tests.tiny_models import latin_line, save_tiny_compact, tiny_ocr2

WORDS = ["abc", "bad", "cab", "dead", "face", "bead", "deaf", "fade"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_dir(path, model_type: str):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    return path


def lines(count: int, seed: int, extra: str = "") -> pa.Table:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) + extra for _ in range(count)]
    return pa.table({"image": [latin_line(t) for t in texts], "text": texts})


# --- selection and the remote-code gate ---------------------------------------------------------------


@pytest.mark.parametrize(
    "model_type, cls",
    [
        ("compact_ctc_ocr", CompactBackend),
        ("deepseek_ocr2", Ocr2Backend),
        ("deepseek_vl_v2", Ocr1UnslothBackend),
        ("deepseek_ocr", Ocr1UnslothBackend),
    ],
)
def test_backend_for_picks_the_backend_by_model_type(tmp_path, model_type, cls):
    backend = backend_for(model_dir(tmp_path, model_type))
    assert type(backend) is cls
    assert backend.remote_code is (cls is Ocr1UnslothBackend)
    assert backend.default_learning_rate > 0


def test_every_registered_model_type_has_a_backend(tmp_path):
    for i, model_type in enumerate(BACKENDS):
        assert backend_for(model_dir(tmp_path / str(i), model_type)).name


def test_unknown_model_type_and_damaged_config_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="'bert'.*known"):
        load_recognizer(model_dir(tmp_path / "bert", "bert"), device="cpu")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text('{"model_type": "compact_ctc_', encoding="utf-8")
    with pytest.raises(ModelError, match="not valid JSON") as err:
        load_recognizer(damaged, device="cpu")
    assert "\n" not in str(err.value)


def test_remote_code_backend_is_refused_without_opt_in(tmp_path):
    v1 = model_dir(tmp_path / "v1", "deepseek_vl_v2")
    with pytest.raises(RemoteCodeNotAllowedError, match="trust-remote-code"):
        load_recognizer(v1, device="cpu")
    # The training flow asks the same question before it reads a single line.
    with pytest.raises(RemoteCodeNotAllowedError):
        finetune_gt_dir(tmp_path / "gt", tmp_path / "out", base=str(v1), log=lambda m: None)
    with pytest.raises(RemoteCodeNotAllowedError):
        lora_finetune(v1, lines(2, 0), None, FinetuneSettings(), tmp_path / "ad")


def test_remote_code_backend_with_opt_in_says_it_needs_unsloth_on_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU-only error path cannot be observed")
    v1 = model_dir(tmp_path / "v1", "deepseek_vl_v2")
    for device in ("auto", "cpu"):
        with pytest.raises(ModelError, match="CUDA") as err:
            load_recognizer(v1, device=device, trust_remote_code=True)
        assert type(err.value).__name__ == "UnslothUnavailableError" and "\n" not in str(err.value)
    with pytest.raises(ModelError, match="CUDA"):
        merge_adapters(v1, tmp_path / "ad", tmp_path / "merged", trust_remote_code=True)


# --- one place for LoRA arguments ---------------------------------------------------------------------


def test_peft_config_and_unsloth_kwargs_come_from_the_same_settings():
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, modules_to_save=["classifier"])
    kwargs = lora_kwargs(settings, ["q_proj"])
    assert kwargs == {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj"],
                      "modules_to_save": ["classifier"], "bias": "none"}
    config = lora_config(settings, ["q_proj"])
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (4, 8, {"q_proj"})


# --- fine-tune and merge through the backend-neutral flow ---------------------------------------------


def test_compact_finetune_and_merge_through_the_training_flow(tmp_path):
    base = save_tiny_compact(tmp_path / "base", sorted(set("".join(WORDS) + " ")))
    # "z" is not in the base alphabet: the backend grows it and trains the output layer in full.
    train, val = lines(12, seed=1, extra=" z"), lines(4, seed=2, extra=" z")
    seen = []
    settings = FinetuneSettings(epochs=2, batch_size=4, rank=2, alpha=4, device="cpu")
    report = lora_finetune(base, train, val, settings, tmp_path / "adapters", on_epoch=lambda e, m: seen.append(e))
    assert isinstance(report, TrainReport) and seen == [0, 1] and len(report.history) == 2
    assert report.extra["learning_rate"] == CompactBackend.default_learning_rate  # no rate set: the backend's
    assert report.extra["added_characters"] == "z" and report.extra["best_val_cer"] is not None
    record = json.loads((tmp_path / "adapters" / "training.json").read_text(encoding="utf-8"))
    assert record["backend"] == "compact" and record["settings"]["rank"] == 2 and len(record["history"]) == 2

    merged = merge_adapters(base, tmp_path / "adapters", tmp_path / "merged")
    recognizer = load_recognizer(merged, device="cpu")
    assert recognizer.backend == "compact" and recognizer.codec.alphabet[-1] == "z"  # torch or ONNX reader
    out = recognizer.recognize([train.column("image")[0].as_py()])
    assert out[0].error is None and 0.0 <= out[0].confidence <= 1.0

    again = lora_finetune(base, train, None, FinetuneSettings(epochs=1, batch_size=4, rank=2, learning_rate=1e-3,
                                                             device="cpu"), tmp_path / "adapters")
    assert again.extra["learning_rate"] == 1e-3


def test_deepseek_ocr2_finetune_and_merge_through_the_training_flow(tmp_path):
    train = lines(2, seed=3)
    base = tiny_ocr2(train.column("text").to_pylist()).save(tmp_path / "base")
    settings = FinetuneSettings(epochs=2, batch_size=2, rank=4, alpha=8, dropout=0.0, device="cpu")
    report = lora_finetune(base, train, None, settings, tmp_path / "adapters")
    assert report.extra["backend"] == "deepseek_ocr2" and report.extra["steps"] == 2
    assert report.extra["learning_rate"] == Ocr2Backend.default_learning_rate
    assert [h["epoch"] for h in report.history] == [0, 1]
    assert (tmp_path / "adapters" / "adapter_model.safetensors").is_file()
    merged = merge_adapters(base, tmp_path / "adapters", tmp_path / "merged", dtype="float32")
    recognizer = load_recognizer(merged, device="cpu")
    assert recognizer.backend == "deepseek_ocr2"
    image = Image.open(io.BytesIO(train.column("image")[0].as_py()))
    assert recognizer.recognize([image])[0].error is None


def test_remote_code_is_refused_by_the_corpus_asset_and_the_pyfunc(tmp_path, monkeypatch):
    """The same refusal where a model arrives through a run config or the registry, not only the CLI."""
    import dagster as dg

    from ocr_assets.definitions import build_defs
    from ocr_assets.serving.pyfunc import OcrPyfuncModel

    v1 = model_dir(tmp_path / "v1", "deepseek_vl_v2")
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("OCR_ASSETS_TRUST_REMOTE_CODE", raising=False)
    defs = build_defs("local")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("scans", ["0123456789abcdef"])
        result = defs.resolve_job_def("ocr_scans_job").execute_in_process(
            instance=instance, partition_key="0123456789abcdef", raise_on_error=False,
            run_config={"ops": {"ocr_pages": {"config": {"model": str(v1)}}}})
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "RemoteCodeNotAllowedError" in str(failure.event_specific_data.error)

    from mlflow.pyfunc import PythonModelContext

    with pytest.raises(RemoteCodeNotAllowedError):  # MLflow's own context, as a served model gets it
        OcrPyfuncModel().load_context(PythonModelContext(artifacts={"model_dir": str(v1)}, model_config={}))
