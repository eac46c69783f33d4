"""Line detection on synthetic printed pages: `segment_lines` against ground-truth ink boxes.

    nice -n 10 .venv/bin/python benchmarks/line_detection.py [--pages 50] [--seed 0] [--dpi 300] [--clean]
        [--iou 0.5] [--json OUT]

Pages come from `ocr_assets.synth.pages.render_page` (seeds seed..seed+pages-1: header, page
number, justified body, footnotes, up to ±2° skew, scan degradation unless --clean). Predicted and GT boxes
are matched one-to-one at IoU >= --iou (greedy, best IoU first); precision, recall and F1 are pooled over
all lines of the slice, mean IoU is over matched pairs. Per role, a false positive counts against the role
of the GT line it overlaps most ("none" when it touches no line). Unmatched GT lines are sorted by cause
(`benchmarks.pagekit.metrics.miss_kind`): merged (its box also holds another GT line), loose (its box holds
it alone but is too large), split (cut over two or more boxes), partial, missed. Bilevel pages (a
binarised scan: two grey levels) and greyscale pages are reported apart. When the
predicted boxes carry a `role`, role accuracy on matched lines is reported too. Timing is `segment_lines`
alone, in this process (rendering excluded).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import Counter, defaultdict

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.pagekit` when run as a script
from benchmarks.pagekit.metrics import DetectionScore, as_box, intersection, match_boxes, miss_kind
from ocr_assets.pages.segment import segment_lines
from ocr_assets.synth.pages import ROLES, render_page

CAUSES = ("merged", "loose", "split", "partial", "missed")


def _skew_bin(deg: float) -> str:
    a = abs(deg)
    return "skew 0°" if a == 0 else "skew (0°, 0.5°]" if a <= 0.5 else "skew (0.5°, 1°]" if a <= 1 else "skew (1°, 2°]"


def _norm_role(role) -> str | None:
    return None if role is None else str(role).replace("_", "-").lower()


def run(pages: int, seed: int, dpi: int, clean: bool, threshold: float) -> dict:
    slices: dict[str, DetectionScore] = defaultdict(DetectionScore)
    slice_pages: Counter = Counter()
    roles: dict[str, DetectionScore] = defaultdict(DetectionScore)
    causes: dict[str, Counter] = defaultdict(Counter)
    role_pairs: Counter = Counter()  # (gt role, predicted role) on matched lines with a predicted role
    seg_times, render_times = [], []
    per_page = []
    for index in range(pages):
        start = time.perf_counter()
        page = render_page(seed + index, dpi=dpi, degrade=not clean)
        render_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        pred = segment_lines(page.image)
        seg_times.append(time.perf_counter() - start)
        gt = page.lines
        pairs = match_boxes(pred, gt, threshold)
        score = DetectionScore(len(pairs), len(pred) - len(pairs), len(gt) - len(pairs), sum(v for *_, v in pairs))
        bilevel = int(np.count_nonzero(np.bincount(np.asarray(page.image).ravel(), minlength=256))) <= 2
        keys = ("all", "vocalised" if page.vocalised else "bare", "bilevel scan" if bilevel else "greyscale scan",
                _skew_bin(page.skew_deg))
        for key in keys:
            slices[key] += score
            slice_pages[key] += 1
        matched_p = {i for i, _, _ in pairs}
        matched_g = {j: v for _, j, v in pairs}
        for j, line in enumerate(gt):
            if j in matched_g:
                roles[line.role] += DetectionScore(tp=1, iou_sum=matched_g[j])
            else:
                roles[line.role] += DetectionScore(fn=1)
                causes[line.role][miss_kind(j, gt, pred)] += 1
        for i, box in enumerate(pred):
            if i in matched_p:
                continue
            overlaps = [(intersection(as_box(box), as_box(line)), line.role) for line in gt]
            best = max(overlaps, default=(0.0, "none"))
            roles[best[1] if best[0] > 0 else "none"] += DetectionScore(fp=1)
        for i, j, _ in pairs:
            predicted = _norm_role(getattr(pred[i], "role", None))
            if predicted is not None:
                role_pairs[(gt[j].role, predicted)] += 1
        per_page.append({"seed": page.seed, "font": page.font, "vocalised": page.vocalised, "bilevel": bilevel,
                         "skew_deg": page.skew_deg, "gt": len(gt), "pred": len(pred), **score.as_dict(),
                         "seconds": seg_times[-1]})
    with_role = sum(role_pairs.values())
    return {
        "config": {"pages": pages, "seed": seed, "dpi": dpi, "clean": clean, "iou": threshold,
                   "machine": platform.machine(), "python": platform.python_version()},
        "slices": {k: {"pages": slice_pages[k], **v.as_dict()} for k, v in slices.items()},
        "roles": {k: v.as_dict() for k, v in roles.items()},
        "unmatched_causes": {k: dict(v) for k, v in causes.items()},
        "role_accuracy": (sum(n for (g, p), n in role_pairs.items() if g == p) / with_role) if with_role else None,
        "role_confusion": {f"{g} -> {p}": n for (g, p), n in sorted(role_pairs.items())},
        "seconds_per_page": {"segment_mean": statistics.fmean(seg_times), "segment_median": statistics.median(seg_times),
                             "render_mean": statistics.fmean(render_times)},
        "per_page": per_page,
    }


def _print(result: dict) -> None:
    c = result["config"]
    print(f"Line detection on {c['pages']} synthetic pages (seeds {c['seed']}..{c['seed'] + c['pages'] - 1}, "
          f"{c['dpi']} dpi, {'clean' if c['clean'] else 'scan-degraded'}), one-to-one match at IoU >= {c['iou']}\n")
    print("| slice | pages | GT lines | predicted | TP | precision | recall | F1 | mean IoU (matched) |")
    print("|---|---|---|---|---|---|---|---|---|")
    order = ["all", "vocalised", "bare", "greyscale scan", "bilevel scan", "skew 0°", "skew (0°, 0.5°]", "skew (0.5°, 1°]", "skew (1°, 2°]"]
    for key in [k for k in order if k in result["slices"]]:
        s = result["slices"][key]
        print(f"| {key} | {s['pages']} | {s['tp'] + s['fn']} | {s['tp'] + s['fp']} | {s['tp']} | {s['precision']:.3f} "
              f"| {s['recall']:.3f} | {s['f1']:.3f} | {s['mean_iou']:.3f} |")
    print("\n| role | GT lines | TP | FP (by overlapped GT role) | precision | recall | F1 | mean IoU | "
          "unmatched: merged / loose / split / partial / missed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for role in [*ROLES, "none"]:
        if role not in result["roles"]:
            continue
        s = result["roles"][role]
        why = result["unmatched_causes"].get(role, {})
        causes = " / ".join(str(why.get(k, 0)) for k in CAUSES)
        if role == "none":
            print(f"| (no GT line) | 0 | 0 | {s['fp']} | - | - | - | - | - |")
        else:
            print(f"| {role} | {s['tp'] + s['fn']} | {s['tp']} | {s['fp']} | {s['precision']:.3f} | {s['recall']:.3f} "
                  f"| {s['f1']:.3f} | {s['mean_iou']:.3f} | {causes} |")
    acc = result["role_accuracy"]
    if acc is None:
        print("\nrole accuracy: n/a (predicted boxes carry no `role`)")
    else:
        print(f"\nrole accuracy on matched lines: {acc:.3f}  ({', '.join(f'{k}: {v}' for k, v in result['role_confusion'].items())})")
    t = result["seconds_per_page"]
    print(f"segment_lines: {t['segment_mean']:.3f} s/page mean, {t['segment_median']:.3f} median "
          f"(rendering {t['render_mean']:.3f} s/page, not counted)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dpi", type=int, default=300)
    ap.add_argument("--clean", action="store_true", help="no scan degradation (skew still applies)")
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--json", metavar="OUT", help="write the full results (with per-page rows) as JSON")
    args = ap.parse_args()
    result = run(args.pages, args.seed, args.dpi, args.clean, args.iou)
    _print(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, ensure_ascii=False, indent=1)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
