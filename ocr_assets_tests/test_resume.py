"""A fine-tune killed with SIGKILL resumes from its last checkpoint when started again with the same --out."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ocr_assets_tests.test_images import render_line, write_pair

pytestmark = pytest.mark.slow

WORDS = "قال أبو عثمان وهذا كتاب الحيوان في معرفة طبائع الأشياء وذكر الأخبار".split()


def _gt(folder, n=48):
    import random

    rng = random.Random(3)
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
        write_pair(folder, f"book/{i:04d}", text, render_line(text, size=28))


def _epoch(state_file) -> int:
    try:
        return int(torch.load(state_file, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - being replaced right now
        return -1


@pytest.mark.timeout(900)
def test_finetune_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    gt, out = tmp_path / "gt", tmp_path / "model"
    _gt(gt)
    env = {**os.environ, "OCR_ASSETS_DATA_ROOT": str(tmp_path / "var")}
    cmd = [sys.executable, "-m", "ocr_assets.cli", "finetune", str(gt), "--out", str(out), "--epochs", "12",
           "--device", "cpu", "--batch-size", "8"]
    state = tmp_path / "model.ckpt" / "last" / "trainer_state.pt"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while _epoch(state) < 2:  # two epochs done and checkpointed, the third under way
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.5)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from ocr_assets.models.compact.train import checkpoint_progress

    # The kill may land mid-checkpoint (between the renames of last.tmp -> last): resume reads last or last.old.
    killed_at = checkpoint_progress(tmp_path / "model.ckpt")["epoch"]
    assert 2 <= killed_at < 12 and not out.exists()
    # As if a kill had hit while a checkpoint was being written: a half-written last.tmp is ignored.
    (state.parent.parent / "last.tmp").mkdir(exist_ok=True)
    (state.parent.parent / "last.tmp" / "model.safetensors").write_bytes(b"\x00" * 10)

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from the checkpoint" in again.stderr and f"(epoch {killed_at}," in again.stderr
    result = json.loads(again.stdout)
    assert result["resumed_from_epoch"] == killed_at and result["epochs"] == 12
    epochs_run = [line for line in again.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs_run) == 12 - killed_at  # only the epochs that were left
    assert (out / "config.json").is_file() and not (tmp_path / "model.ckpt").exists()
