"""Which edits a model makes on a folder of line images with `.gt.txt` transcriptions: the most common classes.

    .venv/bin/python benchmarks/error_classes.py --model DIR_OR_default --lines LINE_DIR [--top 12]

Each reading is aligned with its ground truth (`metrics.char_confusions`: Levenshtein edit operations on normalized
text with marks kept) and every edit counted as "deleted ' '", "inserted 'َ'", "'أ' read 'ا'", ...; the table prints the most common
classes with their share of all edits, and CER / CER_norm for the folder. Used to find what limits a book (issue 12).
A diagnostic CER_norm with the spaces next to punctuation taken out of both sides says how much of the rest is a
transcriber's spacing habit («قال :» / «قال:», « كلمة » / «كلمة») rather than letters; it is not the benchmark metric.
"""
from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr_assets import metrics  # noqa: E402
from ocr_assets.models.conventions import SPACED_MARKS  # noqa: E402
from ocr_assets.text import normalize  # noqa: E402


def _show(ch: str) -> str:
    return f"'{ch}'" if not unicodedata.combining(ch) else f"'\u25cc{ch}' ({unicodedata.name(ch, '?').lower()})"


def edit_name(ref_char: str, hyp_char: str) -> str:
    if not hyp_char:
        return f"deleted {_show(ref_char)}"
    return f"inserted {_show(hyp_char)}" if not ref_char else f"{_show(ref_char)} read {_show(hyp_char)}"


# Spaces on either side of the marks whose spacing `ocr-assets conventions` learns per book (a transcriber's choice).
_PUNCTUATION_SPACE = re.compile(" ?([" + re.escape(SPACED_MARKS) + "]) ?")


def without_punctuation_spaces(text: str) -> str:
    return _PUNCTUATION_SPACE.sub(r"\1", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model directory or 'default' (the shipped model)")
    parser.add_argument("--lines", required=True, help="folder of line images with .gt.txt files beside them")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    from PIL import Image

    from ocr_assets.models.resolve import load_recognizer

    folder = Path(args.lines)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
                    and p.with_suffix(".gt.txt").exists())
    if not images:
        parser.error(f"{folder} has no line images with .gt.txt transcriptions beside them")
    recognizer = load_recognizer(args.model, device="cpu")
    refs = [normalize(p.with_suffix(".gt.txt").read_text(encoding="utf-8").strip()) for p in images]
    hyps = [normalize(r.text) for r in recognizer.recognize([Image.open(p).convert("L") for p in images])]
    counts = metrics.char_confusions(refs, hyps, top=None, keep_marks=True)
    total = sum(n for _, _, n in counts)
    print(f"{len(images)} lines of {folder.name}, model {args.model}: CER {metrics.cer(refs, hyps):.4f}, "
          f"CER_norm {metrics.cer_norm(refs, hyps):.4f}, {total} edits; CER_norm with spaces next to punctuation "
          f"ignored (diagnostic) {metrics.cer_norm([without_punctuation_spaces(t) for t in refs], [without_punctuation_spaces(t) for t in hyps]):.4f}")
    print("\n| edit | count | share of edits |\n|---|---|---|")
    for ref_char, hyp_char, n in counts[: args.top]:
        print(f"| {edit_name(ref_char, hyp_char)} | {n} | {n / max(1, total):.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
