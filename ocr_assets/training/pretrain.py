"""Pretraining recipe for the compact recognizer: render synthetic shards, then train (one GPU or torchrun DDP).

    python -m ocr_assets.training.pretrain render --out DIR/synth.parquet --count 90000 --seed 1 --workers 16
    torchrun --standalone --nproc_per_node=N -m ocr_assets.models.compact.train --train DIR --val ... --out RUN

The font left out of every training set (for the vocalised benchmark) is HELDOUT_FONTS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from ocr_assets.errors import ConfigError
from ocr_assets.settings import PretrainSettings
from ocr_assets.synth.text import PATTERN_SHARE, SPACED_SHARE

# Scheherazade (SIL) is a Naskh book face with full tashkeel support: kept out of training so the vocalised
# benchmark reads a face the model never saw.
HELDOUT_FONTS = ("Scheherazade-Regular", "Scheherazade-Bold", "Scheherazade New", "Scheherazade")


def render(out: Path, count: int, seed: int, workers: int, vocalised_fraction: float, exclude: tuple[str, ...],
           only: tuple[str, ...] = (), pattern_share: float = 0.0,
           spaced_share: float = 0.0) -> dict:
    from ocr_assets.synth.fonts import discover_fonts, select_fonts
    from ocr_assets.synth.lines import render_shard, use_sampler
    from ocr_assets.synth.text import LineSampler

    use_sampler(LineSampler(pattern_share=pattern_share, spaced_share=spaced_share))

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


def pretrain(out_dir: Path, settings: PretrainSettings, log: Callable[[str], None] = print) -> dict:
    """The pretraining recipe in one call (asset `pretrained_model` and `ocr-assets pretrain`): render synthetic
    lines (held-out fonts excluded, every CPU core), add validated real lines from GT folders (repeated
    `real_repeat` times), train a compact recognizer from scratch or from `init`, save it to out_dir; resumes from
    out_dir.ckpt."""
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from ocr_assets.models.base import TrainConfig
    from ocr_assets.models.compact.modeling import CompactOCRModel
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.models.compact.train import CompactTrainOptions, add_missing_characters, train_compact

    s = settings
    out_dir = Path(out_dir)
    start = time.perf_counter()
    work = out_dir.parent / f"{out_dir.name}.work"
    shards = []
    if s.synthetic_lines > 0:
        shard = work / f"synth_{s.seed}_{s.synthetic_lines}.parquet"
        if not shard.is_file():  # rendering is the slow part: keep it across resumed runs
            render(shard, s.synthetic_lines, s.seed, os.cpu_count() or 1, 0.5, HELDOUT_FONTS)
        shards.append(pq.read_table(shard, columns=["image", "text"]))
    real_lines = 0
    if s.gt_folders:
        from ocr_assets.data.gt_folder import iter_gt_folder
        from ocr_assets.data.validation import validate_lines

        for folder in s.gt_folders:
            pairs, quarantine = validate_lines(iter_gt_folder(folder))
            log(f"{folder}: {pairs.num_rows} pairs, {quarantine.num_rows} quarantined")
            real_lines += pairs.num_rows
            shards += [pairs.select(["image", "text"])] * max(1, s.real_repeat)
    if not shards:
        raise ConfigError("nothing to train on: give synthetic_lines > 0 and/or gt_folders")
    table = pa.concat_tables(shards)
    # Every 50th line is held out for model selection.
    val_idx = list(range(0, table.num_rows, 50))
    val = table.take(val_idx)
    train = table.filter(pa.array([i % 50 != 0 for i in range(table.num_rows)]))
    model = None
    if s.init:
        from ocr_assets.models.resolve import resolve_model_dir

        model = CompactOCRModel.from_pretrained(resolve_model_dir(s.init), dtype=torch.float32)
        add_missing_characters(model, train.column("text").to_pylist())
    config = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, learning_rate=s.learning_rate, device=s.device,
                         seed=s.seed, checkpoint_dir=str(out_dir.parent / f"{out_dir.name}.ckpt"))
    result = train_compact(model, train, val, config, on_epoch=lambda e, m: log(f"epoch {e}: {m}"),
                           options=CompactTrainOptions(model_config=dict(s.architecture or {}), augment=True))
    CompactRecognizer(result.model, device="cpu").save(out_dir)
    return {"path": str(out_dir), "synthetic_lines": s.synthetic_lines, "real_lines": real_lines,
            "train_rows": train.num_rows, "epochs": s.epochs, "best_val_cer": result.best_val_cer,
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ocr_assets.training.pretrain")
    sub = parser.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("render", help="render a Parquet shard of synthetic classical lines")
    r.add_argument("--out", required=True)
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    r.add_argument("--vocalised-fraction", type=float, default=0.5)
    r.add_argument("--exclude-fonts", default=",".join(HELDOUT_FONTS), help="comma-separated names/families ('' keeps all)")
    r.add_argument("--only-fonts", default="", help="comma-separated: render with these fonts only (held-out sets)")
    r.add_argument("--pattern-share", type=float, default=PATTERN_SHARE,
                   help="share of lines made mostly of generated pseudo-words (the second text source; 0: Qurʾān text only)")
    r.add_argument("--spaced-share", type=float, default=SPACED_SHARE,
                   help="share of lines that set quotes and brackets with inner spaces, « word » (0: always «word»)")
    args = parser.parse_args(argv)
    if args.verb == "render":
        exclude = tuple(x for x in args.exclude_fonts.split(",") if x)
        only = tuple(x for x in args.only_fonts.split(",") if x)
        render(Path(args.out), args.count, args.seed, args.workers, args.vocalised_fraction, exclude, only,
               args.pattern_share, args.spaced_share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
