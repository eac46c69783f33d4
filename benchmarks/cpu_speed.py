"""CPU speed, whole process, same lines, same run: `ocr-assets recognize` vs Tesseract (one process per line, 2 at
a time, OMP_THREAD_LIMIT=1), on evenly spaced real lines of the five books. Also each one's CER_norm on them.

    .venv/bin/python benchmarks/cpu_speed.py [--lines 300] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import tesseract_many, tesseract_version  # noqa: E402

from ocr_assets import metrics  # noqa: E402
from ocr_assets.settings import shared_data_dir  # noqa: E402
from ocr_assets.text import normalize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data")
    pngs = sorted((shared / "ocr_gs_print").glob("*/*.png"))
    pngs = pngs[:: max(1, len(pngs) // args.lines)][: args.lines]
    cli = Path(sys.executable).with_name("ocr-assets")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "lines"
        folder.mkdir()
        refs = {}
        for p in pngs:
            name = f"{p.parent.name}__{p.name}"
            shutil.copy2(p, folder / name)
            refs[name] = normalize(p.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8"))
        # "default": the shipped model even where the data root has a registry champion (the CLI's preference).
        cmd = [str(cli), "recognize", str(folder), "--out", str(Path(tmp) / "o.jsonl"), "--device", "cpu",
               "--model", args.model or "default"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        ours_s = time.perf_counter() - start
        rows = [json.loads(line) for line in (Path(tmp) / "o.jsonl").read_text(encoding="utf-8").splitlines()]
        ours = {r["image"]: r["text"] for r in rows}
        names = sorted(refs)
        tess, tess_s = tesseract_many([folder / n for n in names], psm=13)
    r = [refs[n] for n in names]
    o = metrics.score(r, [ours[n] for n in names])
    t = metrics.score(r, tess)
    n = len(names)
    print(f"CPU speed, {n} real lines, {os.cpu_count()} cores, whole process (peer: {tesseract_version()} --psm 13)\n")
    print("| system | wall s | lines/s | CER_norm on these lines |")
    print("|---|---|---|---|")
    print(f"| ours: ocr-assets recognize (shipped compact) | {ours_s:.1f} | {n / ours_s:.1f} | {o.cer_norm:.4f} |")
    print(f"| Tesseract ara, 2 processes | {tess_s:.1f} | {n / tess_s:.1f} | {t.cer_norm:.4f} |")
    print(f"\nspeed ratio ours/Tesseract: {tess_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
