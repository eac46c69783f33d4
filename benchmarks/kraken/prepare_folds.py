"""Line data for Kraken's leave-one-book-out folds, written under the git-ignored .kraken/ (never committed).

Reads the five shared books at run time (<shared>/data/ocr_gs_print/<Book>/NNNNNN.png + .gt.txt), applies the
project's text policy (ocr_assets.text.normalize: NFC, no bidi marks, single spaces; the GT is stored NFD) and
re-encodes each line image losslessly as a 1-bit PNG (the shared lines are bilevel greyscale PNGs; 1-bit keeps every
pixel and makes them small enough to carry to the GPU machine). The project's validator (`ocr-assets validate`)
accepts every line of the five books, so no line is left out; a line whose GT is empty after normalisation would be.

Per book it writes .kraken/lines/<Book>/NNNNNN.png + NNNNNN.gt.txt and two manifests: .kraken/lists/<Book>.train
and .kraken/lists/<Book>.val (every 10th accepted line, index % 10 == 0, is the validation slice used for Kraken's
early stopping when that book is a training book of a fold). The test set of fold B is all of B's lines.

    .venv/bin/python benchmarks/kraken/prepare_folds.py [--out .kraken]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from ocr_assets.settings import shared_data_dir
from ocr_assets.text import normalize

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / ".kraken"))
    ap.add_argument("--val-every", type=int, default=10)
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs the shared books (<shared>/data/ocr_gs_print); not found")
    out = Path(args.out)
    (out / "lists").mkdir(parents=True, exist_ok=True)
    summary = {}
    for book in sorted(p for p in (shared / "ocr_gs_print").iterdir() if p.is_dir()):
        dest = out / "lines" / book.name
        dest.mkdir(parents=True, exist_ok=True)
        train, val, empty = [], [], 0
        for i, png in enumerate(sorted(book.glob("*.png"))):
            text = normalize(png.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8"))
            target = dest / png.name
            if not target.exists():
                with Image.open(png) as im:
                    im.convert("1", dither=Image.Dither.NONE).save(target, optimize=True)
            target.with_suffix("").with_suffix(".gt.txt").write_text(text, encoding="utf-8")
            if not text:
                empty += 1
                continue
            (val if i % args.val_every == 0 else train).append(str(target.relative_to(ROOT) if target.is_relative_to(ROOT) else target))
        (out / "lists" / f"{book.name}.train").write_text("\n".join(train) + "\n")
        (out / "lists" / f"{book.name}.val").write_text("\n".join(val) + "\n")
        summary[book.name] = {"train": len(train), "val": len(val), "empty_gt": empty}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
