"""Unseen-book quality: leave-one-book-out over the five shared books, ours beside Tesseract (--psm 13).

Ours: each fold model was trained (scripts/gpu/stage2.sh) on synthetic lines + the four other books and scored on
the H100 on the held-out book's evenly spaced original-resolution subset (scripts/gpu_kit.py: 150 lines per book);
its figures are read from the run's gpu_results.json. Tesseract reads the very same line files here.

    .venv/bin/python benchmarks/unseen_books.py --gpu-results docs/results/gpu_results.json [--lines 150]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import tesseract_many, tesseract_version  # noqa: E402

from ocr_assets import metrics  # noqa: E402
from ocr_assets.settings import shared_data_dir  # noqa: E402
from ocr_assets.text import normalize  # noqa: E402


def subset(book: Path, per_book: int) -> list[Path]:
    pngs = sorted(book.glob("*.png"))
    step = max(1, len(pngs) // per_book)
    return pngs[::step][:per_book]  # the same rule as scripts/gpu_kit.py fullres_subset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu-results", required=True)
    ap.add_argument("--lines", type=int, default=150)
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (the five books); not found")
    ours = json.loads(Path(args.gpu_results).read_text())
    rows, all_refs, all_tess = [], [], []
    ours_edits = ours_chars = 0.0
    for book in sorted(p for p in (shared / "ocr_gs_print").iterdir() if p.is_dir()):
        paths = subset(book, args.lines)
        refs = [normalize(p.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8")) for p in paths]
        hyps, _ = tesseract_many(paths, psm=13)
        t = metrics.score(refs, hyps)
        o = ours["folds"][book.name]["fullres_subset"]
        rows.append((book.name, len(paths), o, t))
        all_refs += refs
        all_tess += hyps
    print(f"Unseen-book quality, {args.lines} evenly spaced lines per book (ours: {ours['device']}; peer: {tesseract_version()} --psm 13)\n")
    print("| held-out book | lines | ours CER | ours CER_norm | ours WER | Tesseract CER | Tesseract CER_norm | Tesseract WER |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, o, t in rows:
        print(f"| {name} | {n} | {o['cer']:.4f} | {o['cer_norm']:.4f} | {o['wer']:.4f} | {t.cer:.4f} | {t.cer_norm:.4f} | {t.wer:.4f} |")
    mean = lambda key: sum(o[key] for _, _, o, _ in rows) / len(rows)  # noqa: E731
    tall = metrics.score(all_refs, all_tess)
    print(f"| mean of books (ours) / all lines (Tesseract) | {sum(r[1] for r in rows)} | {mean('cer'):.4f} | {mean('cer_norm'):.4f} | "
          f"{mean('wer'):.4f} | {tall.cer:.4f} | {tall.cer_norm:.4f} | {tall.wer:.4f} |")


if __name__ == "__main__":
    main()
