"""A training run killed with SIGKILL mid fine-tune, re-executed from failure, resumes `lora_adapters` from the
checkpoint its run family left (models/adapters/<root run>.ckpt) instead of starting at epoch 0."""

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
import torch

pytestmark = pytest.mark.slow


def _epoch(state_file) -> int:
    try:
        return int(torch.load(state_file, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - not there yet, or being replaced
        return -1


@pytest.mark.timeout(900)
def test_killed_training_run_resumes_its_fine_tune_when_reexecuted(tmp_path, monkeypatch):
    home, root = tmp_path / "home", tmp_path / "var"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "OCR_ASSETS_DATA_ROOT": str(root),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for key in ("DAGSTER_HOME", "OCR_ASSETS_DATA_ROOT", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(key, env[key])
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    config = {"ops": {"raw_line_dataset": {"config": {"synthetic": {"count": 120, "seed": 3}}},
                      "lora_adapters": {"config": {"epochs": 12, "batch_size": 8}},
                      "evaluation_report": {"config": {"register_model": False}}}}
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.Popen([dagster, "job", "execute", "-m", "ocr_assets.definitions", "-j", "main_job", "-c", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    state = None
    while state is None or _epoch(state) < 2:
        assert proc.poll() is None, "the run ended before it was killed"
        assert time.monotonic() < deadline, "no fine-tune checkpoint within 10 minutes"
        found = list((root / "models" / "adapters").glob("*.ckpt/last/trainer_state.pt"))
        state = found[0] if found else None
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    from ocr_assets.models.compact.train import checkpoint_progress

    killed_at = checkpoint_progress(state.parent.parent)["epoch"]
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # nobody told the instance: the process just died
        instance.report_run_failed(run)  # what run monitoring does for a dead run worker
        result = dg.execute_job(dg.reconstructable(main_job), instance=instance,
                                reexecution_options=dg.ReexecutionOptions.from_failure(run.run_id, instance))
        assert result.success
        adapters = instance.get_latest_materialization_event(dg.AssetKey("lora_adapters"))
        assert adapters.run_id == result.run_id != run.run_id
        epochs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message.startswith("lora epoch ")]
    # Only the epochs that were left ran in the re-execution: the first one it logs is the one the kill interrupted.
    assert epochs and epochs[0].startswith(f"lora epoch {killed_at}:"), (killed_at, epochs[:3])
    assert len(epochs) == 12 - killed_at


def main_job():
    from ocr_assets.definitions import defs

    return defs.resolve_job_def("main_job")
