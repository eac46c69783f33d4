"""The correction loop played on the shared real pages (pages_dev): does correcting the least-confident lines of
the first pages make the next pages read better?

    .venv/bin/python benchmarks/correction_loop.py [--first 60] [--next 60] [--lines 300] [--epochs N]
        [--max-cer 0.5] [--golden-dir DIR] [--golden-lines 120] [--golden-tolerance X] [--root DIR]

1. Pages 1..--first (sorted by name) arrive in an inbox and are read by the shipped model into a corpus
   (`ocr_assets.corpus.build.process_inbox`, as `ocr-assets corpus` does).
2. A person "corrects" the --lines least-confident lines of that corpus (the review queue's order): each page's
   OCR lines are aligned to the page transcription (`benchmarks.pagekit.align.align_page`) and a line's
   corrected text is its aligned span; a line whose span is empty or far from the OCR (local CER_norm > 0.5) is
   skipped, as the simulation cannot know what a person would type there.
3. The loop runs as the sensors would run it: corrections JSONL imported and validated
   (`ocr_assets.monitoring.corrections`), a challenger fine-tuned from the champion, gated on the golden set
   plus held-out corrections, promoted only if better (`ocr_assets.monitoring.loop`).
4. Pages --first+1 .. --first+--next arrive and are read by the champion (promoted or not).

Prints page CER_norm of those next pages without the loop (shipped model), with the loop (the champion after the
gate) and of the challenger itself, the number of corrected lines and wall times. Shared data is read at run
time from $OCR_ASSETS_SHARED_DATA or ../shared/data and never copied into the repository; the data root is a
temporary folder unless --root names one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.pagekit` when run as a script
from ocr_assets import metrics  # noqa: E402
from ocr_assets.settings import shared_data_dir  # noqa: E402
from ocr_assets.text import normalize  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def arrive(pages: list[Path], inbox: Path) -> None:
    for p in pages:
        shutil.copyfile(p, inbox / p.name)


def page_texts(root: Path, pages: list[Path]) -> list[str]:
    """The corpus text of each page (by the manifest's inbox path), normalized as benchmarks/pages_dev.py does."""
    by_name = {}
    for manifest in (root / "scans" / "manifest").glob("*.json"):
        by_name[json.loads(manifest.read_text())["path"]] = manifest.stem
    out = []
    for p in pages:
        text = root / "corpus" / "scans" / by_name[p.name] / "p0001.txt"
        out.append(normalize(text.read_text(encoding="utf-8")) if text.exists() else "")
    return out


def simulated_corrections(root: Path, pages: list[Path], lines: int, max_cer: float = 0.5) -> list[dict]:
    """The `lines` least-confident OCR'd lines, each with its aligned transcription span as the corrected text."""
    from benchmarks.pagekit.align import align_page, transcript_beside
    from ocr_assets.monitoring.corrections import line_id

    by_name = {json.loads(m.read_text())["path"]: m.stem for m in (root / "scans" / "manifest").glob("*.json")}
    candidates = []
    for p in pages:
        key = by_name[p.name]
        records = [json.loads(l) for l in (root / "corpus/scans" / key / "p0001.jsonl").read_text(encoding="utf-8").splitlines() if l]
        aligned, _ = align_page([r["text"] for r in records], transcript_beside(p).read_text(encoding="utf-8"))
        for r, a in zip(records, aligned):
            usable = bool(a.pseudo_gt) and a.cer <= max_cer
            candidates.append((r["confidence"], usable, line_id(key, r["page"], r["line"]), a.pseudo_gt))
    candidates.sort(key=lambda c: c[0])
    picked = candidates[:lines]
    return [{"line_id": lid, "text": text} for _, usable, lid, text in picked if usable]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--first", type=int, default=60, help="pages that arrive first and get corrected")
    ap.add_argument("--next", type=int, default=60, help="pages that arrive after the loop and are scored")
    ap.add_argument("--lines", type=int, default=300, help="least-confident lines a person looks at")
    ap.add_argument("--max-cer", type=float, default=0.5, help="skip a line whose aligned span is further than this "
                    "(local CER_norm) from its OCR: the alignment is not trusted to say what a person would type")
    ap.add_argument("--epochs", type=int, default=None, help="challenger epochs (default: CorrectionSettings)")
    ap.add_argument("--golden-dir", default=None, help="ground-truth folder of real lines for the golden set "
                    "(default: synthetic lines)")
    ap.add_argument("--golden-lines", type=int, default=None, help="golden set size (default: MonitoringSettings)")
    ap.add_argument("--golden-tolerance", type=float, default=None, help="also refuse a challenger that loses more "
                    "than this CER_norm on the golden set (CorrectionSettings.golden_tolerance; default: off)")
    ap.add_argument("--root", default=None, help="data root (default: a temporary folder, removed afterwards)")
    args = ap.parse_args()
    shared = shared_data_dir()
    if shared is None or not (shared / "pages_dev").is_dir():
        raise SystemExit("needs the shared pages_dev (set OCR_ASSETS_SHARED_DATA or check out ../shared/data)")
    jpgs = sorted((shared / "pages_dev").glob("*.jpg"))
    if args.first + args.next > len(jpgs):
        raise SystemExit(f"--first + --next = {args.first + args.next}, but pages_dev has {len(jpgs)} pages")
    first, later = jpgs[: args.first], jpgs[args.first : args.first + args.next]

    from ocr_assets.corpus.build import process_inbox
    from ocr_assets.models.resolve import load_recognizer, resolve_model
    from ocr_assets.monitoring.corrections import import_files
    from ocr_assets.monitoring.loop import train_challenger
    from ocr_assets.settings import correction_settings_from_env, monitoring_settings_from_env
    from ocr_assets.storage import Storage

    started = time.perf_counter()
    tmp = None if args.root else tempfile.mkdtemp(prefix="correction-loop-")
    root = Path(args.root or tmp).resolve()
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    import os

    os.environ["OCR_ASSETS_INBOX_SETTLE_S"] = "0"  # pages copied just now count as arrived
    storage = Storage(str(root))
    times = {}
    try:
        shipped = load_recognizer("default", device="cpu")
        t = time.perf_counter()
        arrive(first, inbox)
        process_inbox(storage, str(inbox), shipped, model="shipped default",
                      progress=lambda d, n: log(f"pages 1-{args.first}: read {d}/{n}"))
        times["read first pages"] = time.perf_counter() - t

        t = time.perf_counter()
        rows = simulated_corrections(root, first, args.lines, args.max_cer)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        report = import_files(storage, [("simulated-review.jsonl", body)], log=log)
        log(f"corrections: {len(rows)} of the {args.lines} least-confident lines, import {report.as_dict()}")
        monitoring = monitoring_settings_from_env(golden_dir=args.golden_dir, golden_lines=args.golden_lines)
        corrections = correction_settings_from_env(epochs=args.epochs, golden_tolerance=args.golden_tolerance,
                                                  min_corrections=min(30, max(2, report.total_accepted)))
        gate = train_challenger(storage, None, corrections, monitoring, device="cpu", log=log)
        times["loop (import, fine-tune, gate)"] = time.perf_counter() - t

        t = time.perf_counter()
        arrive(later, inbox)
        registry = storage.mlflow_uri() if storage.has_local_mlflow_store() else None
        champion = resolve_model(None, registry)
        log(f"pages {args.first + 1}-{args.first + args.next} arrive; champion: {champion.source}")
        process_inbox(storage, str(inbox), load_recognizer(champion.path, device="cpu"), model=champion.source,
                      progress=lambda d, n: log(f"next pages: read {d}/{n}"))
        times["read next pages (loop's champion)"] = time.perf_counter() - t
        refs = [normalize(p.with_suffix(".gt.txt").read_text(encoding="utf-8")) for p in later]
        with_loop = metrics.score(refs, page_texts(root, later))

        # The same pages without the loop (the shipped model) and read by the challenger itself, each in its own root.
        scores = {}
        for name, model in (("without", "default"), ("challenger", gate["model_url"])):
            t = time.perf_counter()
            other = Path(tempfile.mkdtemp(prefix=f"correction-loop-{name}-"))
            try:
                (other / "inbox").mkdir()
                arrive(later, other / "inbox")
                process_inbox(Storage(str(other)), str(other / "inbox"), load_recognizer(model, device="cpu"), model=name,
                              progress=lambda d, n: log(f"next pages ({name}): read {d}/{n}"))
                scores[name] = metrics.score(refs, page_texts(other, later))
            finally:
                shutil.rmtree(other, ignore_errors=True)
            times[f"read next pages ({name})"] = time.perf_counter() - t
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - started

    print(f"pages_dev correction loop: pages 1-{args.first} read and corrected, pages {args.first + 1}-"
          f"{args.first + args.next} scored (whole pages joined; CPU, 2 cores shared)\n")
    print("| pages 61-120 read by | CER | CER_norm | WER |\n|---|---|---|---|".replace(
        "61-120", f"{args.first + 1}-{args.first + args.next}"))
    print(f"| shipped model (no loop) | {scores['without'].cer:.4f} | {scores['without'].cer_norm:.4f} | {scores['without'].wer:.4f} |")
    print(f"| champion after the loop ({'challenger promoted' if gate['promoted'] else 'challenger refused'}) | "
          f"{with_loop.cer:.4f} | {with_loop.cer_norm:.4f} | {with_loop.wer:.4f} |")
    print(f"| the challenger itself | {scores['challenger'].cer:.4f} | {scores['challenger'].cer_norm:.4f} | "
          f"{scores['challenger'].wer:.4f} |")
    print(f"\ncorrected lines: {report.accepted} accepted ({report.quarantined} quarantined) of the {args.lines} "
          f"least-confident; trained on {gate['train_lines']}, held out {gate['heldout_lines']}")
    print(f"gate (golden set + held-out corrections, CER_norm): champion {gate['champion_cer_norm']:.4f}, challenger "
          f"{gate['challenger_cer_norm']:.4f}; golden {gate['champion_golden_cer_norm']:.4f} -> "
          f"{gate['challenger_golden_cer_norm']:.4f}; held-out {gate['champion_heldout_cer_norm']:.4f} -> "
          f"{gate['challenger_heldout_cer_norm']:.4f}; {gate['reason']}")
    print("\n| step | wall s |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.0f} |")
    print(f"| total | {total:.0f} |")


if __name__ == "__main__":
    main()
