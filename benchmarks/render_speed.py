"""Synthetic line rendering speed: lines/s of `render_shard` per worker count, on this machine.

    .venv/bin/python benchmarks/render_speed.py [--count 400] [--workers 1 2] [--seed 0]

Each row renders the same `count` lines (same seed) into a temporary Parquet shard, so the rows differ only
in parallelism; the time includes worker start-up (spawn, imports), as a real shard run pays it. The last
column says whether the shard is byte-identical to the first row's (it must be: lines depend on seed and index).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import tempfile
from io import BytesIO
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from ocr_assets.synth.fonts import discover_fonts
from ocr_assets.synth.lines import SHARD_COLUMNS, render_shard


def _digest(table) -> str:
    digest = hashlib.sha256()
    for column in SHARD_COLUMNS:
        for value in table.column(column).to_pylist():
            digest.update(value if isinstance(value, bytes) else value.encode())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pool = discover_fonts()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {args.count} lines, {len(pool)} fonts, {os.cpu_count()} CPUs ({platform.machine()}), "
          f"load average {load:.1f} before the run")
    print(f"{'workers':>7} {'seconds':>8} {'lines/s':>8} {'KB/line':>8} {'median h':>8} {'median w':>8} {'same':>5}")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            out = Path(tmp) / f"shard-{workers}.parquet"
            summary = render_shard(out, args.count, args.seed, fonts=pool, workers=workers)
            table = pq.read_table(out)
            images = table.column("image").to_pylist()
            sizes = sorted(len(b) for b in images)
            dims = [Image.open(BytesIO(b)).size for b in images]
            heights, widths = sorted(h for _, h in dims), sorted(w for w, _ in dims)
            digest = _digest(table)
            first = first or digest
            median_kb = sizes[len(sizes) // 2] / 1024
            same = "yes" if digest == first else "NO"
            print(
                f"{workers:>7} {summary.seconds:>8.2f} {summary.lines_per_s:>8.1f} {median_kb:>8.1f} "
                f"{heights[len(heights) // 2]:>8} {widths[len(widths) // 2]:>8} {same:>5}"
            )


if __name__ == "__main__":
    main()
