"""The "cluster" profile on real components, faults injected: Debian's PostgreSQL (the instance, MLflow's
backend) and redis-server (the Celery broker), moto's S3 server (the data root and the inbox), two Celery
workers and the real dagster-daemon, all on 127.0.0.1, stopped by their process ids."""

import json
import signal
import time

import dagster as dg
from dagster._core.scheduler.instigation import TickStatus
import pytest

from ocr_assets_tests.services import LocalCluster, steps_by_worker

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
OCR_RUNS = dg.RunsFilter(job_name="ocr_scans_job")
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def _wait(predicate, timeout, what, cluster):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline or (cluster.daemon is not None and cluster.daemon.poll() is not None):
            logs = "\n".join(f"--- {name}\n" + cluster.log(name).read_text(errors="replace")[-2500:]
                             for name in ["daemon", *cluster.workers] if cluster.log(name).exists())
            raise AssertionError(f"{what} did not happen in {timeout} s\n{logs}")
        time.sleep(0.5)


def _step_started_in_worker(instance, step: str):
    """(run id, worker name) of the first step `step` a Celery worker started, or None."""
    for run in instance.get_runs(filters=OCR_RUNS):
        for worker, steps in steps_by_worker(instance, [run.run_id]).items():
            if step in steps:
                return run.run_id, worker
    return None


def _step_events(instance, run_id, step, event_type):
    return [r for r in instance.all_logs(run_id, of_type=event_type) if r.dagster_event.step_key == step]


def _corpus_done(cluster, n):
    summary = cluster.corpus_summary()
    return summary if summary and summary.get("scans") == n and summary.get("pending") == 0 else None


def _assert_each_scan_once(cluster, names):
    headers = [line for line in cluster.corpus_text().splitlines() if line.startswith("=== ")]
    assert sorted(h.split(" · ")[0].removeprefix("=== ") for h in headers) == sorted(names), headers
    records = cluster.corpus_records()
    lines = [(r["source"], r["page"], r["line"]) for r in records]
    assert len(lines) == len(set(lines)), "a line appears twice in corpus.jsonl"
    assert {r["source"] for r in records} == set(names)


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_ocr_step_hands_it_to_the_other_and_every_scan_lands_once(tmp_path):
    with LocalCluster(tmp_path, workers=2, redeliver_s=45) as cluster:
        names = cluster.drop_pages(6)
        cluster.start_daemon()
        with cluster.instance() as instance:
            run_id, victim = _wait(lambda: _step_started_in_worker(instance, "ocr_pages"), 400,
                                   "an ocr_pages step on a worker", cluster)
            assert not _step_events(instance, run_id, "ocr_pages", dg.DagsterEventType.STEP_SUCCESS)
            time.sleep(2)  # inside the step: the model loads, pages are read
            cluster.kill_worker(victim.split("@")[0])  # kill -9 the worker and its pool child
            killed_at = time.monotonic()
            assert not _step_events(instance, run_id, "ocr_pages", dg.DagsterEventType.STEP_SUCCESS), \
                "the step finished before the kill: the test proved nothing"
            _wait(lambda: _corpus_done(cluster, len(names)), 600, "the corpus of every scan", cluster)
            print(f"corpus complete {time.monotonic() - killed_at:.0f} s after the kill")
            runs = instance.get_runs(filters=OCR_RUNS)
            assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]  # one batch, finished, not re-run
            workers = steps_by_worker(instance, [r.run_id for r in instance.get_runs()])
            survivor = next(w for w in workers if w != victim)
            assert "ocr_pages" in workers[victim] and "ocr_pages" in workers[survivor], workers
            submitted = [r.dagster_event.message for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                         if r.dagster_event.step_key == "ocr_pages" and "Submitting" in (r.dagster_event.message or "")]
            assert submitted and all('queue "gpu"' in m for m in submitted), submitted
            print("steps by worker:", json.dumps(workers))
        _assert_each_scan_once(cluster, names)


def _inbox_sensor_ticks(instance):
    for state in instance.all_instigator_state():
        if state.instigator_name == "scan_inbox_sensor":
            return instance.get_ticks(state.instigator_origin_id, state.selector_id)
    return []


