"""Where the platform keeps its files: one data root, overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_ROOT = "OCR_ASSETS_DATA_ROOT"
ENV_SHARED_DATA = "OCR_ASSETS_SHARED_DATA"


def data_root() -> Path:
    """The data root: $OCR_ASSETS_DATA_ROOT, else ./var under the working directory."""
    root = Path(os.environ.get(ENV_DATA_ROOT) or Path.cwd() / "var").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def shared_data_dir() -> Path | None:
    """The shared ground truth (`../shared/data` beside a developer checkout), or None on a user's machine."""
    explicit = os.environ.get(ENV_SHARED_DATA)
    if explicit:
        path = Path(explicit)
        return path if path.is_dir() else None
    here = Path(__file__).resolve().parents[1]
    candidate = here.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def mlflow_uri() -> str:
    """MLflow tracking/registry store: $MLFLOW_TRACKING_URI, else sqlite under the data root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_root() / 'mlflow.db'}"
