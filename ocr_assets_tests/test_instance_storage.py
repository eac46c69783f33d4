"""The project's local instance (dagster.yaml) under simultaneous pool claims from separate processes.

Six processes wait on one barrier and claim the `gpu` pool's only slot at the same instant, three times over: exactly
one holds it each round, and once it frees the slot one waiting step (never two) gets it. With Dagster's stock SQLite
storage the same script ended with two holders in two of three tries (see ocr_assets/defs/instance_storage.py)."""

import multiprocessing as mp
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKERS = 6


def _claim(home: str, run_id: str, barrier, results) -> None:
    os.environ["DAGSTER_HOME"] = home
    with dg.DagsterInstance.get() as instance:
        barrier.wait()
        status = instance.event_log_storage.claim_concurrency_slot("gpu", run_id, "ocr_pages")
        results.put((run_id, status.is_claimed))


def _claim_all(home: Path, run_ids: list[str]) -> dict[str, bool]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(run_ids)), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(home), run_id, barrier, results)) for run_id in run_ids]
    for proc in procs:
        proc.start()
    outcome = dict(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return outcome


@pytest.mark.timeout(600)
@pytest.mark.parametrize("round_", range(3))
def test_one_slot_is_held_by_one_step_when_processes_claim_at_once(tmp_path, monkeypatch, round_):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.event_log_storage).__name__ == "SlotSafeSqliteEventLogStorage"
        instance.event_log_storage.set_concurrency_slots("gpu", 1)

    run_ids = [f"run{i}" for i in range(WORKERS)]
    first = _claim_all(home, run_ids)
    holders = [run_id for run_id, claimed in first.items() if claimed]
    assert len(holders) == 1, first

    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert [slot.run_id for slot in storage.get_concurrency_info("gpu").claimed_slots] == holders
        storage.free_concurrency_slots_for_run(holders[0])
        # The waiting steps retry their claims (as Dagster's step loop does): again one of them, not two.
        waiting = [run_id for run_id in run_ids if run_id != holders[0]]
    second = _claim_all(home, waiting)
    assert sum(second.values()) == 1, second
    with dg.DagsterInstance.get() as instance:
        claimed = instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        assert [slot.run_id for slot in claimed] == [r for r, c in second.items() if c]
