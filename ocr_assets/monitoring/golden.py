"""The golden set: a fixed reference set of line pairs the champion is re-scored on (`reevaluation`) and every
challenger is gated on. Real lines from a ground-truth folder when one is configured (MonitoringSettings.golden_dir
or $OCR_ASSETS_GOLDEN_DIR, e.g. the shared `ocr_gs_print`), else seeded synthetic lines. Built once and kept at
`monitoring/golden/lines.parquet`, so every re-evaluation scores the same lines."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from ocr_assets.errors import SourceError
from ocr_assets.settings import MonitoringSettings
from ocr_assets.storage import Storage

SYNTHETIC_SEED = 1313  # the synthetic golden stream (never the seed of a training stream)


def golden_url(storage: Storage, name: str = "lines.parquet") -> str:
    return storage.url("monitoring", "golden", name)


def _pick(lines, count: int):
    """The `count` lines with the smallest hash of their id: a fixed sample spread over the books."""
    ranked = sorted(lines, key=lambda raw: hashlib.sha1(raw.line_id.encode()).hexdigest())
    return ranked[:count]


def build_golden(settings: MonitoringSettings) -> tuple[pa.Table, dict]:
    """(pairs, description) of the golden set, from the configured folder or synthetic lines."""
    from ocr_assets.data.validation import validate_lines

    if settings.golden_dir:
        folder = Path(settings.golden_dir).expanduser()
        if not folder.is_dir():
            raise SourceError(f"golden_dir {settings.golden_dir!r} is not a folder; give a ground-truth folder "
                              "(image + .gt.txt per line) or leave it empty for synthetic lines")
        from ocr_assets.data.gt_folder import iter_gt_folder

        pairs, quarantine = validate_lines(_pick(list(iter_gt_folder(folder)), settings.golden_lines))
        kind = f"real lines from {folder.name}"
    else:
        from ocr_assets.synth.lines import iter_synthetic_lines

        pairs, quarantine = validate_lines(iter_synthetic_lines(settings.golden_lines, SYNTHETIC_SEED))
        kind = f"synthetic lines (seed {SYNTHETIC_SEED})"
    if pairs.num_rows == 0:
        raise SourceError(f"the golden set is empty ({quarantine.num_rows} lines quarantined); check golden_dir")
    return pairs, {"kind": kind, "lines": pairs.num_rows, "quarantined": quarantine.num_rows,
                   "documents": len(set(pairs.column("document").to_pylist()))}


def ensure_golden(storage: Storage, settings: MonitoringSettings, rebuild: bool = False) -> tuple[pa.Table, dict]:
    """The stored golden set; built (and stored) the first time or when `rebuild`."""
    if not rebuild and storage.exists(golden_url(storage)) and storage.exists(golden_url(storage, "golden.json")):
        return storage.read_table(golden_url(storage)), storage.read_json(golden_url(storage, "golden.json"))
    pairs, info = build_golden(settings)
    storage.write_table(pairs, golden_url(storage))
    storage.write_json(golden_url(storage, "golden.json"), info)
    return pairs, info
