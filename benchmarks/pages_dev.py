"""Page CER / CER_norm on the shared real pages (pages_dev), ours (`ocr-assets pages`) beside Tesseract --psm 3.

Pages joined to one line, spaces collapsed; CER_norm also strips tashkeel (docs/ARCHITECTURE.md, "Measurement").

    .venv/bin/python benchmarks/pages_dev.py [--pages 10] [--model DIR]

Adaptation to the periodical (train and test pages disjoint): the first N pages (sorted by name) are read with
the base model, their lines aligned to the page transcriptions (`benchmarks.pagekit.align`), the lines that agree
(local CER_norm <= --max-cer) written as a pseudo ground-truth folder and the base LoRA fine-tuned on it
(`ocr_assets.training.finetune.finetune_gt_dir`, CPU); --rounds 2 re-reads the train pages with the adapted model, aligns
again and fine-tunes the base once more on the new folder. The other pages are the test set: base, adapted and
Tesseract are scored on them only (no threshold or setting is chosen on them).

    .venv/bin/python benchmarks/pages_dev.py --adapt-train 60 [--rounds 1] [--max-cer 0.35] [--epochs N]
        [--adapt-out DIR] [--keep-gt DIR] [--test-pages K] [--skip-tesseract]

The adapted models go to --adapt-out (default: <data root>/pages_dev_adapt, i.e. ./var/pages_dev_adapt):
model-r1/, model-r1.adapters/, ..., adapt.json; the pseudo ground truth only with --keep-gt (it is made of the
shared pages). Evaluate a model later on the same test pages: --model DIR --adapt-train 60 --eval-only.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.pagekit` when run as a script
from ocr_assets import metrics
from ocr_assets.settings import shared_data_dir
from ocr_assets.storage import Storage
from ocr_assets.text import normalize


def read_ours(jpgs: list[Path], model: str | None) -> tuple[list[str], float]:
    """`ocr-assets pages` over the pages (one process, as a user runs it): page texts and seconds."""
    cli = Path(sys.executable).with_name("ocr-assets")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for p in jpgs:
            (src / p.name).symlink_to(p)
        # "default": the shipped model even where the data root has a registry champion (the CLI's preference).
        cmd = [str(cli), "pages", str(src), "--out", str(Path(tmp) / "out"), "--device", "cpu", "--model", model or "default"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        return [normalize((Path(tmp) / "out" / f"{p.stem}.txt").read_text(encoding="utf-8")) for p in jpgs], seconds


def read_tesseract(jpgs: list[Path]) -> tuple[list[str], float]:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    start = time.perf_counter()
    texts = [normalize(subprocess.run(["tesseract", str(p), "stdout", "--psm", "3", "-l", "ara"], capture_output=True,
                                      text=True, env=env).stdout) for p in jpgs]
    return texts, time.perf_counter() - start


def adapt(train: list[Path], base: str | None, out: Path, rounds: int, max_cer: float, epochs: int | None,
          keep_gt: Path | None = None) -> list[str]:
    """Pseudo ground truth from the train pages + LoRA fine-tune of the base, `rounds` times (each round reads
    the pages with the previous round's model and fine-tunes the base again); the model of every round.

    The pseudo ground truth (crops and text of the shared pages) lives in a temporary folder unless `keep_gt`
    names one: shared data is not copied into the data root by default."""
    from ocr_assets.models.resolve import load_recognizer
    from benchmarks.pagekit.align import write_pseudo_gt
    from ocr_assets.settings import FinetuneSettings
    from ocr_assets.training.finetune import finetune_gt_dir

    out.mkdir(parents=True, exist_ok=True)
    reader, log, models = base, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, rounds + 1):
            gt_dir, model_dir = (keep_gt or Path(tmp)) / f"gt-r{r}", out / f"model-r{r}"
            if gt_dir.exists():
                if not (gt_dir / "alignment.jsonl").is_file():
                    raise SystemExit(f"{gt_dir} exists and is not a pseudo ground-truth folder written here; remove it")
                shutil.rmtree(gt_dir)
            start = time.perf_counter()
            built = write_pseudo_gt(train, load_recognizer(reader, device="cpu"), gt_dir, max_cer=max_cer)
            built["seconds"] = round(time.perf_counter() - start, 1)
            print(f"round {r}: pseudo ground truth from {len(train)} pages read by {reader or 'the shipped model'}: "
                  f"{built}", file=sys.stderr)
            settings = FinetuneSettings(device="cpu", epochs=epochs)
            tuned = finetune_gt_dir(gt_dir, model_dir, base=base, settings=settings,
                                    log=lambda m: print(m, file=sys.stderr))
            print(f"round {r}: fine-tuned: {tuned}", file=sys.stderr)
            log.append({"round": r, "pseudo_gt": built, "finetune": tuned})
            reader = str(model_dir)
            models.append(reader)
    (out / "adapt.json").write_text(json.dumps({"train_pages": [p.name for p in train], "base": base or "shipped",
                                                "max_cer": max_cer, "rounds": log}, ensure_ascii=False, indent=1))
    return models


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=10, help="evenly spaced pages (without --adapt-train)")
    ap.add_argument("--model", default=None, help="model directory to evaluate (default: the shipped model); with "
                    "--adapt-train also the base that is adapted")
    ap.add_argument("--adapt-train", type=int, default=0, metavar="N",
                    help="adapt on the first N pages (sorted), test on the others")
    ap.add_argument("--test-pages", type=int, default=0, metavar="K", help="score only K evenly spaced test pages")
    ap.add_argument("--rounds", type=int, default=1, help="pseudo ground truth + fine-tune rounds")
    ap.add_argument("--max-cer", type=float, default=0.35, help="keep lines whose local CER_norm is at most this")
    ap.add_argument("--epochs", type=int, default=None, help="fine-tune epochs (default: chosen from the line count)")
    ap.add_argument("--adapt-out", default=None, help="folder for the adapted models (default: <data root>/pages_dev_adapt)")
    ap.add_argument("--keep-gt", default=None, metavar="DIR", help="keep the pseudo ground-truth folders in DIR "
                    "(default: a temporary folder, removed after training)")
    ap.add_argument("--eval-only", action="store_true", help="with --adapt-train: score --model on the test pages, no training")
    ap.add_argument("--skip-tesseract", action="store_true")
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data/pages_dev")
    jpgs = sorted((shared / "pages_dev").glob("*.jpg"))
    systems: list[tuple[str, str | None]]
    if args.adapt_train:
        if not 0 < args.adapt_train < len(jpgs):
            raise SystemExit(f"--adapt-train {args.adapt_train}: give 1..{len(jpgs) - 1}")
        train, test = jpgs[: args.adapt_train], jpgs[args.adapt_train :]
        if args.test_pages:
            test = test[:: max(1, len(test) // args.test_pages)][: args.test_pages]
        base_name = (f"--model {args.model}" if args.eval_only else f"base ({args.model})") if args.model else "shipped"
        if args.eval_only:
            systems = [(base_name, args.model)]
        else:
            out = Path(args.adapt_out) if args.adapt_out else Storage.from_env().local_path("pages_dev_adapt")
            start = time.perf_counter()
            adapted = adapt(train, args.model, out, args.rounds, args.max_cer, args.epochs,
                            Path(args.keep_gt) if args.keep_gt else None)
            print(f"adaptation: {time.perf_counter() - start:.0f} s, models {adapted}", file=sys.stderr)
            systems = [(base_name, args.model)] + [(f"adapted, round {r}", m) for r, m in enumerate(adapted, 1)]
        jpgs = test
        title = f"pages_dev, test pages {jpgs[0].stem} .. {jpgs[-1].stem} ({len(jpgs)}), adaptation on the first {args.adapt_train}"
    else:
        jpgs = jpgs[:: max(1, len(jpgs) // args.pages)][: args.pages]
        systems = [("ours: ocr-assets pages" + (f" --model {args.model}" if args.model else ""), args.model)]
        title = f"pages_dev, {len(jpgs)} evenly spaced pages"
    refs = [normalize(p.with_suffix(".gt.txt").read_text(encoding="utf-8")) for p in jpgs]
    rows = []
    for name, model in systems:
        texts, seconds = read_ours(jpgs, model)
        rows.append((name, metrics.score(refs, texts), seconds))
    if not args.skip_tesseract:
        texts, seconds = read_tesseract(jpgs)
        rows.append(("Tesseract ara --psm 3", metrics.score(refs, texts), seconds))
    print(f"{title}, whole pages joined\n")
    print("| system | CER | CER_norm | WER | s/page (CPU, 2 cores) |\n|---|---|---|---|---|")
    for name, s, seconds in rows:
        print(f"| {name} | {s.cer:.4f} | {s.cer_norm:.4f} | {s.wer:.4f} | {seconds / len(jpgs):.2f} |")


if __name__ == "__main__":
    main()
