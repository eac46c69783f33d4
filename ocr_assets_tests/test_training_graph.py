"""The whole training graph on CPU: real Dagster instances, a real MLflow sqlite store, synthetic lines; once with
the data root on a local S3 server, once as two concurrent runs that must each evaluate their own model."""

import base64
import json
import os
import subprocess
import sys
import time

import dagster as dg
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ocr_assets_tests.services import s3_server

pytestmark = pytest.mark.slow

# Fully vocalised lines in a face the shipped model never saw: the situation fine-tuning is for.
HELDOUT = ["Scheherazade-Regular", "Scheherazade-Bold"]


def _run_config(lora_epochs: int, count: int = 300, register: bool = True, seed: int = 5) -> dict:
    synthetic = {"count": count, "seed": seed, "vocalised_fraction": 1.0, "fonts": HELDOUT}
    return {
        "ops": {
            "raw_line_dataset": {"config": {"synthetic": synthetic}},
            "line_splits": {"config": {"fractions": [0.6, 0.1, 0.3], "seed": 0, "folds": 2}},
            # A new typeface: its glyph shapes live in the lower blocks, which the CPU default (top_layers 4,
            # cached features) leaves frozen; on these lines it gained CER 0.0436 -> 0.0407 but not CER_norm
            # (0.0294 -> 0.0304), so the gate rightly kept it a challenger. LoRA over every block gains both.
            "lora_adapters": {"config": {"epochs": lora_epochs, "top_layers": 0}},
            "evaluation_report": {"config": {"register_model": register}},
        }
    }


def _meta(instance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_main_job_trains_finetunes_evaluates_and_registers(tmp_path, monkeypatch):
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(tmp_path / "var"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from ocr_assets.definitions import build_defs

    defs = build_defs("local")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("main_job").execute_in_process(instance=instance, run_config=_run_config(10))
        assert result.success
        base, report = _meta(instance, "baseline_evaluation"), _meta(instance, "evaluation_report")
        assert _meta(instance, "base_model")["source"] == "shipped default"
        # Measured 2026-12-02 on this CPU: base CER 0.0447, fine-tuned 0.0382 and 0.0414 in two runs (-7 to -15 %;
        # CPU training is not bit-reproducible). Demand a gain of at least 4 % and an absolute bound about 2x the
        # measured fine-tuned figure.
        print("graph test CER base -> fine-tuned:", base["cer"], report["cer"])
        assert report["cer"] < 0.96 * base["cer"], (base, report)
        assert report["cer"] < 0.08
        assert report["promoted"] is True  # it beat its base on an empty registry
        assert "Per document" in report["report"] and "data:image/png;base64" in report["report"]
        adapters = _meta(instance, "lora_adapters")
        assert adapters["trainable_params"] > 0 and adapters["adapter_kb"] > 0
        splits = result.output_for_node("line_splits")
        merged = result.output_for_node("merged_model")
        assert merged["path"].endswith(result.run_id)  # this run's model, under the data root
        assert merged["path"].startswith(str(tmp_path / "var"))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.search_runs(client.get_experiment_by_name("ocr_assets").experiment_id)[0]
    assert run.info.status == "FINISHED"  # the end_mlflow_on_run_finished hook closed it
    assert run.info.artifact_uri.startswith(str(tmp_path / "var"))  # artifacts under the data root, not ./mlruns
    assert {"test_cer_norm", "baseline_cer_norm", "lora_train_loss", "lora_val_cer"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "lora_train_loss")) == 10  # one point per epoch
    version = client.get_model_version_by_alias("ocr-assets-recognizer", "champion")
    assert client.get_model_version_by_alias("ocr-assets-recognizer", "challenger").version == version.version
    assert float(version.tags["test_cer_norm"]) == pytest.approx(report["cer_norm"], abs=1e-5)

    # The registered pyfunc serves the same model: it reads the test lines as well as the report says.
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ocr_assets import metrics

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model("models:/ocr-assets-recognizer@champion")
    split = pq.read_table(splits["splits"])
    test_ids = split.filter(pc.equal(split.column("split"), "test")).column("line_id").combine_chunks()
    pairs = pq.read_table(splits["pairs"])
    pairs = pairs.filter(pc.is_in(pairs.column("line_id"), value_set=test_ids)).slice(0, 20)
    images = [base64.b64encode(b).decode() for b in pairs.column("image").to_pylist()]
    out = served.predict(pd.DataFrame({"image": images + ["not base64!"]}))
    assert len(out) == len(images) + 1 and out["error"].iloc[-1] and out["text"].iloc[-1] == ""
    served_cer = metrics.cer(pairs.column("text").to_pylist(), list(out["text"].iloc[:-1]))
    assert served_cer < 0.08 and abs(served_cer - report["cer"]) < 0.04, (served_cer, report["cer"])


def test_ingest_and_training_graph_with_the_data_root_on_s3(tmp_path, monkeypatch):
    """Every artifact of the graph lands in the bucket; nothing under a local folder named `s3:`."""
    with s3_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket="ocr-assets")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", "s3://ocr-assets/var")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        from ocr_assets.definitions import build_defs

        defs = build_defs("local")
        with dg.instance_for_test() as instance:
            config = _run_config(lora_epochs=1, count=60, register=True)
            result = defs.resolve_job_def("main_job").execute_in_process(instance=instance, run_config=config)
            assert result.success
            run_id = result.run_id
            merged = result.output_for_node("merged_model")
        assert merged["path"] == f"s3://ocr-assets/var/models/merged/{run_id}"
        keys = {o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket="ocr-assets")
                for o in page.get("Contents", [])}
        for expected in (f"var/datasets/{run_id}/line_pairs.parquet", f"var/datasets/{run_id}/line_splits.parquet",
                         f"var/models/merged/{run_id}/config.json", f"var/models/adapters/{run_id}/adapter_config.json",
                         f"var/evaluations/{run_id}/report/report.md", f"var/io/evaluation_report/{run_id}.json"):
            assert expected in keys, (expected, sorted(keys)[:20])
        assert not (tmp_path / "s3:").exists() and not (tmp_path / "var").exists()
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("ocr-assets-recognizer", "challenger")
        assert str(version.version) == "1"


