"""Line detection scores: predicted line boxes against ground-truth boxes, one-to-one at IoU >= 0.5.

Boxes are (x0, y0, x1, y1) with x1, y1 exclusive: a `LineBox`, a synthetic `TruthLine`, any object with
x0..y1 attributes, a mapping with a "box" entry, or a plain 4-sequence. Matching is greedy by IoU, highest
first (the usual detection-benchmark rule); a pair below the threshold is never matched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]


def as_box(item) -> Box:
    """(x0, y0, x1, y1) of a box-like item."""
    if hasattr(item, "x0"):
        return (float(item.x0), float(item.y0), float(item.x1), float(item.y1))
    if isinstance(item, Mapping):
        return as_box(item["box"])
    if isinstance(item, Sequence) and len(item) == 4:
        x0, y0, x1, y1 = item
        return (float(x0), float(y0), float(x1), float(y1))
    raise TypeError(f"{item!r} is not a box: give x0/y0/x1/y1 attributes, a 'box' entry or a 4-sequence")


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersection(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def iou(a, b) -> float:
    """Intersection over union of two box-like items (0 when both are empty)."""
    a, b = as_box(a), as_box(b)
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(pred: Sequence, gt: Sequence, threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one (pred index, gt index, IoU) pairs with IoU >= threshold, taken greedily by IoU, best first."""
    pb, gb = [as_box(p) for p in pred], [as_box(g) for g in gt]
    candidates = []
    for i, p in enumerate(pb):
        for j, g in enumerate(gb):
            if p[0] < g[2] and g[0] < p[2] and p[1] < g[3] and g[1] < p[3]:  # overlap first: cheap reject
                value = iou(p, g)
                if value >= threshold:
                    candidates.append((value, i, j))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    used_p, used_g, pairs = set(), set(), []
    for value, i, j in candidates:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            pairs.append((i, j, value))
    return sorted(pairs, key=lambda p: p[1])


@dataclass
class DetectionScore:
    """Counts of one or many pages; precision, recall, F1 and mean IoU of matched pairs derive from them."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    @property
    def precision(self) -> float:
        predicted = self.tp + self.fp
        return self.tp / predicted if predicted else (1.0 if self.fn == 0 else 0.0)

    @property
    def recall(self) -> float:
        expected = self.tp + self.fn
        return self.tp / expected if expected else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def mean_iou(self) -> float:
        return self.iou_sum / self.tp if self.tp else 0.0

    def __add__(self, other: DetectionScore) -> DetectionScore:
        return DetectionScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                              self.iou_sum + other.iou_sum)

    def as_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "f1": self.f1, "mean_iou": self.mean_iou}


def score_lines(pred: Sequence, gt: Sequence, threshold: float = 0.5) -> DetectionScore:
    """Detection counts of one page: matched pairs are true positives, the rest false positives / negatives."""
    pairs = match_boxes(pred, gt, threshold)
    return DetectionScore(tp=len(pairs), fp=len(pred) - len(pairs), fn=len(gt) - len(pairs),
                          iou_sum=sum(v for _, _, v in pairs))


def miss_kind(index: int, gt: Sequence, pred: Sequence) -> str:
    """Why ground-truth line `gt[index]` went unmatched, judged from the predicted box covering most of it:
    'merged' (that box also holds most of another GT line: joined lines, e.g. a header with its page number),
    'loose' (it holds most of this line and no other, but is too large: padding, a rule or noise joined in),
    'split' (two or more boxes each hold a fifth or more of it), 'partial' (too little of it is covered)
    or 'missed' (no predicted box touches it)."""
    g = as_box(gt[index])
    g_area = area(g) or 1.0
    covers = [(intersection(as_box(p), g) / g_area, k) for k, p in enumerate(pred)]
    touching = [(c, k) for c, k in covers if c > 0]
    if not touching:
        return "missed"
    if sum(1 for c, _ in touching if c >= 0.2) >= 2:
        return "split"
    best, k = max(touching)
    if best < 0.5:
        return "partial"
    box = as_box(pred[k])
    for j, other in enumerate(gt):
        o = as_box(other)
        if j != index and area(o) and intersection(box, o) / area(o) >= 0.5:
            return "merged"
    return "loose"
