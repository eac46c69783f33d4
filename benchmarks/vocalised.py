"""Vocalised text: CER with tashkeel kept, on fully vocalised synthetic lines in a font left out of training.

The font (ocr_assets.training.pretrain.HELDOUT_FONTS, Scheherazade) never appeared in pretraining; the lines are rendered
here with a seed the pretraining never used. Ours (the shipped model, CPU) beside Tesseract --psm 13, same files.

    .venv/bin/python benchmarks/vocalised.py [--lines 200] [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import tesseract_many, tesseract_version  # noqa: E402

from ocr_assets import metrics  # noqa: E402
from ocr_assets.synth.fonts import discover_fonts  # noqa: E402
from ocr_assets.synth.lines import iter_synthetic_lines  # noqa: E402
from ocr_assets.models.resolve import load_recognizer  # noqa: E402
from ocr_assets.training.pretrain import HELDOUT_FONTS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    fonts = [f for f in discover_fonts() if f.name in HELDOUT_FONTS or f.family in HELDOUT_FONTS]
    if not fonts:
        raise SystemExit(f"the held-out font {HELDOUT_FONTS[0]} is not installed (Debian: fonts-sil-scheherazade)")
    rec = load_recognizer(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        paths, refs = [], []
        for i, raw in enumerate(iter_synthetic_lines(args.lines, args.seed, fonts=fonts, vocalised_fraction=1.0)):
            p = Path(tmp) / f"{i:05d}.png"
            p.write_bytes(raw.image)
            paths.append(p)
            refs.append(raw.text_bytes.decode("utf-8"))
        ours = [r.text for r in rec.recognize([p.read_bytes() for p in paths], batch_size=32)]
        tess, _ = tesseract_many(paths, psm=13)
    o, t = metrics.score(refs, ours), metrics.score(refs, tess)
    print(f"Vocalised lines, held-out font {fonts[0].family or fonts[0].name}, {args.lines} lines, seed {args.seed} "
          f"(peer: {tesseract_version()} --psm 13)\n")
    print("| system | CER (tashkeel kept) | CER_norm | WER |")
    print("|---|---|---|---|")
    print(f"| ours (shipped compact) | {o.cer:.4f} | {o.cer_norm:.4f} | {o.wer:.4f} |")
    print(f"| Tesseract ara | {t.cer:.4f} | {t.cer_norm:.4f} | {t.wer:.4f} |")


if __name__ == "__main__":
    main()
