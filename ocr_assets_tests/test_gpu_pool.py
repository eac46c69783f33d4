"""The `gpu` pool of the project's dagster.yaml (one slot, op granularity) under two runs at once: two scans
materialized by two `dagster asset materialize` processes against one instance; their `ocr_pages` steps (pool
`gpu`) must never run at the same time, and the second waits for the slot instead of failing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ocr_assets.defs.resources import StorageResource
from ocr_assets_tests.test_pages import LINES, render_page

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_two_runs_share_the_single_gpu_slot(tmp_path, monkeypatch):
    home, root, inbox = tmp_path / "home", tmp_path / "root", tmp_path / "inbox"
    for folder in (home, root, inbox):
        folder.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "OCR_ASSETS_DATA_ROOT": str(root), "OCR_ASSETS_INBOX": str(inbox),
           "OCR_ASSETS_INBOX_SETTLE_S": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    render_page()[0].save(inbox / "a.png")
    render_page(LINES[::-1])[0].save(inbox / "b.png")

    from ocr_assets.defs.definitions import build_defs

    defs = build_defs()
    with dg.DagsterInstance.get() as instance:
        # One tick of the real inbox sensor registers both scans (partitions and manifest entries).
        sensor = defs.get_sensor_def("scan_inbox_sensor")
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                             resources={"storage": StorageResource()}))
        keys = list(result.dynamic_partitions_requests[0].partition_keys)
        instance.add_dynamic_partitions("scans", keys)
    assert len(keys) == 2

    exe = os.path.join(os.path.dirname(sys.executable), "dagster")
    child_env = {**os.environ, **env}
    procs = [subprocess.Popen([exe, "asset", "materialize", "-m", "ocr_assets.definitions",
                               "--select", "page_lines,ocr_pages", "--partition", key],
                              cwd=REPO, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for key in keys]
    outputs = [p.communicate(timeout=800)[0].decode(errors="replace") for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        spans, blocked = [], []
        for run in runs:
            records = instance.all_logs(run.run_id)
            steps = {}
            for record in records:
                event = record.dagster_event
                if event is None or event.step_key != "ocr_pages":
                    continue
                if event.event_type == dg.DagsterEventType.STEP_START:
                    steps["start"] = record.timestamp
                elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                    steps["end"] = record.timestamp
                elif "blocked by limit for pool gpu" in (event.message or ""):
                    blocked.append(run.run_id)
            spans.append((steps["start"], steps["end"]))
    spans.sort()
    # One slot: the second run's OCR starts only after the first one's ended.
    assert spans[1][0] >= spans[0][1], spans
    assert blocked, "neither run waited for the gpu slot: the runs did not overlap, so the test proved nothing"
    corpus_scans = sorted(p.name for p in (root / "corpus" / "scans").iterdir())
    assert corpus_scans == sorted(keys)
    for key in keys:
        scan = json.loads((root / "corpus" / "scans" / key / "scan.json").read_text())
        assert scan["pages"]
