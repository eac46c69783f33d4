"""Where the ingest datasets live: `datasets/<run>/<name>.parquet` under the data root, one folder per run, so
two runs never overwrite each other's tables (downstream assets get the exact URL as their input value)."""

from __future__ import annotations

from ocr_assets.errors import StorageError
from ocr_assets.storage import Storage

# Dataset names the ingest assets write.
RAW_LINES = "raw_lines"
LINE_PAIRS = "line_pairs"
QUARANTINE = "quarantine"
LINE_SPLITS = "line_splits"


def dataset_url(storage: Storage, name: str, run_id: str) -> str:
    """The URL of dataset `name` written by run `run_id`."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise StorageError(f"dataset name {name!r} must be a plain file name such as 'line_pairs'")
    return storage.url("datasets", run_id, f"{name}.parquet")
