"""The one Definitions object of the code location (workspace.yaml loads `defs`)."""

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from ocr_assets.assets.ingest import ingest_assets, ingest_checks
from ocr_assets.resources import build_resources, load_profile

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    description="Raw lines → validated pairs (GX checks, quarantine) → splits.",
)

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.all(),
    hooks={end_mlflow_on_run_finished},
    description="The whole graph on the configured data: ingest, fine-tune, evaluate, register.",
)


def build_defs(profile_name: str | None = None) -> dg.Definitions:
    profile = load_profile(profile_name)
    return dg.Definitions(
        assets=[*ingest_assets],
        asset_checks=[*ingest_checks],
        jobs=[ingest_job, main_job],
        resources=build_resources(profile),
    )


defs = build_defs()
