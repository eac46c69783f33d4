"""Where a GPU `ocr-assets recognize` run spends its time after start-up: the CLI's own steps, timed one by one in one
process (issue 14). The folder is walked, the decode workers forked, the model loaded (as `cmd_recognize` does), then
`reading.recognize_dir` reads the folder ROUNDS times (the first is what a CLI run pays; later rounds are "under
way"). Each round says when its first row came, when its last row came and how long writing the rows took.

    python benchmarks/gpu_cli_phases.py LINES_DIR [--rounds 2] [--device cuda] [--out rows.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lines_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu_cli_phases.jsonl"))
    args = parser.parse_args()

    t0 = time.perf_counter()
    from ocr_assets.cli import _early_feed_pool
    from ocr_assets.models.compact.runtime import using
    from ocr_assets.models.resolve import load_recognizer, resolve_model
    from ocr_assets.reading import find_images, recognize_dir

    marks = {"imports": time.perf_counter() - t0}
    paths = find_images(args.lines_dir)
    marks["walk"] = time.perf_counter() - t0
    pool = _early_feed_pool(args.device)
    marks["pool forked"] = time.perf_counter() - t0
    with using("torch"):  # the torch reader, as on a GPU (on a CPU the CLI would read with ONNX Runtime)
        recognizer = load_recognizer(resolve_model(args.model).path, device=args.device)
    marks["model loaded"] = time.perf_counter() - t0
    print(f"{len(paths)} files; " + ", ".join(f"{k} at {v:.2f} s" for k, v in marks.items()))
    try:
        from ocr_assets.models.compact.line_feed import EncodedFiles, LineFeed

        height = recognizer.model.config.input_height
        for r in range(args.rounds):
            start = time.perf_counter()
            files = EncodedFiles(paths)
            stat = time.perf_counter() - start
            feed = LineFeed(files, height, 1024, pool=pool)
            feed.close()
            print(f"feed set-up alone: stat {stat:.2f} s, read + probe + plan {time.perf_counter() - start - stat:.2f} s")
        for r in range(args.rounds):
            start = time.perf_counter()
            first = last = None
            writing = 0.0
            with open(args.out, "w", encoding="utf-8") as out:
                for row in recognize_dir(recognizer, args.lines_dir, paths=paths, feed_pool=pool):
                    now = time.perf_counter()
                    first = first if first is not None else now - start
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    writing += time.perf_counter() - now
                    last = time.perf_counter() - start
            total = time.perf_counter() - start
            print(f"round {r + 1}: first row at {first:.2f} s, rows written by {last:.2f} s (writing {writing:.2f} s), "
                  f"{len(paths) / total:,.0f} lines/s")
    finally:
        if pool is not None:
            pool.close()


if __name__ == "__main__":
    main()
