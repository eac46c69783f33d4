"""Speed of the compact recognizer on CPU (2 threads, batch 32) for fp32 / bf16 / int8, optionally vs Tesseract.

    .venv/bin/python benchmarks/compact_speed.py [--model DIR] [--lines 256] [--tesseract] [--device cuda]

Lines: a fixed random sample of the real lines in shared/data/ocr_gs_print (all books), or rendered lines
when that folder is absent. Prints one Markdown table; each speed is the best of --repeats passes. With --model
and real lines it also scores each precision (CER, CER_norm), so a faster precision is seen not to cost accuracy.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ocr_assets import metrics
from ocr_assets.models.compact import CompactRecognizer, prepare_line
from ocr_assets.settings import shared_data_dir


def real_lines(count: int, seed: int) -> list[Path]:
    root = shared_data_dir()
    folder = root / "ocr_gs_print" if root else None
    if folder is None or not folder.is_dir():
        return []
    files = sorted(folder.rglob("*.png"))
    return random.Random(seed).sample(files, min(count, len(files)))


def rendered_lines(count: int, seed: int, folder: Path) -> list[Path]:
    """Book-like rendered lines (Amiri, 36 px, 8-14 words) when the real lines are not here."""
    import fontpkg_amiri
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(Path(fontpkg_amiri.__file__).parent / "files" / "Amiri-Regular.ttf"), 36)
    rng = random.Random(seed)
    words = "قال حدثنا محمد بن عبد الله عن أبيه أنه سمع رسول الله صلى عليه وسلم يقول في الكتاب والسنة".split()
    paths = []
    for i in range(count):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 14)))
        left, top, right, bottom = font.getbbox(text, direction="rtl", language="ar")
        image = Image.new("L", (right - left + 20, bottom - top + 16), 255)
        ImageDraw.Draw(image).text((10 - left, 8 - top), text, font=font, fill=0, direction="rtl", language="ar")
        paths.append(folder / f"{i:04d}.png")
        image.save(paths[-1])
    return paths


def best_rate(run, items: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return items / best


def tesseract_rate(paths: list[Path]) -> float | None:
    """The peer setting (docs/ARCHITECTURE.md): --psm 13, one process per line, two at a time, OMP_THREAD_LIMIT=1."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def one(path: Path) -> None:
        subprocess.run(
            ["tesseract", str(path), "stdout", "-l", "ara", "--psm", "13"], env=env, capture_output=True, check=True
        )

    try:
        one(paths[0])
    except (OSError, subprocess.CalledProcessError):
        return None
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, paths))
    return len(paths) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: an untrained model of the shipping size)")
    parser.add_argument("--lines", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU row")
    parser.add_argument("--tesseract", action="store_true", help="also time Tesseract on the same lines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory()
    paths = real_lines(args.lines, seed=0)
    source = "real lines, shared/data/ocr_gs_print"
    if not paths:
        paths, source = rendered_lines(args.lines, 0, Path(tmp.name)), "rendered lines (shared data absent)"
    data = [p.read_bytes() for p in paths]
    gt_files = [p.with_suffix(".gt.txt") for p in paths]
    refs = [f.read_text(encoding="utf-8") for f in gt_files] if all(f.is_file() for f in gt_files) else None

    torch.manual_seed(0)
    untrained = None if args.model else CompactRecognizer.new(device="cpu").model

    def load(precision: str) -> CompactRecognizer:
        if args.model:
            return CompactRecognizer.load(args.model, device=args.device, cpu_precision=precision)
        return CompactRecognizer(untrained, device=args.device, cpu_precision=precision)

    first = load("fp32")
    height = first.model.config.input_height
    arrays = [prepare_line(d, height) for d in data]
    size_mb = len(first.save(Path(tmp.name) / "fp16").joinpath("model.safetensors").read_bytes()) / 1e6
    mean_width = sum(a.shape[1] for a in arrays) / len(arrays)
    print(
        f"{len(data)} {source}; mean width {mean_width:.0f} px at height {height}; "
        f"{args.threads} threads, batch {args.batch_size}, device {args.device}, torch {torch.__version__}"
    )
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"params {first.parameters_count() / 1e6:.2f} M, fp16 checkpoint {size_mb:.1f} MB\n")
    scored = bool(args.model and refs)  # an untrained model's CER says nothing
    print(
        "| precision | end-to-end lines/s (decode PNG + prepare + model + CTC) | model-only lines/s |"
        + (" CER | CER_norm |" if scored else "")
    )
    print("|---|---|---|" + ("---|---|" if scored else ""))
    precisions = ["fp32", "bf16", "int8"] if args.device == "cpu" else ["fp32"]
    for precision in precisions:
        rec = first if precision == "fp32" else load(precision)
        rec.recognize_arrays(arrays[: args.batch_size], args.batch_size)  # warm-up: kernels, quantized copy
        model_rate = best_rate(lambda r=rec: r.recognize_arrays(arrays, args.batch_size), len(arrays), args.repeats)
        e2e_rate = best_rate(lambda r=rec: r.recognize(data, args.batch_size), len(data), args.repeats)
        label = precision if args.device == "cpu" else f"{args.device} autocast"
        quality = ""
        if scored:
            hyps = [r.text for r in rec.recognize(data, args.batch_size)]
            quality = f" {metrics.cer(refs, hyps):.4f} | {metrics.cer_norm(refs, hyps):.4f} |"
        print(f"| {label} | {e2e_rate:.1f} | {model_rate:.1f} |{quality}")
    if args.tesseract:
        rate = tesseract_rate(paths)
        print(
            f"| Tesseract 5 ara --psm 13 (2 processes) | {rate:.1f} | |" if rate else "| Tesseract | not installed | |"
        )
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
