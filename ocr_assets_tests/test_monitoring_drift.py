"""Drift on a real Dagster instance: clean scans after clean scans raise nothing; degraded scans (darker paper,
blurred, another typeface) fail the drift check with a report, alert the webhook, and the drift sensor requests the
champion's re-evaluation and a review queue weighted to the drifted scans."""

import json

import dagster as dg
import pytest

from ocr_assets.defs.resources import StorageResource
from ocr_assets_tests.monitoring_kit import WebhookReceiver, clean_scan, degraded_scan
from ocr_assets_tests.test_corpus import _tick


@pytest.fixture()
def env(tmp_path, monkeypatch):
    root, box = tmp_path / "root", tmp_path / "inbox"
    box.mkdir()
    hook = WebhookReceiver()
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(root))
    monkeypatch.setenv("OCR_ASSETS_INBOX", str(box))
    monkeypatch.setenv("OCR_ASSETS_INBOX_SETTLE_S", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # no champion yet: the shipped model reads
    monkeypatch.setenv("OCR_ASSETS_MONITORING", json.dumps({"reference_pages": 6, "window_pages": 6, "golden_lines": 16}))
    monkeypatch.setenv("OCR_ASSETS_ALERT_WEBHOOK", hook.url)
    yield root, box, hook
    hook.close()


def _signals_and_drift(defs, instance, keys):
    """scan_drift_signals for the new scans (one run over the partition range), then scan_drift with its check."""
    assets = [defs.get_assets_def(k) for k in ("scan_drift_signals", "scan_drift")]
    resources = {"storage": StorageResource()}
    assert dg.materialize(assets, instance=instance, resources=resources, selection=["scan_drift_signals"],
                          tags={"dagster/asset_partition_range_start": keys[0],
                                "dagster/asset_partition_range_end": keys[-1]}).success
    result = dg.materialize(assets, instance=instance, resources=resources, selection=["scan_drift"])
    assert result.success  # a failed check is a finding, not a failed run
    (check,) = result.get_asset_check_evaluations()
    return check, result.asset_materializations_for_node("scan_drift")[0].metadata


def _drift_tick(defs, instance, cursor):
    sensor = defs.get_sensor_def("drift_sensor")
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                                        resources={"storage": StorageResource()}))


@pytest.mark.timeout(900)
def test_degraded_scans_fail_the_drift_check_and_the_sensor_responds(env):
    from ocr_assets.defs.definitions import build_defs

    root, box, hook = env
    defs = build_defs()
    with dg.instance_for_test() as instance:
        skip = _drift_tick(defs, instance, None)
        assert not skip.run_requests and "has not run yet" in skip.skip_message

        # The reference window: the first six pages read.
        for i in range(6):
            clean_scan(i).save(box / f"clean{i}.png")
        cursor = _tick(defs, instance, None).cursor
        keys = instance.get_dynamic_partitions("scans")
        check, _ = _signals_and_drift(defs, instance, keys)
        assert check.passed and "not enough pages" in check.metadata["reason"].value
        assert json.loads((root / "monitoring" / "reference.json").read_text())["pages"] == 6

        # More clean scans: compared, no drift, the sensor explains its skip and raises nothing.
        for i in range(6, 11):
            clean_scan(i).save(box / f"clean{i}.png")
        cursor = _tick(defs, instance, cursor).cursor
        new = instance.get_dynamic_partitions("scans")[len(keys):]
        check, meta = _signals_and_drift(defs, instance, new)
        assert check.passed, check.metadata["reason"].value
        assert meta["current_pages"].value == 5 and meta["severity"].value == "none"
        clean = _drift_tick(defs, instance, None)
        assert not clean.run_requests and "passed: no drift" in clean.skip_message
        assert hook.received == []

        # Degraded scans: the check fails with a severity and a readable report; the webhook hears of it.
        for i in range(11, 17):
            degraded_scan(i).save(box / f"degraded{i}.png")
        _tick(defs, instance, cursor)
        degraded = instance.get_dynamic_partitions("scans")[len(keys) + len(new):]
        check, meta = _signals_and_drift(defs, instance, degraded)
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        drifted = set(meta["drifted"].value)
        # Measured: brightness, contrast, ink_share, noise, sharpness (+ chars_per_height) drift on these pages.
        assert {"brightness", "contrast", "sharpness"} <= drifted, drifted
        assert set(meta["drifted_scans"].value) == set(degraded)
        report = meta["report"].value
        html = open(report, encoding="utf-8").read()
        assert "Scan drift: ERROR" in html and "data:image/png;base64" in html
        assert "plotly" in html  # Evidently's interactive plots, one per statistic, below our summary
        assert "data:image/png;base64" in meta["plot"].value
        assert [a["kind"] for a in hook.received] == ["drift"] and "ERROR" in hook.received[0]["message"]

        # The drift sensor asks for the re-evaluation and the review queue (no corrections yet: no challenger).
        tick = _drift_tick(defs, instance, clean.cursor)
        assert [r.job_name for r in tick.run_requests] == ["drift_response_job"]
        assert tick.run_requests[0].tags["ocr_assets/drift_severity"] == "ERROR"
        assert not _drift_tick(defs, instance, tick.cursor).run_requests  # handled once
        run = defs.resolve_job_def("drift_response_job").execute_in_process(instance=instance)
        assert run.success
        queue = [json.loads(l) for l in (root / "monitoring" / "review_queue.jsonl").read_text().splitlines()]
        # Drifted scans' lines come first, least confident first within them.
        flags = [q["drifted"] for q in queue]
        assert flags[0] and flags == sorted(flags, reverse=True)
        assert sum(flags) == 6 * 5 and {q["scan"] for q in queue if q["drifted"]} == set(degraded)
        reevaluation = run.asset_materializations_for_node("champion_reevaluation")[0].metadata
        assert reevaluation["runs"].value == 1 and 0 <= reevaluation["cer_norm"].value < 0.2
        assert "data:image/png;base64" in reevaluation["cer_over_time"].value
        (cer_check,) = [c for c in run.get_asset_check_evaluations() if c.check_name == "champion_reevaluation_check"]
        assert cer_check.passed

        # With corrections waiting, the next failed drift check also asks for a challenger fine-tune.
        from ocr_assets.monitoring.corrections import import_files, line_id
        from ocr_assets.storage import Storage
        from ocr_assets_tests.monitoring_kit import truth_of

        fix = {"line_id": line_id(degraded[0], 1, 1), "text": truth_of(root, degraded[0])[0]}
        assert import_files(Storage.from_env(), [("fix.jsonl", json.dumps(fix, ensure_ascii=False).encode())]).accepted == 1
        assert not _signals_and_drift(defs, instance, degraded)[0].passed
        again = _drift_tick(defs, instance, tick.cursor)
        assert [r.job_name for r in again.run_requests] == ["drift_response_job", "challenger_job"]


