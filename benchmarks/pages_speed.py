"""Seconds per page of page OCR (decode → deskew/segment → read lines), one page at a time as `ocr-assets pages`
runs, and batched with segmentation spread over worker processes as the corpus assets can run on a GPU host.

    python benchmarks/pages_speed.py [--pages-dir DIR] [--limit 120] [--device auto] [--workers 0,8,15]

Prints a Markdown table; --json OUT saves it. Model load and one warm-up page are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image


def segment_file(path: str):
    """Worker: one page file → (name, gray page, line boxes)."""
    from ocr_assets.pages.segment import segment_lines

    with Image.open(path) as img:
        gray = img.convert("L")
    return Path(path).name, gray, segment_lines(gray)


def run_sequential(recognizer, files: list[Path]) -> float:
    from ocr_assets.pages.ocr import read_pages

    start = time.perf_counter()
    for f in files:
        read_pages(recognizer, [segment_file(str(f))])
    return time.perf_counter() - start


def run_batched(recognizer, files: list[Path], workers: int, pages_per_batch: int = 32) -> tuple[float, float]:
    """(total seconds, seconds inside the recognizer): workers segment while the model reads earlier batches."""
    from ocr_assets.pages.ocr import read_pages

    start, reading = time.perf_counter(), 0.0
    with ProcessPoolExecutor(workers) as pool:
        segmented = pool.map(segment_file, [str(f) for f in files], chunksize=2)
        batch = []
        for item in segmented:
            batch.append(item)
            if len(batch) == pages_per_batch:
                t = time.perf_counter()
                read_pages(recognizer, batch, batch_size=256)
                reading += time.perf_counter() - t
                batch = []
        if batch:
            t = time.perf_counter()
            read_pages(recognizer, batch, batch_size=256)
            reading += time.perf_counter() - t
    return time.perf_counter() - start, reading


def main() -> None:
    from ocr_assets.models.loading import load_recognizer
    from ocr_assets.settings import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_dir = (shared_data_dir() or Path(".")) / "pages_dev"
    ap.add_argument("--pages-dir", type=Path, default=default_dir)
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default=None)
    ap.add_argument("--workers", default="0", help="comma list; 0 = one page at a time in this process")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    files = sorted(p for p in args.pages_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
    files = files[: args.limit]
    if not files:
        raise SystemExit(f"no page images in {args.pages_dir}")
    recognizer = load_recognizer(args.model, device=args.device)
    device = getattr(recognizer, "device", args.device)
    card = "cpu"
    if str(device).startswith("cuda"):
        import torch

        card = torch.cuda.get_device_name(0)
    from ocr_assets.pages.ocr import read_pages

    read_pages(recognizer, [segment_file(str(files[0]))])  # warm-up
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        if workers == 0:
            seconds, reading = run_sequential(recognizer, files), None
        else:
            seconds, reading = run_batched(recognizer, files, workers)
        rows.append({"mode": "one page at a time" if workers == 0 else f"batched, {workers} segmentation workers",
                     "pages": len(files), "seconds": round(seconds, 2), "s_per_page": round(seconds / len(files), 3),
                     "pages_per_s": round(len(files) / seconds, 2),
                     "recognizer_s": None if reading is None else round(reading, 2)})
    meta = {"device": str(device), "card": card, "cpus": os.cpu_count(), "host": platform.machine(),
            "pages_dir": args.pages_dir.name}
    print(f"device {meta['device']} ({card}), {meta['cpus']} CPUs, pages from {meta['pages_dir']}")
    print("| mode | pages | seconds | s/page | pages/s | of which recognizer (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['pages']} | {r['seconds']} | {r['s_per_page']} | {r['pages_per_s']} | {r['recognizer_s'] if r['recognizer_s'] is not None else '-'} |")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