def test_two_training_runs_at_once_each_evaluate_their_own_model(tmp_path):
    """Two `dagster job execute` processes on one instance and data root: each report scores its own merged model."""
    env = {**os.environ, "OCR_ASSETS_DATA_ROOT": str(tmp_path / "var"), "DAGSTER_HOME": str(tmp_path / "home"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    (tmp_path / "home").mkdir()
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    ingest = _run_config(lora_epochs=1, count=60)
    ingest_cfg = tmp_path / "ingest.json"
    ingest_cfg.write_text(json.dumps({"ops": {k: ingest["ops"][k] for k in ("raw_line_dataset", "line_splits")}}))
    subprocess.run([dagster, "job", "execute", "-m", "ocr_assets.definitions", "-j", "ingest_job", "-c", str(ingest_cfg)],
                   env=env, check=True, capture_output=True, timeout=600)
    procs = []
    for seed, rank in ((0, 4), (1, 8)):
        cfg = tmp_path / f"train{seed}.json"
        cfg.write_text(json.dumps({"ops": {"lora_adapters": {"config": {"epochs": 1, "rank": rank, "seed": seed}},
                                           "evaluation_report": {"config": {"register_model": False}}}}))
        procs.append(subprocess.Popen([dagster, "job", "execute", "-m", "ocr_assets.definitions", "-j", "training_job",
                                       "-c", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        time.sleep(1)
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out.decode()[-3000:]
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "training_job"]
        assert len(runs) == 2
        for run in runs:
            records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
            by_asset = {r.event_log_entry.dagster_event.asset_key.to_user_string():
                        r.event_log_entry.dagster_event.event_specific_data.materialization.metadata for r in records}
            # The report scored the model merged in the same run, from the adapters trained in the same run.
            assert by_asset["evaluation_report"]["model"].value.endswith(f"merged/{run.run_id}")
            assert by_asset["merged_model"]["path"].value.endswith(f"merged/{run.run_id}")
        ranks = set()
        for run in runs:
            adapter = tmp_path / "var" / "models" / "adapters" / run.run_id / "adapter_config.json"
            ranks.add(json.loads(adapter.read_text())["r"])
        assert ranks == {4, 8}
