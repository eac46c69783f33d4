"""Pretraining recipe for the compact recognizer: render synthetic shards, then train (one GPU or torchrun DDP).

    python -m ocr_assets.pretrain render --out DIR/synth.parquet --count 90000 --seed 1 --workers 16
    torchrun --standalone --nproc_per_node=N -m ocr_assets.models.compact.train --train DIR --val ... --out RUN

The font left out of every training set (for the vocalised benchmark) is HELDOUT_FONTS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Scheherazade (SIL) is a Naskh book face with full tashkeel support: kept out of training so the vocalised
# benchmark reads a face the model never saw.
HELDOUT_FONTS = ("Scheherazade-Regular", "Scheherazade-Bold", "Scheherazade New", "Scheherazade")


def render(out: Path, count: int, seed: int, workers: int, vocalised_fraction: float, exclude: tuple[str, ...],
           only: tuple[str, ...] = ()) -> dict:
    from ocr_assets.data.fonts import discover_fonts, select_fonts
    from ocr_assets.data.synthetic import render_shard

    fonts = discover_fonts()
    if only:
        fonts = [f for f in fonts if f.name in only or f.family in only]
    else:
        fonts = select_fonts(fonts, exclude=exclude)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = render_shard(out, count=count, seed=seed, fonts=fonts, workers=workers, vocalised_fraction=vocalised_fraction)
    info = {"path": str(out), "lines": summary.lines, "seconds": round(summary.seconds, 1),
            "lines_per_s": round(summary.lines_per_s, 1), "fonts": [f.name for f in fonts]}
    print(json.dumps(info), file=sys.stderr)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ocr_assets.pretrain")
    sub = parser.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("render", help="render a Parquet shard of synthetic classical lines")
    r.add_argument("--out", required=True)
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    r.add_argument("--vocalised-fraction", type=float, default=0.5)
    r.add_argument("--exclude-fonts", default=",".join(HELDOUT_FONTS), help="comma-separated names/families ('' keeps all)")
    r.add_argument("--only-fonts", default="", help="comma-separated: render with these fonts only (held-out sets)")
    args = parser.parse_args(argv)
    if args.verb == "render":
        exclude = tuple(x for x in args.exclude_fonts.split(",") if x)
        only = tuple(x for x in args.only_fonts.split(",") if x)
        render(Path(args.out), args.count, args.seed, args.workers, args.vocalised_fraction, exclude, only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
