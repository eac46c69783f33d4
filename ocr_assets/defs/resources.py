"""Environment profiles (resources/*.yaml) turned into Dagster resources: device, backend, MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml
from dagster_mlflow import mlflow_tracking

from ocr_assets.settings import mlflow_uri

PROFILE_ENV = "OCR_ASSETS_PROFILE"
PROFILE_DIR = Path(__file__).resolve().parents[1] / "resources"
_KEYS = {"backend", "device", "data_root", "mlflow_tracking_uri", "executor"}


def load_profile(name: str | None = None) -> dict:
    """Read resources/<name>.yaml (default: $OCR_ASSETS_PROFILE or "local"); unknown keys are an error."""
    name = name or os.environ.get(PROFILE_ENV, "local")
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ValueError(f"profile {name!r} not found (looked for {path.name}); known profiles: {known}")
    profile = yaml.safe_load(path.read_text()) or {}
    unknown = set(profile) - _KEYS
    if unknown:
        raise ValueError(f"profile {path.name} has unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    if profile.get("data_root") and "OCR_ASSETS_DATA_ROOT" not in os.environ:
        os.environ["OCR_ASSETS_DATA_ROOT"] = str(profile["data_root"])
    if profile.get("mlflow_tracking_uri") and "MLFLOW_TRACKING_URI" not in os.environ:
        os.environ["MLFLOW_TRACKING_URI"] = str(profile["mlflow_tracking_uri"])
    return profile


class ComputeResource(dg.ConfigurableResource):
    """Where model work runs: `auto` picks CUDA when torch sees it."""

    device: str = "auto"
    backend: str = "compact"

    def resolved_device(self) -> str:
        from ocr_assets.models.base import resolve_device

        return resolve_device(self.device)


def build_resources(profile: dict) -> dict:
    return {
        "compute": ComputeResource(device=profile.get("device", "auto"), backend=profile.get("backend", "compact")),
        "mlflow": mlflow_tracking.configured(
            {"experiment_name": "ocr_assets", "mlflow_tracking_uri": mlflow_uri()}
        ),
    }