def test_a_failed_run_reaches_the_alert_webhook(env):
    """The run-failure sensor sends a failed run to the configured webhook (a real server on 127.0.0.1)."""
    from ocr_assets.defs.definitions import build_defs

    _, _, hook = env
    defs = build_defs()
    with dg.instance_for_test() as instance:
        # No corrections at all: the challenger asset fails with a reason a person can act on.
        failed = defs.resolve_job_def("challenger_job").execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success
        event = next(e for e in failed.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(sensor_name="run_failure_alert_sensor", dagster_instance=instance,
                                                     dagster_run=failed.dagster_run, dagster_event=event).for_run_failure()
        defs.get_sensor_def("run_failure_alert_sensor")(context)
    (alert,) = hook.received
    assert alert["kind"] == "run_failure" and alert["details"]["job"] == "challenger_job"
    assert alert["details"]["run_id"] == failed.run_id and "failed" in alert["message"]


def test_reevaluation_schedule_history_and_a_worse_champion_fails_the_check(env, tmp_path):
    """The weekly schedule targets the re-evaluation; each run appends to the history (MLflow run, plot); a
    champion that reads the golden set worse than the last re-evaluation fails the check and alerts."""
    import mlflow

    from ocr_assets.defs.definitions import build_defs
    from ocr_assets.monitoring.loop import start_experiment
    from ocr_assets.registry import CHAMPION, Registry
    from ocr_assets.storage import Storage
    from ocr_assets_tests.monitoring_kit import SENTENCES
    from ocr_assets_tests.tiny_models import save_tiny_compact

    root, _, hook = env
    defs = build_defs()
    schedule = defs.get_schedule_def("champion_reevaluation_schedule")
    assert schedule.cron_schedule == "0 4 * * 1" and schedule.job_name == "reevaluation_job"  # weekly by default
    job = defs.resolve_job_def("reevaluation_job")
    with dg.instance_for_test() as instance:
        first = job.execute_in_process(instance=instance)  # no registry yet: the shipped model
        assert first.success and all(c.passed for c in first.get_asset_check_evaluations())
        # A worse champion (a tiny random model) is promoted behind the monitor's back.
        storage = Storage.from_env()
        registry = Registry(storage.mlflow_uri())
        start_experiment(registry.uri, storage)
        with mlflow.start_run():
            tiny = save_tiny_compact(tmp_path / "tiny", sorted(set("".join(SENTENCES))))
            registry.set_alias(CHAMPION, registry.register(tiny, {"cer_norm": 1.0}))
        second = job.execute_in_process(instance=instance)
        assert second.success
        (check,) = second.get_asset_check_evaluations()
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        meta = second.asset_materializations_for_node("champion_reevaluation")[0].metadata
        assert meta["runs"].value == 2 and "version 1" in meta["model"].value
        assert "| worse |" in meta["history"].value and "data:image/png;base64" in meta["cer_over_time"].value
    history = [json.loads(l) for l in (root / "monitoring/reevaluation/history.jsonl").read_text().splitlines()]
    assert [h["worsened"] for h in history] == [False, True] and history[1]["cer_norm"] > history[0]["cer_norm"]
    runs = mlflow.search_runs(experiment_names=["ocr_assets"], filter_string="tags.`ocr_assets.kind` = 'reevaluation'")
    assert len(runs) == 2 and set(runs["metrics.cer_norm"].round(5)) == {round(h["cer_norm"], 5) for h in history}
    assert [a["kind"] for a in hook.received] == ["reevaluation"]
