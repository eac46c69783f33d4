"""Kraken 7 beside ours and Tesseract, per held-out book, all lines, on this CPU (issue 12, item 4).

For each of the five shared books B (leave-one-book-out):
- ours v1 shipped: `ocr-assets evaluate B --model default --device cpu` (the project's default CPU runtime);
- ours v2 fold: `ocr-assets evaluate B --model var/v2/fold_B --device cpu` where that model exists;
- Kraken fold: benchmarks/kraken/read_kraken.py with the fold's model (.kraken/models/kraken_fold_B*.safetensors,
  trained by gpu_train.sh on the four other books), two processes of one thread, scored here with
  ocr_assets.metrics.score against ocr_assets.text.normalize(GT) (what `ocr-assets evaluate` does);
- Tesseract: benchmarks/peers.py (`--psm 13 -l ara`, one process per line, two at a time), scored the same way.
lines/s: ours = `evaluate`'s lines_per_s (model loaded, in process); Kraken = lines / wall time of the two reading
processes after their model load; Tesseract = lines / wall time of the batch (a process per line).
Everything read is cached under .kraken/ (git-ignored); --rerun ENGINE re-reads. Prints one markdown table per
book and writes numbers only to docs/results/kraken_peer.json.

    .venv/bin/python benchmarks/kraken/score.py [--books B ...] [--rerun kraken tesseract ours_v1 ours_v2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from peers import tesseract_many, tesseract_version  # noqa: E402

from ocr_assets import metrics  # noqa: E402
from ocr_assets.settings import shared_data_dir  # noqa: E402
from ocr_assets.text import normalize  # noqa: E402

CACHE = ROOT / ".kraken" / "results"
KRAKEN_PY = ROOT / ".kraken" / "venv" / "bin" / "python"
CLI = ROOT / ".venv" / "bin" / "ocr-assets"
MIN_VAL_ACC = 0.5


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cached(name: str, rerun: bool, make):
    path = CACHE / f"{name}.json"
    if path.exists() and not rerun:
        return json.loads(path.read_text(encoding="utf-8"))
    before = _load()
    value = make()
    value["load_before"], value["load_after"] = before, _load()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return value


def ours(book: Path, model: str) -> dict:
    out = subprocess.run([str(CLI), "evaluate", str(book), "--model", model, "--device", "cpu"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def kraken_model(book: str) -> Path | None:
    found = sorted((ROOT / ".kraken" / "models").glob(f"kraken_fold_{book}.fp16.safetensors"))
    return found[0] if found else None


GPU_RUN = ROOT / ".kraken" / "gpu_run"  # default: where the training call's train_summary.json and machine.txt are


def training(book: str, gpu_run: Path = GPU_RUN) -> dict:
    """What gpu_train.sh reported for this fold (gpu_run/train_summary.json), reduced to numbers."""
    path = gpu_run / "train_summary.json"
    if not path.exists():
        return {}
    info = json.loads(path.read_text()).get(book, {})
    hist = info.get("history", [])
    walls = [h["wall"] for h in hist]
    return {"epochs_validated": info.get("epochs_validated"), "stopped_by": info.get("stopped_by"),
            "train_seconds": info.get("seconds"), "best": info.get("best"),
            "val_accuracy_per_epoch": [h["val_accuracy"] for h in hist],
            "seconds_between_validations": [round(b - a, 1) for a, b in zip(walls, walls[1:])]}


def subset(paths: list[Path], per_book: int = 150) -> list[Path]:
    return paths[:: max(1, len(paths) // per_book)][:per_book]  # benchmarks/unseen_books.py's rule


def row(name: str, s: metrics.Scores | dict, lps: float, extra: str = "") -> dict:
    d = s.as_dict() if isinstance(s, metrics.Scores) else s
    return {"engine": name, "cer": d["cer"], "cer_norm": d["cer_norm"], "wer": d["wer"], "lines": d["lines"],
            "lines_per_s": round(lps, 2), "note": extra}


def same_run_speed(book: Path, lines: int) -> dict:
    """lines/s of the four engines back to back on one evenly spaced subset of one book (loads change by the minute)."""
    import shutil
    import tempfile

    paths = subset(sorted(book.glob("*.png")), lines)
    out = {"book": book.name, "lines": len(paths), "load_before": _load()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "lines"
        folder.mkdir()
        for p in paths:
            shutil.copy2(p, folder / p.name)
            shutil.copy2(p.with_suffix("").with_suffix(".gt.txt"), folder / p.with_suffix("").with_suffix(".gt.txt").name)
        out["ours v1"] = ours(folder, "default")["lines_per_s"]
        fold = ROOT / "var" / "v2" / f"fold_{book.name}"
        if fold.is_dir():
            out["ours v2 fold"] = ours(folder, str(fold))["lines_per_s"]
        km = kraken_model(book.name)
        if km is not None:
            res = Path(tmp) / "k.json"
            subprocess.run([str(KRAKEN_PY), str(ROOT / "benchmarks" / "kraken" / "read_kraken.py"), "--model", str(km),
                            "--out", str(res), "--procs", "2", *map(str, paths)], check=True, capture_output=True)
            out["Kraken fold"] = len(paths) / json.loads(res.read_text())["read_s"]
        _, secs = tesseract_many(paths, psm=13)
        out["Tesseract"] = len(paths) / secs
    out["load_after"] = _load()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", nargs="*")
    ap.add_argument("--rerun", nargs="*", default=[])
    ap.add_argument("--gpu-run", default=str(GPU_RUN), help="folder holding the training call's train_summary.json "
                    "and machine.txt (default .kraken/gpu_run)")
    ap.add_argument("--assume-trained", nargs="*", default=[], metavar="BOOK",
                    help="score these folds' Kraken models on every line although no training summary says they learned")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "kraken_peer.json"))
    ap.add_argument("--same-run-speed", nargs="*", default=[], metavar="BOOK",
                    help="also time the engines back to back on 150 evenly spaced lines of these books")
    args = ap.parse_args()
    gpu_run = Path(args.gpu_run)
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs the shared books (<shared>/data/ocr_gs_print); not found")
    books = sorted(p for p in (shared / "ocr_gs_print").iterdir() if p.is_dir() and (not args.books or p.name in args.books))
    result = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version()},
              "tesseract": tesseract_version(), "books": {}}
    for book in books:
        pngs = sorted(book.glob("*.png"))
        refs = [normalize(p.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8")) for p in pngs]
        rows = []
        v1 = _cached(f"ours_v1_{book.name}", "ours_v1" in args.rerun, lambda: ours(book, "default"))
        rows.append(row("ours v1 (shipped; saw this book in training)", v1, v1["lines_per_s"]))
        fold = ROOT / "var" / "v2" / f"fold_{book.name}"
        if fold.is_dir():
            v2 = _cached(f"ours_v2_{book.name}", "ours_v2" in args.rerun, lambda: ours(book, str(fold)))
            rows.append(row("ours v2 fold (book unseen)", v2, v2["lines_per_s"]))
        else:
            rows.append({"engine": "ours v2 fold (book unseen)", "note": f"{fold.relative_to(ROOT)} not present"})
        km = kraken_model(book.name)
        tr = training(book.name, gpu_run)
        trained = bool(tr.get("val_accuracy_per_epoch")) and max(tr["val_accuracy_per_epoch"]) >= MIN_VAL_ACC
        assumed = book.name in args.assume_trained and not trained  # the run's summary was lost: score it, say so
        trained = trained or assumed
        if km is not None:
            # A fold model that never learned to read (validation accuracy below MIN_VAL_ACC) gets no quality
            # figures; its speed is still measured on the 150-line subset (the network's cost does not depend on
            # what it learned).
            read_paths = pngs if trained else subset(pngs)

            def read_kraken():
                out = CACHE / f"kraken_raw_{book.name}.json"
                subprocess.run([str(KRAKEN_PY), str(ROOT / "benchmarks" / "kraken" / "read_kraken.py"), "--model", str(km),
                                "--out", str(out), "--procs", "2", *map(str, read_paths)], check=True, capture_output=True)
                raw = json.loads(out.read_text(encoding="utf-8"))
                rr = [normalize(p.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8")) for p in read_paths]
                as_returned = [raw["lines"][str(p)] for p in read_paths]
                bidi_r = [raw["bidi_R"][str(p)] for p in read_paths]
                return {"as_returned": metrics.score(rr, as_returned).as_dict(), "bidi_R": metrics.score(rr, bidi_r).as_dict(),
                        "read_s": raw["read_s"], "load_s": raw["load_s"], "lines": len(read_paths), "model": km.name,
                        "kraken": raw["kraken"], "torch": raw["torch"], "procs": raw["procs"]}
            k = _cached(f"kraken_{book.name}", "kraken" in args.rerun, read_kraken)
            chosen = "bidi_R" if k["bidi_R"]["cer"] < k["as_returned"]["cer"] else "as_returned"
            epochs = ("training summary lost (--assume-trained): epochs and stopping unknown" if assumed else
                      f"{tr.get('epochs_validated')} epoch(s), val acc {max(tr.get('val_accuracy_per_epoch') or [0]):.4f}, stopped by {tr.get('stopped_by')}")
            if trained:
                rows.append(row("Kraken 7.1.1 fold (book unseen)", k[chosen], k["lines"] / k["read_s"],
                                f"{epochs}; order: {chosen} (CER as returned {k['as_returned']['cer']:.4f}, bidi_R {k['bidi_R']['cer']:.4f})"))
            else:
                rows.append({"engine": "Kraken 7.1.1 fold (book unseen)", "lines_per_s": round(k["lines"] / k["read_s"], 2),
                             "speed_lines": k["lines"], "note": f"NOT TRAINED: {epochs}; no quality figures; lines/s on {k['lines']} evenly spaced lines"})
            rows[-1]["training"] = tr
        else:
            rows.append({"engine": "Kraken 7.1.1 fold (book unseen)", "note": "no model under .kraken/models"})

        def read_tess():
            hyps, secs = tesseract_many(pngs, psm=13)
            return {"scores": metrics.score(refs, hyps).as_dict(), "seconds": secs, "lines": len(pngs)}
        t = _cached(f"tesseract_{book.name}", "tesseract" in args.rerun, read_tess)
        rows.append(row("Tesseract --psm 13 (x2 processes)", t["scores"], t["lines"] / t["seconds"]))
        for r, name in zip(rows, ("ours_v1", "ours_v2", "kraken", "tesseract")):
            cached = CACHE / (f"{name}_{book.name}.json")
            if cached.exists():
                c = json.loads(cached.read_text(encoding="utf-8"))
                if "load_before" in c:
                    r["load_average_before_after"] = [c["load_before"], c["load_after"]]
        result["books"][book.name] = {"lines": len(pngs), "rows": rows}
        print(f"\n### {book.name} ({len(pngs)} lines, all)\n")
        print("| engine | CER | CER_norm | WER | lines/s (this CPU) | note |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            if "cer" in r:
                print(f"| {r['engine']} | {r['cer']:.4f} | {r['cer_norm']:.4f} | {r['wer']:.4f} | {r['lines_per_s']:.1f} | {r['note']} |")
            else:
                lps = f"{r['lines_per_s']:.1f}" if "lines_per_s" in r else "–"
                print(f"| {r['engine']} | – | – | – | {lps} | {r['note']} |")
    if args.same_run_speed:
        result["same_run_speed"] = []
        print("\n### lines/s back to back, 150 evenly spaced lines (this CPU)\n")
        print("| book | ours v1 | ours v2 fold | Kraken fold | Tesseract --psm 13 x2 | load avg before / after |")
        print("|---|---|---|---|---|---|")
        for name in args.same_run_speed:
            r = same_run_speed(shared / "ocr_gs_print" / name, 150)
            result["same_run_speed"].append(r)
            print(f"| {name} | {r['ours v1']:.1f} | {r.get('ours v2 fold', float('nan')):.1f} | {r.get('Kraken fold', float('nan')):.1f} | "
                  f"{r['Tesseract']:.1f} | {r['load_before']} / {r['load_after']} |")
    gpu = gpu_run / "machine.txt"
    if gpu.exists():
        result["kraken_training_machine"] = gpu.read_text().strip().splitlines()
    result["load_average_end"] = _load()
    result["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
