"""Adaptation: `ocr-assets finetune` on the first 200 lines of a book the base never saw, on the CPU; CER on the
rest of the book before and after, wall time and peak memory of the fine-tune process.

The base is the leave-one-book-out fold model for that book (trained on synthetic lines + the other four books).

    .venv/bin/python benchmarks/adaptation.py --base FOLD_MODEL_DIR --book IbnQutayba.Adab [--train-lines 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ocr_assets.settings import shared_data_dir


def copy_lines(pngs: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True)
    for p in pngs:
        shutil.copy2(p, dest / p.name)
        gt = p.with_suffix("").with_suffix(".gt.txt")
        shutil.copy2(gt, dest / gt.name)


def evaluate(cli: Path, gt: Path, model: str) -> dict:
    out = subprocess.run([str(cli), "evaluate", str(gt), "--model", model, "--device", "cpu"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--book", required=True)
    ap.add_argument("--train-lines", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--finetune-args", default="", help="more `ocr-assets finetune` options, e.g. \"--recipe head\"")
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data")
    pngs = sorted((shared / "ocr_gs_print" / args.book).glob("*.png"))
    cli = Path(sys.executable).with_name("ocr-assets")
    with tempfile.TemporaryDirectory() as tmp:
        train, test = Path(tmp) / "train", Path(tmp) / "test"
        copy_lines(pngs[: args.train_lines], train)
        copy_lines(pngs[args.train_lines :], test)
        before = evaluate(cli, test, args.base)
        # The book's conventions alone (`ocr-assets conventions`: the base model's weights, no training).
        conv_cmd = [str(cli), "conventions", str(train), "--out", str(Path(tmp) / "conventions"), "--base", args.base]
        start = time.perf_counter()
        subprocess.run(conv_cmd, check=True, capture_output=True, text=True)
        conv_wall = time.perf_counter() - start
        only = evaluate(cli, test, str(Path(tmp) / "conventions"))
        cmd = [str(cli), "finetune", str(train), "--out", str(Path(tmp) / "adapted"), "--base", args.base, "--device", "cpu"]
        if args.epochs:
            cmd += ["--epochs", str(args.epochs)]
        cmd += args.finetune_args.split()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        after = evaluate(cli, test, str(Path(tmp) / "adapted"))
    print(f"Adaptation on {args.book}: fine-tune on its first {args.train_lines} lines (CPU), test on the other {before['lines']}\n")
    print("| | CER | CER_norm | WER |")
    print("|---|---|---|---|")
    print(f"| before (fold base) | {before['cer']:.4f} | {before['cer_norm']:.4f} | {before['wer']:.4f} |")
    print(f"| conventions only (`ocr-assets conventions`, {conv_wall:.1f} s, no training) | {only['cer']:.4f} | "
          f"{only['cer_norm']:.4f} | {only['wer']:.4f} |")
    print(f"| after `ocr-assets finetune` | {after['cer']:.4f} | {after['cer_norm']:.4f} | {after['wer']:.4f} |")
    print(f"\nfine-tune: wall time {wall:.1f} s for the whole `ocr-assets finetune` process (epochs {summary.get('epochs')}), "
          f"peak RSS {summary.get('peak_rss_mb')} MB (children max {peak_mb:.0f} MB, evaluation processes included); "
          f"CPU time {cpu:.1f} s (user + system); load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(f"command: {' '.join(cmd[1:])}")
    print(f"book conventions learned: {json.dumps(summary.get('conventions', {}), ensure_ascii=False)}; spacing rules "
          f"{json.dumps(summary.get('spacing_rules', {}), ensure_ascii=False)}; word rules kept after the fine-tune "
          f"{json.dumps(summary.get('word_rules', {}), ensure_ascii=False)}")


if __name__ == "__main__":
    main()
