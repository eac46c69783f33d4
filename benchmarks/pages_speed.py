"""Seconds per page of page OCR (decode → deskew/segment → read lines), one page at a time as `ocr-assets pages`
runs, and batched with segmentation spread over worker processes as the corpus assets can run on a GPU host.

    python benchmarks/pages_speed.py [--pages-dir DIR] [--limit 120] [--device auto] [--workers 0,8,15]

Prints a Markdown table; --json OUT saves it. Model load and one warm-up page are not timed.
"""

from __future__ import annotations

import argparse
import itertools
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
    """As `ocr-assets pages` reads: decode, segment and read one page after the other."""
    from ocr_assets.pages.ocr import ocr_page

    start = time.perf_counter()
    for f in files:
        with Image.open(f) as img:
            ocr_page(recognizer, img, f.name)
    return time.perf_counter() - start


def run_batched(recognizer, files: list[Path], workers: int, pages_per_batch: int = 32) -> tuple[float, float]:
    """(total seconds, seconds inside the recognizer): workers segment while the model reads earlier batches."""
    from ocr_assets.pages.ocr import read_pages

    start, reading = time.perf_counter(), 0.0
    with ProcessPoolExecutor(workers) as pool:
        segmented = pool.map(segment_file, [str(f) for f in files], chunksize=2)
        while batch := list(itertools.islice(segmented, pages_per_batch)):
            t = time.perf_counter()
            read_pages(recognizer, batch, batch_size=256)
            reading += time.perf_counter() - t
    return time.perf_counter() - start, reading


def _gpu_worker(gpu: int, files: list[str], workers: int, model: str | None, queue) -> None:
    """One process per GPU (CUDA_VISIBLE_DEVICES set before torch loads): batched OCR of its share of pages."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.pages.ocr import read_pages

    recognizer = load_recognizer(model, device="cuda")
    read_pages(recognizer, [segment_file(files[0])])  # warm-up
    queue.put(("ready", gpu))
    seconds, reading = run_batched(recognizer, [Path(f) for f in files], workers)
    queue.put(("done", gpu, seconds, reading, len(files)))


def run_multi_gpu(files: list[Path], gpus: int, model: str | None) -> dict:
    """Pages spread over `gpus` processes, one per GPU; GPU utilisation sampled with nvidia-smi meanwhile."""
    import multiprocessing as mp
    import subprocess
    import threading

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    shares = [[str(f) for f in files[i::gpus]] for i in range(gpus)]
    workers = max(1, (os.cpu_count() or 2) // gpus - 1)
    procs = [ctx.Process(target=_gpu_worker, args=(g, shares[g], workers, model, queue)) for g in range(gpus)]
    for p in procs:
        p.start()
    for _ in range(gpus):
        assert queue.get(timeout=600)[0] == "ready"
    samples: list[list[float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout
            samples.append([float(v) for v in out.split()][:gpus])
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    results = [queue.get(timeout=3600) for _ in range(gpus)]
    seconds = time.perf_counter() - start
    stop.set()
    for p in procs:
        p.join()
    util = [sum(s[g] for s in samples) / len(samples) for g in range(gpus)] if samples else []
    return {"mode": f"{gpus} GPU(s), one process each, {workers} segmentation workers per GPU", "pages": len(files),
            "seconds": round(seconds, 2), "s_per_page": round(seconds / len(files), 3),
            "pages_per_s": round(len(files) / seconds, 2), "recognizer_s": round(max(r[3] for r in results), 2),
            "gpu_util_busiest": round(max(util), 1) if util else None,
            "gpu_util_idlest": round(min(util), 1) if util else None}


def main() -> None:
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.settings import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_dir = (shared_data_dir() or Path(".")) / "pages_dev"
    ap.add_argument("--pages-dir", type=Path, default=default_dir)
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default=None)
    ap.add_argument("--workers", default="0", help="comma list; 0 = one page at a time in this process")
    ap.add_argument("--gpus", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="comma list of GPU counts: pages spread over one process per GPU (utilisation sampled)")
    ap.add_argument("--repeat", type=int, default=1, help="read the page list this many times (a longer run)")
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
    if args.gpus:
        del recognizer  # the per-GPU processes load their own
        rows = [run_multi_gpu(files * args.repeat, n, args.model) for n in args.gpus]
        print_rows(rows, device, card, args)
        return
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
    print_rows(rows, device, card, args)


def print_rows(rows: list[dict], device, card: str, args) -> None:
    meta = {"device": str(device), "card": card, "cpus": os.cpu_count(), "host": platform.machine(),
            "pages_dir": args.pages_dir.name}
    print(f"device {meta['device']} ({card}), {meta['cpus']} CPUs, pages from {meta['pages_dir']}")
    print("| mode | pages | seconds | s/page | pages/s | of which recognizer (s) | GPU util busiest / idlest % |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        util = f"{r['gpu_util_busiest']} / {r['gpu_util_idlest']}" if r.get("gpu_util_busiest") is not None else "-"
        recog = r["recognizer_s"] if r.get("recognizer_s") is not None else "-"
        print(f"| {r['mode']} | {r['pages']} | {r['seconds']} | {r['s_per_page']} | {r['pages_per_s']} | {recog} | {util} |")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
