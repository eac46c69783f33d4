"""Where datasets live under the data root, and atomic Parquet read/write for assets passing paths."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ocr_assets.settings import data_root

# Dataset names the ingest assets write; downstream assets read them by these names.
RAW_LINES = "raw_lines"
LINE_PAIRS = "line_pairs"
QUARANTINE = "quarantine"
LINE_SPLITS = "line_splits"


def dataset_path(name: str) -> Path:
    """data_root()/datasets/<name>.parquet."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"dataset name {name!r} must be a plain file name such as 'line_pairs'")
    folder = data_root() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.parquet"


def write_table(table: pa.Table, name: str) -> Path:
    """Write a table atomically (readers never see half a file); returns its path."""
    path = dataset_path(name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_batches(batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema, name: str) -> tuple[Path, int]:
    """Stream tables/batches of one schema into a dataset atomically; returns (path, rows)."""
    path = dataset_path(name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch], schema)
                writer.write_table(table)
                rows += table.num_rows
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, rows


def read_table(name: str, columns: list[str] | None = None) -> pa.Table:
    """Read a dataset written by an asset, or explain which asset to materialize first."""
    path = dataset_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {name!r} not found at {path}; materialize the asset that writes it first "
            f"(data root {data_root()}, set by OCR_ASSETS_DATA_ROOT)"
        )
    return pq.read_table(path, columns=columns)


def iter_batches(name: str, batch_size: int = 256, columns: list[str] | None = None) -> Iterable[pa.RecordBatch]:
    """Stream a dataset in record batches (bounded memory for image columns)."""
    path = dataset_path(name)
    if not path.exists():
        raise FileNotFoundError(f"dataset {name!r} not found at {path}; materialize the asset that writes it first")
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)
