"""Batched lines/s on a GPU, end to end from encoded PNG bytes to text: line preparation (decode + resize) in
DataLoader worker processes, model + CTC decode on the GPU, batches of similar widths.

    python benchmarks/gpu_throughput.py --parquet DIR_OR_FILES [--model DIR] [--workers 14] [--batch 1024] [--repeat 4]

Prints one Markdown table (names the card). The shipped model is the default.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ocr_assets.models.compact.recognizer import collate_lines, greedy_decode, prepare_line
from ocr_assets.models.resolve import load_recognizer


class Lines(Dataset):
    def __init__(self, blobs: list[bytes], height: int):
        self.blobs, self.height = blobs, height

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        return i, prepare_line(self.blobs[i], self.height)


def collate(items):
    idx = [i for i, _ in items]
    pixels, widths = collate_lines([a for _, a in items])
    return idx, pixels, widths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parquet", required=True, nargs="+")
    ap.add_argument("--model", default=None)
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args()
    files = [f for p in map(Path, args.parquet) for f in (sorted(p.glob("*.parquet")) if p.is_dir() else [p])]
    blobs = [b for f in files for b in pq.read_table(f, columns=["image"]).column("image").to_pylist()] * args.repeat
    rec = load_recognizer(args.model, device="cuda")
    runner = rec._inference_model()
    height = rec.model.config.input_height
    # Widths from the PNG headers (no decoding) so batches hold similar widths.
    aspect = [Image.open(io.BytesIO(b)).size for b in blobs]
    order = sorted(range(len(blobs)), key=lambda i: aspect[i][0] / max(1, aspect[i][1]))
    batches = [order[s : s + args.batch] for s in range(0, len(order), args.batch)]
    loader = DataLoader(Lines(blobs, height), batch_sampler=batches, num_workers=args.workers, collate_fn=collate,
                        pin_memory=True, prefetch_factor=4, persistent_workers=False)
    texts = [None] * len(blobs)
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode(), rec._inference_context():
        for idx, pixels, widths in loader:
            out = runner(pixels.to("cuda", non_blocking=True), widths.to("cuda"))
            for i, (ids, _, _) in zip(idx, greedy_decode(out.logits, out.output_lengths)):
                texts[i] = rec.codec.decode(ids)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"GPU throughput, {torch.cuda.get_device_name(0)}, {len(blobs)} lines (PNG bytes → text), "
          f"{args.workers} preparation workers, batch {args.batch}\n")
    print("| lines | seconds | lines/s |\n|---|---|---|")
    print(f"| {len(blobs)} | {seconds:.2f} | {len(blobs) / seconds:,.0f} |")
    assert all(t is not None for t in texts)


if __name__ == "__main__":
    main()
