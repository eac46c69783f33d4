"""Where the GPU line path (`device_prep.read_encoded`) spends its time: each stage alone, then the whole path, with
a `torch.profiler` table and a cProfile of the main process (issue 14).

    python benchmarks/gpu_profile.py --line-dir DIR [--lines 30000] [--batch 1024] [--workers 15] [--out DIR]

Stages, each on the same batches: the host feed alone (decode into shared buffers, no device); copy + `prepare_flat`
alone (decoded batches held in memory); the model alone on the prepared batches; the host's turn of labels into text
alone (`reads_from_collapsed` + the codec; the labels found on the device); then `read_encoded` end to end. The slowest stage bounds the whole unless the
hand-over serialises them. Prints a table; `--out` also receives the profiler tables (profiles.txt) and the JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_lines(folder: Path, limit: int) -> list[bytes]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    if not files:
        raise SystemExit(f"no line images under {folder}")
    base = [p.read_bytes() for p in files[: min(len(files), limit)]]
    return (base * (limit // len(base) + 1))[:limit]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--line-dir", type=Path, required=True)
    parser.add_argument("--lines", type=int, default=30000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shapes", default="", help="comma-separated WIDTHxROWS batch padding multiples to try end to "
                        "end, e.g. 64x128 (read_encoded's width_multiple, row_multiple)")
    parser.add_argument("--chunks", default="", help="comma-separated device_prep.CHUNK values to try end to end")
    parser.add_argument("--in-flight", default="", help="comma-separated batches in flight to try end to end")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from ocr_assets.models.compact import device_prep
    from ocr_assets.models.compact.line_feed import FeedPool, LineFeed
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.models.resolve import shipped_model_dir

    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    rec = CompactRecognizer.load(args.model or shipped_model_dir(), device=args.device)
    height = rec.model.config.input_height
    blobs = load_lines(args.line_dir, args.lines)
    rows: list[dict] = []

    def record(stage: str, seconds: float, n: int, **extra) -> None:
        rows.append({"stage": stage, "seconds": round(seconds, 3), "lines": n, "lines_per_s": round(n / seconds, 1), **extra})
        print(f"{stage:<58} {seconds:8.3f} s {n / seconds:10.1f} lines/s {extra or ''}", flush=True)

    # 1. the host feed alone
    start = time.perf_counter()
    with LineFeed(blobs, height, args.batch, workers=args.workers) as feed:
        n_batches = len(feed.batches)
        held = []
        for batch in feed:
            if len(held) < 64:
                held.append((batch.pixels.copy(), batch.offsets.copy(), batch.heights.copy(), batch.widths.copy()))
            feed.release(batch.slot)
    record(f"host feed alone ({args.workers} workers, {n_batches} batches)", time.perf_counter() - start, len(blobs))
    start = time.perf_counter()
    with LineFeed(blobs, height, args.batch, workers=args.workers, prepare=True) as feed:
        for batch in feed:
            feed.release(batch.slot)
    record("host feed alone, lines prepared by the workers", time.perf_counter() - start, len(blobs))
    held_lines = sum(len(h[1]) for h in held)

    # 2. copy + prepare alone, 3. the model alone, 4. text alone
    def prepare_all() -> list:
        out = []
        for pixels, offsets, heights, widths in held:
            flat = torch.from_numpy(pixels).to(device, non_blocking=True)
            out.append(device_prep.prepare_flat(flat, offsets, heights, widths, height))
        return out

    prepared = prepare_all()
    sync()
    start = time.perf_counter()
    prepared = prepare_all()
    sync()
    record("copy + prepare_flat alone (unpinned copies)", time.perf_counter() - start, held_lines)
    runner = rec._inference_model()
    outputs = []
    with torch.inference_mode(), rec._inference_context():
        sync()
        for label in ("first pass: shapes new to the kernels", "second pass"):
            outputs = []
            start = time.perf_counter()
            for p, w in prepared:
                out = runner(p, w)
                outputs.append((*device_prep.collapse_best(out.logits, out.output_lengths), out.output_lengths))
            sync()
            record(f"model + collapse_best alone, {label}", time.perf_counter() - start, held_lines)
    host = [[t.cpu().numpy() for t in o] for o in outputs]
    start = time.perf_counter()
    chars = 0
    for collapsed in host:
        for ids, confs, line, where in device_prep.reads_from_collapsed(*collapsed):
            chars += len(rec.codec.decode(ids))
    record("reads_from_collapsed + codec text alone (host)", time.perf_counter() - start, held_lines,
           chars_per_line=round(chars / held_lines, 1))

    # 5. end to end, with variants
    def end_to_end(label: str, **kwargs) -> None:
        list(device_prep.read_encoded(rec, blobs[: 4 * args.batch], batch_size=args.batch, workers=args.workers, **kwargs))
        sync()
        start = time.perf_counter()
        count = sum(1 for _ in device_prep.read_encoded(rec, blobs, batch_size=args.batch, workers=args.workers, **kwargs))
        sync()
        record(f"end to end: {label}", time.perf_counter() - start, count)

    end_to_end("read_encoded as shipped")
    with FeedPool(args.workers) as kept:
        end_to_end("read_encoded, pool kept", pool=kept)
    end_to_end("prepare_on=host", prepare_on="host")
    for k in [int(c) for c in args.in_flight.split(",") if c]:
        end_to_end(f"prepare_on=host, in_flight={k}", prepare_on="host", in_flight=k)
    for shape in [c for c in args.shapes.split(",") if c]:
        w, r = (int(v) for v in shape.split("x"))
        end_to_end(f"width_multiple={w}, row_multiple={r}", width_multiple=w, row_multiple=r)
        with FeedPool(args.workers) as kept:
            end_to_end(f"width_multiple={w}, row_multiple={r}, pool kept", width_multiple=w, row_multiple=r, pool=kept)
    default_chunk = device_prep.CHUNK
    for chunk in [int(c) for c in args.chunks.split(",") if c]:
        device_prep.CHUNK = chunk
        end_to_end(f"CHUNK={chunk}")
    device_prep.CHUNK = default_chunk
    for k in [int(c) for c in args.in_flight.split(",") if c]:
        end_to_end(f"in_flight={k}", in_flight=k)

    # 6. profiles of the end-to-end path
    texts: dict[str, str] = {}
    profiler = cProfile.Profile()
    profiler.enable()
    sum(1 for _ in device_prep.read_encoded(rec, blobs, batch_size=args.batch, workers=args.workers))
    sync()
    profiler.disable()
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(30)
    texts["cprofile_main.txt"] = buf.getvalue()
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        few = blobs[: 8 * args.batch]
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            sum(1 for _ in device_prep.read_encoded(rec, few, batch_size=args.batch, workers=args.workers))
            sync()
        texts["torch_profile_cuda.txt"] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
        texts["torch_profile_cpu.txt"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    for name, text in texts.items():
        print(f"\n===== {name}\n{text[:6000]}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profiles.txt").write_text("".join(f"===== {name}\n{text}\n" for name, text in texts.items()))
        info = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "host_cores": os.cpu_count(),
                "line_dir": str(args.line_dir.name), "batch": args.batch, "workers": args.workers}
        (args.out / "gpu_profile.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
