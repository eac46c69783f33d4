"""Dagster resources: where files live (`storage`), where model work runs (`compute`), MLflow (`mlflow`),
built from an environment profile (resources/*.yaml) without touching os.environ."""


import os
from pathlib import Path

import dagster as dg
import yaml

from ocr_assets.errors import ConfigError
from ocr_assets.storage import Storage

PROFILE_ENV = "OCR_ASSETS_PROFILE"
PROFILE_DIR = Path(__file__).resolve().parents[2] / "resources"
_KEYS = {"device", "data_root", "mlflow_tracking_uri", "executor", "trust_remote_code"}


def load_profile(name: str | None = None) -> dict:
    """Read resources/<name>.yaml (default: $OCR_ASSETS_PROFILE or "local"); unknown keys are an error."""
    name = name or os.environ.get(PROFILE_ENV, "local")
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ConfigError(f"profile {name!r} not found (looked for {path.name}); known profiles: {known}")
    profile = yaml.safe_load(path.read_text()) or {}
    unknown = set(profile) - _KEYS
    if unknown:
        raise ConfigError(f"profile {path.name} has unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    return profile


class StorageResource(dg.ConfigurableResource):
    """The data root (a folder or any fsspec URL) and the MLflow store that goes with it."""

    data_root: str = ""  # empty: $OCR_ASSETS_DATA_ROOT, else ./var
    mlflow_tracking_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite under a local data root

    def get(self) -> Storage:
        return Storage(self.data_root) if self.data_root else Storage.from_env()

    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or self.get().mlflow_uri()

    def registry_uri(self) -> str | None:
        """The registry to ask for a champion, or None when no store exists yet (asking must not create one)."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return self.get().mlflow_uri() if self.get().has_local_mlflow_store() else None


class ComputeResource(dg.ConfigurableResource):
    """Where model work runs (`auto` picks CUDA when torch sees it) and whether model code may run from its folder."""

    device: str = "auto"
    trust_remote_code: bool = False  # DeepSeek-OCR v1 checkpoints run their own Python code: explicit opt-in only

    def resolved_device(self) -> str:
        from ocr_assets.models.base import resolve_device

        return resolve_device(self.device)


EXPERIMENT = "ocr_assets"


@dg.resource(config_schema={"experiment_name": str, "mlflow_tracking_uri": str,
                              "artifact_location": str})
def mlflow_tracking_in_root(init_context):
    """dagster-mlflow's run-scoped MLflow resource, with the experiment's artifacts under the data root
    (MLflow's own default, ./mlruns, would land in whatever folder the process started in)."""
    import warnings

    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dagster_mlflow.resources import MlFlow

    config = init_context.resource_config
    uri = config["mlflow_tracking_uri"]
    mlflow.set_tracking_uri(uri)
    # Two runs starting at once on a fresh SQLite store would both create its tables ("table ... already
    # exists", seen under load): the first use of the store happens under an inter-process lock beside it.
    from ocr_assets.registry import sqlite_lock

    with sqlite_lock(uri, "init"):
        if mlflow.get_experiment_by_name(config["experiment_name"]) is None:
            try:
                mlflow.create_experiment(config["experiment_name"], artifact_location=config["artifact_location"])
            except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent run
                pass
    return MlFlow(init_context)


def build_resources(profile: dict) -> dict:
    from ocr_assets.defs.io import RunScopedIOManager

    storage = StorageResource(data_root=str(profile.get("data_root") or ""),
                              mlflow_tracking_uri=str(profile.get("mlflow_tracking_uri") or ""))
    return {
        "storage": storage,
        "io_manager": RunScopedIOManager(storage=storage),
        "compute": ComputeResource(device=profile.get("device", "auto"),
                                   trust_remote_code=bool(profile.get("trust_remote_code", False))),
        "mlflow": mlflow_tracking_in_root.configured({
            "experiment_name": EXPERIMENT, "mlflow_tracking_uri": storage.mlflow_uri(),
            "artifact_location": storage.get().url("mlartifacts")}),
    }
