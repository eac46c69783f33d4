"""The scan inbox under the real `dagster-daemon` with the project's dagster.yaml (queued run coordinator, the
`gpu` pool, run monitoring): pages dropped into the inbox become partitions, runs and a corpus with nobody
pressing a button, and a restarted daemon repeats nothing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from ocr_assets_tests.test_pages import LINES, render_page

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _start_daemon(env, log):
    exe = os.path.join(os.path.dirname(sys.executable), "dagster-daemon")
    return subprocess.Popen([exe, "run", "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(predicate, timeout, what, proc, log_path):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s; daemon log:\n"
                                 + log_path.read_text(errors="replace")[-4000:])
        time.sleep(2)


@pytest.mark.timeout(900)
def test_daemon_ocrs_new_scans_into_the_corpus_and_a_restart_repeats_nothing(tmp_path, monkeypatch):
    home, root, inbox = tmp_path / "home", tmp_path / "root", tmp_path / "inbox"
    for folder in (home, root, inbox):
        folder.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance's dagster.yaml reads it
    env = {**os.environ, "DAGSTER_HOME": str(home), "OCR_ASSETS_DATA_ROOT": str(root),
           "OCR_ASSETS_INBOX": str(inbox), "OCR_ASSETS_INBOX_SETTLE_S": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    render_page()[0].save(inbox / "a.png")
    render_page(LINES[::-1])[0].save(inbox / "b.png")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "ab") as log:
        daemon = _start_daemon(env, log)
        try:
            summary = root / "corpus" / "summary.json"

            def corpus_has_both():
                return summary.exists() and json.loads(summary.read_text()).get("scans") == 2 \
                    and json.loads(summary.read_text()).get("pending") == 0

            _wait(corpus_has_both, 600, "the corpus of both scans", daemon, log_path)
            # Stopped hard and started again: the inbox sensor sees nothing new, no run is repeated.
            _stop(daemon, signal.SIGKILL)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                runs_before = len(instance.get_runs(filters=dg.RunsFilter(job_name="ocr_scans_job")))
                assert runs_before == 1  # two scans, one batch
            daemon = _start_daemon(env, log)
            time.sleep(75)  # more than two sensor intervals (30 s)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                runs = instance.get_runs(filters=dg.RunsFilter(job_name="ocr_scans_job"))
                assert len(runs) == runs_before
                assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
                assert len(instance.get_dynamic_partitions("scans")) == 2
        finally:
            _stop(daemon)
    text = (root / "corpus" / "corpus.txt").read_text(encoding="utf-8")
    assert text.count("=== ") == 2 and LINES[0] in text
