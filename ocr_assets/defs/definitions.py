"""The one Definitions object of the code location (`ocr_assets.definitions:defs` re-exports it)."""

import warnings

import dagster as dg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # dagster-mlflow's hook factory is marked beta
    from dagster_mlflow import end_mlflow_on_run_finished

from ocr_assets.defs.assets.corpus import corpus_assets, corpus_checks
from ocr_assets.defs.assets.evaluation import baseline_evaluation, cross_validation, evaluation_report
from ocr_assets.defs.assets.ingest import ingest_assets, ingest_checks
from ocr_assets.defs.assets.training import base_model, lora_adapters, merged_model, pretrained_model
from ocr_assets.defs.resources import build_resources, load_profile
from ocr_assets.errors import ConfigError
from ocr_assets.defs.sensors import corpus_automation_sensor, ocr_scans_job, scan_inbox_sensor
from ocr_assets.defs.assets.monitoring import monitoring_assets
from ocr_assets.defs.monitoring_sensors import (monitoring_automation_sensor, monitoring_jobs, monitoring_schedules,
                                                monitoring_sensors)

training_assets = [base_model, baseline_evaluation, lora_adapters, merged_model, evaluation_report]
TRAINING = dg.AssetSelection.assets(*training_assets)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    description="Raw lines → validated pairs (GX checks, quarantine) → splits.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=TRAINING,
    hooks={end_mlflow_on_run_finished},
    description="Base model → baseline → LoRA adapters → merged model → evaluation report and registry gate.",
)
main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.groups("ingest") | TRAINING,
    hooks={end_mlflow_on_run_finished},
    description="The embedded default end to end: ingest, fine-tune, evaluate, register.",
)
pretrain_job = dg.define_asset_job(
    "pretrain_job",
    selection=dg.AssetSelection.assets(pretrained_model),
    hooks={end_mlflow_on_run_finished},
    description="Pretrain the compact recognizer on synthetic + real lines (GPU; `base_model` can then point at it).",
)
cross_validation_job = dg.define_asset_job(
    "cross_validation_job",
    selection=dg.AssetSelection.assets(base_model, cross_validation),
    hooks={end_mlflow_on_run_finished},
    description="The base model, then leave-one-document-out fine-tunes of it (needs ingest_job's splits).",
)


def _executor(name: str | None) -> dg.ExecutorDefinition:
    """in_process (laptops, CI), multiprocess (one GPU host), celery (workers on many hosts; imported lazily)."""
    if name == "in_process":
        return dg.in_process_executor
    if name in (None, "multiprocess"):
        return dg.multiprocess_executor
    if name == "celery":
        from ocr_assets.defs.cluster import celery_executor

        return celery_executor()
    raise ConfigError(f"executor {name!r} is not one of in_process, multiprocess, celery; fix the profile's executor")


def build_defs(profile_name: str | None = None) -> dg.Definitions:
    profile = load_profile(profile_name)
    executor = _executor(profile.get("executor"))
    return dg.Definitions(
        assets=[*ingest_assets, *training_assets, cross_validation, pretrained_model, *corpus_assets, *monitoring_assets],
        asset_checks=[*ingest_checks, *corpus_checks],
        jobs=[ingest_job, training_job, main_job, cross_validation_job, pretrain_job, ocr_scans_job, *monitoring_jobs],
        sensors=[scan_inbox_sensor, corpus_automation_sensor, *monitoring_sensors, monitoring_automation_sensor],
        schedules=monitoring_schedules,
        resources=build_resources(profile),
        executor=executor,
    )


defs = build_defs()
