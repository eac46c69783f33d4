"""Page CER_norm on the shared real pages (pages_dev), ours (`ocr-assets pages`) beside Tesseract --psm 3.

Pages joined to one line, spaces collapsed, tashkeel stripped (DESIGN.md / shared/data/README.md).
    .venv/bin/python benchmarks/pages_dev.py [--pages 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ocr_assets import metrics
from ocr_assets.settings import shared_data_dir
from ocr_assets.text import normalize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=10)
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data/pages_dev")
    jpgs = sorted((shared / "pages_dev").glob("*.jpg"))
    jpgs = jpgs[:: max(1, len(jpgs) // args.pages)][: args.pages]
    refs = [normalize(p.with_suffix(".gt.txt").read_text(encoding="utf-8")) for p in jpgs]
    cli = Path(sys.executable).with_name("ocr-assets")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for p in jpgs:
            (src / p.name).symlink_to(p)
        start = time.perf_counter()
        subprocess.run([str(cli), "pages", str(src), "--out", str(Path(tmp) / "out"), "--device", "cpu"], check=True, capture_output=True)
        ours_s = time.perf_counter() - start
        ours = [normalize((Path(tmp) / "out" / f"{p.stem}.txt").read_text(encoding="utf-8")) for p in jpgs]
    start = time.perf_counter()
    tess = [normalize(subprocess.run(["tesseract", str(p), "stdout", "--psm", "3", "-l", "ara"], capture_output=True, text=True).stdout) for p in jpgs]
    tess_s = time.perf_counter() - start
    o, t = metrics.score(refs, ours), metrics.score(refs, tess)
    print(f"pages_dev, {len(jpgs)} evenly spaced pages, whole pages joined\n")
    print("| system | CER_norm | WER | s/page (CPU, 2 cores) |\n|---|---|---|---|")
    print(f"| ours: ocr-assets pages (first-slice segmentation) | {o.cer_norm:.4f} | {o.wer:.4f} | {ours_s / len(jpgs):.2f} |")
    print(f"| Tesseract ara --psm 3 | {t.cer_norm:.4f} | {t.wer:.4f} | {tess_s / len(jpgs):.2f} |")


if __name__ == "__main__":
    main()