@pytest.mark.timeout(900)
def test_the_daemon_killed_mid_inbox_tick_repeats_and_skips_nothing_after_restart(tmp_path):
    # No run is launched (max_concurrent_runs 0): the test is about what the sensor requests.
    with LocalCluster(tmp_path, workers=0, max_runs=0) as cluster:
        import os

        names = []
        for i in range(60):  # ~120 MB to hash through the S3 server: a tick lasts seconds
            names.append(f"scan-{i:03d}.png")
            cluster.fs.pipe(f"{cluster.inbox.removeprefix('s3://')}/{names[-1]}", os.urandom(2_000_000))
        cluster.start_daemon()
        with cluster.instance() as instance:
            _wait(lambda: "Checking for new runs for sensor: scan_inbox_sensor" in cluster.log("daemon").read_text(),
                  300, "the first inbox sensor tick", cluster)
            time.sleep(0.5)
            os.killpg(cluster.daemon.pid, signal.SIGKILL)
            cluster.daemon.wait()
            ticks = _inbox_sensor_ticks(instance)
            assert ticks and ticks[0].status == TickStatus.STARTED, [t.status for t in ticks]  # cut mid-tick
            assert instance.get_dynamic_partitions("scans") == [] and instance.get_runs() == []

            cluster.start_daemon()
            keys = _wait(lambda: len(instance.get_dynamic_partitions("scans")) == len(names)
                         and instance.get_dynamic_partitions("scans"), 300, "every scan as a partition", cluster)
            # One more completed tick after the one that took them in: it must find nothing new.
            done = _wait(lambda: [t for t in _inbox_sensor_ticks(instance) if t.status == TickStatus.SUCCESS],
                         120, "the tick that requested the runs", cluster)
            _wait(lambda: any(t.status == TickStatus.SKIPPED and t.timestamp > done[0].timestamp
                              for t in _inbox_sensor_ticks(instance)), 120, "a later inbox tick", cluster)
            runs = instance.get_runs(filters=OCR_RUNS)
            covered = []
            for run in runs:
                start, end = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
                covered += keys[keys.index(start): keys.index(end) + 1]
            assert sorted(covered) == sorted(keys), "a scan was skipped or requested twice"
            assert len(set(keys)) == len(names)
            print(f"{len(names)} scans, {len(runs)} runs requested, ticks:",
                  [t.status.value for t in reversed(_inbox_sensor_ticks(instance))])


@pytest.mark.timeout(900)
def test_redis_restarted_mid_run_never_reports_success_with_missing_pages(tmp_path, monkeypatch):
    with LocalCluster(tmp_path, workers=2, redeliver_s=45) as cluster:
        names = cluster.drop_pages(4, seed=2000)
        cluster.start_daemon()
        with cluster.instance() as instance:
            run_id, worker = _wait(lambda: _step_started_in_worker(instance, "ocr_pages"), 400,
                                   "an ocr_pages step on a worker", cluster)
            cluster.redis.stop(signal.SIGKILL)  # the broker and result backend vanish mid-step ...
            time.sleep(5)
            cluster.redis.start()  # ... and come back on the same port with their append-only file

            settle_by = time.monotonic() + 240  # a failed run is re-executed once (run_retries): give it time

            def settled():
                runs = instance.get_runs(filters=OCR_RUNS)
                if not runs or any(r.status not in FINISHED for r in runs):
                    return None
                return runs if _corpus_done(cluster, len(names)) or time.monotonic() > settle_by else None

            runs = _wait(settled, 700, "the runs to finish", cluster)
            outcome = {r.run_id[:8]: r.status.value for r in runs}
            from ocr_assets.corpus.build import scan_done
            from ocr_assets.storage import Storage

            for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
                monkeypatch.setenv(key, cluster.env[key])
            store = Storage(cluster.data_root)
            keys = instance.get_dynamic_partitions("scans")
            for run in runs:
                if run.status == dg.DagsterRunStatus.SUCCESS:  # success means every page of every scan is there
                    start, end = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
                    for key in keys[keys.index(start): keys.index(end) + 1]:
                        summary = scan_done(store, key)
                        assert summary is not None and summary["pages"] == 1, (key, summary)
                else:
                    failure = [r for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
                    assert failure and failure[0].dagster_event.message, "a failed run must say why"
                    print("failed run:", run.run_id[:8], failure[0].dagster_event.message[:300])
            starts = {r.run_id[:8]: len(_step_events(instance, r.run_id, "ocr_pages", dg.DagsterEventType.STEP_START))
                      for r in runs}
            lost = {w: cluster.log(w).read_text(errors="replace").count("Connection to broker lost") for w in cluster.workers}
            print("outcome:", json.dumps(outcome), "ocr_pages starts:", starts, "broker lost (per worker log):", lost,
                  "corpus:", cluster.corpus_summary())
            if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
                _assert_each_scan_once(cluster, names)


@pytest.mark.timeout(300)
def test_mlflow_on_postgresql_with_artifacts_on_s3(tmp_path, monkeypatch):
    """The cluster's MLflow: runs and the registry in PostgreSQL, artifacts in the bucket (no file left locally)."""
    import mlflow

    from ocr_assets.defs.resources import EXPERIMENT
    from ocr_assets_tests.services import postgres_server, s3_server

    with postgres_server(databases=("mlflow",)) as pg, s3_server() as endpoint:
        for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket="ocr-assets")
        monkeypatch.chdir(tmp_path)
        mlflow.set_tracking_uri(f"postgresql+psycopg2://{pg['user']}@127.0.0.1:{pg['port']}/mlflow")
        mlflow.create_experiment(EXPERIMENT, artifact_location="s3://ocr-assets/var/mlartifacts")
        (tmp_path / "report.json").write_text('{"cer": 0.02}')
        with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name(EXPERIMENT).experiment_id) as run:
            mlflow.log_metric("cer_norm", 0.02)
            mlflow.log_artifact(str(tmp_path / "report.json"))
        assert mlflow.get_run(run.info.run_id).data.metrics["cer_norm"] == 0.02
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="ocr-assets")["Contents"]]
        assert any(k.startswith("var/mlartifacts/") and k.endswith("report.json") for k in keys), keys
        assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
