"""Drift of incoming scans: per-page image and reading statistics, a reference window against the latest window.

Per page (`page_signals`): image statistics (width, brightness, contrast, ink share, skew, blur, noise, line
height) and reading statistics (mean and 10th percentile of line confidence, empty or quarantined page,
characters per pixel of line height) plus the page's character counts. Per scan they are kept at
`monitoring/signals/<key>.json`.

The reference window is the first `reference_pages` pages read (frozen at `monitoring/reference.json`, reset
with `reset_reference`); the current window is the latest `window_pages` pages after it. Each statistic is
tested by Evidently's DataDriftPreset (two-sample K-S below 1,000 rows); the characters by the Jensen-Shannon
distance of the two windows' character distributions. Severity: ERROR or WARN by the share of drifted
statistics and the distance (MonitoringSettings); the report is Evidently's HTML (a plot per statistic) plus a
PNG of the two windows side by side, under `monitoring/drift/<stamp>/`.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from ocr_assets.settings import MonitoringSettings
from ocr_assets.storage import Storage

IMAGE_STATS = ("width_px", "brightness", "contrast", "ink_share", "skew_deg", "sharpness", "noise", "line_height")
READING_STATS = ("conf_mean", "conf_p10", "empty", "quarantined", "chars_per_height")
STATS = IMAGE_STATS + READING_STATS
WARN, ERROR = "WARN", "ERROR"


# --- per page ------------------------------------------------------------------------------------------------

def image_stats(gray: Image.Image, boxes: list[dict]) -> dict:
    """Image statistics of a gray page and its line boxes (layout.json's `lines`)."""
    from scipy import ndimage

    from ocr_assets.pages.segment import otsu_threshold

    a = np.asarray(gray.convert("L"), dtype=np.float32)
    small = a[:: max(1, a.shape[0] // 800), :: max(1, a.shape[1] // 800)]  # statistics need no more pixels
    threshold = otsu_threshold(small.astype(np.uint8))
    ink = small < threshold
    # Contrast: paper level minus ink level (medians of the two Otsu classes), 0..1.
    paper_level = float(np.median(small[~ink])) if (~ink).any() else 255.0
    ink_level = float(np.median(small[ink])) if ink.any() else paper_level
    spread = max(paper_level - ink_level, 1.0)
    contrast = spread / 255.0
    # Sharpness: variance of the Laplacian relative to the contrast (sharp edges score high, blurred ones low).
    lap = ndimage.laplace(small)
    blur = float(lap.var() / spread**2)
    # Noise: what a 3x3 median takes away from the paper (the pixels away from ink).
    paper = ~ndimage.binary_dilation(ink, iterations=2)
    residual = small - ndimage.median_filter(small, size=3)
    noise = float(np.abs(residual[paper]).mean() / 255.0) if paper.any() else 0.0
    heights = [b["y1"] - b["y0"] for b in boxes]
    return {
        "width_px": float(gray.width),
        "brightness": float(small.mean() / 255.0),
        "contrast": contrast,
        "ink_share": float(ink.mean()),
        "skew_deg": float(abs(boxes[0].get("skew", 0.0))) if boxes else 0.0,
        "sharpness": blur,
        "noise": noise,
        "line_height": float(np.median(heights)) if heights else math.nan,
    }


def reading_stats(records: list[dict], boxes: list[dict]) -> dict:
    """Reading statistics of one page's OCR'd lines (the p000N.jsonl records)."""
    confs = [float(r["confidence"]) for r in records]
    texts = [r["text"] for r in records]
    per_height = [len(t) / max(b["y1"] - b["y0"], 1) for t, b in zip(texts, boxes) if t]
    return {
        "conf_mean": float(np.mean(confs)) if confs else math.nan,
        "conf_p10": float(np.percentile(confs, 10)) if confs else math.nan,
        "empty": float(not any(texts)),
        "quarantined": 0.0,
        "chars_per_height": float(np.mean(per_height)) if per_height else math.nan,
    }


def signals_url(storage: Storage, key: str) -> str:
    return storage.url("monitoring", "signals", f"{key}.json")


def scan_signals(storage: Storage, key: str) -> dict | None:
    """Statistics of every page of an OCR'd scan; None while the scan is not OCR'd yet."""
    from ocr_assets.corpus.build import layout_url, load_layout, scan_done, scan_output_url

    summary = scan_done(storage, key)
    if summary is None:
        return None
    layout = load_layout(storage, key)
    pages = []
    if summary["status"] != "ok" or not layout["pages"]:
        nan = {s: math.nan for s in STATS}
        pages.append({"page": 1, **nan, "empty": 1.0, "quarantined": 1.0, "chars": {}})
    for page in layout["pages"] if summary["status"] == "ok" else []:
        with Image.open(io.BytesIO(storage.read_bytes(layout_url(storage, key, page["image"])))) as img:
            gray = img.convert("L")
        stem = f"p{page['page']:04d}"
        url = scan_output_url(storage, key, stem + ".jsonl")
        records = [json.loads(l) for l in storage.read_text(url).splitlines() if l] if storage.exists(url) else []
        row = {"page": page["page"], **image_stats(gray, page["lines"]), **reading_stats(records, page["lines"])}
        row["quarantined"] = float(bool(page.get("error")))
        row["chars"] = dict(Counter(ch for r in records for ch in r["text"] if not ch.isspace()))
        pages.append(row)
    return {"key": key, "path": summary["path"], "model": summary.get("model"),
            "arrived": float(layout.get("segmented_at", 0.0)), "pages": pages}


def write_scan_signals(storage: Storage, key: str) -> dict | None:
    signals = scan_signals(storage, key)
    if signals is not None:
        storage.write_json(signals_url(storage, key), _finite(signals))
    return signals


def _finite(value):
    """NaN as null (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def load_signals(storage: Storage, keys: list[str] | None = None, compute_missing: bool = True) -> list[dict]:
    """Signals of the given scans (default: every scan with signals), oldest arrival first; computed for
    OCR'd scans that have none yet when `compute_missing`."""
    folder = storage.url("monitoring", "signals")
    if keys is None:
        from ocr_assets.corpus.inbox import manifest_keys

        keys = sorted(set(manifest_keys(storage)) | {n[:-5] for n in storage.listdir(folder) if n.endswith(".json")})
    out = []
    for key in keys:
        url = signals_url(storage, key)
        signals = None
        if storage.exists(url):
            try:
                signals = storage.read_json(url)
            except ValueError:
                signals = None
        if signals is None and compute_missing:
            signals = write_scan_signals(storage, key)
        if signals is not None:
            out.append(signals)
    return sorted(out, key=lambda s: (s["arrived"], s["key"]))


# --- windows -------------------------------------------------------------------------------------------------

def reference_url(storage: Storage) -> str:
    return storage.url("monitoring", "reference.json")


def reset_reference(storage: Storage) -> None:
    """Forget the reference window; the next pages to arrive form a new one (after a new champion or a new book)."""
    if storage.exists(reference_url(storage)):
        storage.delete(reference_url(storage))


def _take_pages(scans: list[dict], pages: int) -> list[dict]:
    taken, count = [], 0
    for s in scans:
        if count >= pages:
            break
        taken.append(s)
        count += len(s["pages"])
    return taken


def windows(storage: Storage, signals: list[dict], settings: MonitoringSettings) -> tuple[list[dict], list[dict]]:
    """(reference scans, current scans). The reference is frozen once `reference_pages` pages have arrived."""
    url = reference_url(storage)
    by_key = {s["key"]: s for s in signals}
    reference_keys = None
    if storage.exists(url):
        try:
            reference_keys = storage.read_json(url)["keys"]
        except (ValueError, KeyError, TypeError):
            reference_keys = None
    if reference_keys is None:
        taken = _take_pages(signals, settings.reference_pages)
        if sum(len(s["pages"]) for s in taken) < settings.reference_pages:
            return taken, []  # still filling the reference window
        reference_keys = [s["key"] for s in taken]
        storage.write_json(url, {"keys": reference_keys, "frozen_at": time.time(),
                                 "pages": sum(len(s["pages"]) for s in taken)})
    reference = [by_key[k] for k in reference_keys if k in by_key]
    rest = [s for s in signals if s["key"] not in set(reference_keys)]
    current = list(reversed(_take_pages(list(reversed(rest)), settings.window_pages)))
    return reference, current


# --- comparison ----------------------------------------------------------------------------------------------

@dataclass
class DriftResult:
    severity: str | None  # None (no drift), WARN or ERROR
    reason: str
    reference_pages: int
    current_pages: int
    share_drifted: float = 0.0
    p_values: dict = field(default_factory=dict)  # statistic -> p-value (K-S)
    drifted: list = field(default_factory=list)  # statistics below the p-value threshold
    char_js: float = 0.0
    means: dict = field(default_factory=dict)  # statistic -> [reference mean, current mean]
    drifted_scans: list = field(default_factory=list)  # current scans with a page outside the reference range
    current_scans: list = field(default_factory=list)
    reference_scans: list = field(default_factory=list)
    report_html: str | None = None
    plot_png: str | None = None
    stamp: str = ""

    @property
    def passed(self) -> bool:
        return self.severity is None

    def to_dict(self) -> dict:
        return _finite(asdict(self))


def _frame(scans: list[dict]):
    import pandas as pd

    rows = [{s_: (math.nan if p.get(s_) is None else p[s_]) for s_ in STATS} for s in scans for p in s["pages"]]
    return pd.DataFrame(rows, columns=list(STATS), dtype=float)


def _chars(scans: list[dict]) -> Counter:
    total = Counter()
    for s in scans:
        for p in s["pages"]:
            total.update(p.get("chars") or {})
    return total


def char_distance(reference: Counter, current: Counter) -> float:
    """Jensen-Shannon distance (base 2, 0..1) of two character distributions; 0 when either is empty."""
    from scipy.spatial.distance import jensenshannon

    alphabet = sorted(set(reference) | set(current))
    if not alphabet or not sum(reference.values()) or not sum(current.values()):
        return 0.0
    value = jensenshannon([reference[c] for c in alphabet], [current[c] for c in alphabet], base=2)
    return 0.0 if math.isnan(value) else float(value)


def evidently_drift(ref, cur, p_value: float, drift_share: float = 0.5):
    """Evidently's DataDriftPreset over the statistics present in both windows: (snapshot, {stat: p-value})."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no usage telemetry from Evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # Statistics with values in both windows; one constant and equal in both says nothing (and K-S divides by 0).
    columns = [c for c in STATS if ref[c].notna().sum() >= 2 and cur[c].notna().sum() >= 2
               and not (ref[c].nunique() == 1 and cur[c].nunique() == 1 and ref[c].iloc[0] == cur[c].iloc[0])]
    if not columns:
        return None, {}
    definition = DataDefinition(numerical_columns=columns)
    report = Report([DataDriftPreset(columns=columns, num_method="ks", num_threshold=p_value, drift_share=drift_share)])
    snapshot = report.run(current_data=Dataset.from_pandas(cur[columns], data_definition=definition),
                          reference_data=Dataset.from_pandas(ref[columns], data_definition=definition))
    p_values = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift") and config.get("column") in columns:
            value = metric["value"]
            p_values[config["column"]] = float(value) if value is not None else math.nan
    return snapshot, p_values


def compare(reference: list[dict], current: list[dict], settings: MonitoringSettings) -> DriftResult:
    """Test the current window against the reference window; severity by MonitoringSettings."""
    ref, cur = _frame(reference), _frame(current)
    result = DriftResult(None, "", len(ref), len(cur), current_scans=[s["key"] for s in current],
                         reference_scans=[s["key"] for s in reference])
    if len(ref) < settings.min_window_pages or len(cur) < settings.min_window_pages:
        result.reason = (f"not enough pages to compare: reference {len(ref)}, current {len(cur)} "
                         f"(need {settings.min_window_pages} each)")
        return result
    snapshot, p_values = evidently_drift(ref, cur, settings.p_value, settings.error_share)
    result.p_values = p_values
    result.drifted = sorted(s for s, p in p_values.items() if p < settings.p_value)
    result.share_drifted = len(result.drifted) / len(p_values) if p_values else 0.0
    result.char_js = char_distance(_chars(reference), _chars(current))
    result.means = {s: [_mean(ref[s]), _mean(cur[s])] for s in STATS}
    share_level = (ERROR if result.share_drifted >= settings.error_share else
                   WARN if result.share_drifted >= settings.warn_share else None)
    js_level = (ERROR if result.char_js >= settings.char_js_error else
                WARN if result.char_js >= settings.char_js_warn else None)
    levels = [lvl for lvl in (share_level, js_level) if lvl]
    result.severity = ERROR if ERROR in levels else (WARN if levels else None)
    result.reason = (f"{len(result.drifted)}/{len(p_values)} statistics drifted "
                     f"({', '.join(result.drifted) or 'none'}); character JS distance {result.char_js:.3f}")
    # Scans to review first (only when there is drift): a page outside the reference range on a drifted statistic.
    for s in current if result.severity else []:
        frame = _frame([s])
        if any(((frame[c] < ref[c].min()) | (frame[c] > ref[c].max())).any() for c in result.drifted):
            result.drifted_scans.append(s["key"])
    result._snapshot = snapshot  # type: ignore[attr-defined]  # kept for write_report, not serialised
    return result


def _mean(series) -> float | None:
    value = series.mean()
    return None if math.isnan(value) else round(float(value), 5)


# --- report --------------------------------------------------------------------------------------------------

def plot_windows(reference: list[dict], current: list[dict], result: DriftResult) -> bytes:
    """PNG: one panel per statistic, the reference and current windows' values as box plots (drifted in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, cur = _frame(reference), _frame(current)
    cols = 5
    rows = math.ceil(len(STATS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows))
    for ax, stat in zip(axes.flat, STATS):
        data = [ref[stat].dropna().to_numpy(), cur[stat].dropna().to_numpy()]
        if all(len(d) for d in data):
            ax.boxplot(data, tick_labels=["reference", "current"], widths=0.6)
        drifted = stat in result.drifted
        p = result.p_values.get(stat)
        ax.set_title(f"{stat}" + (f"\np={p:.3g}" if p is not None else ""), fontsize=9,
                     color="#c0392b" if drifted else "black", fontweight="bold" if drifted else "normal")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(STATS):]:
        ax.axis("off")
    fig.suptitle(f"drift: {result.severity or 'none'} · {len(result.drifted)}/{len(result.p_values)} statistics · "
                 f"character JS {result.char_js:.3f}", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_report(storage: Storage, reference: list[dict], current: list[dict], result: DriftResult) -> DriftResult:
    """Evidently's HTML report with our summary on top, the PNG, and result.json under monitoring/drift/<stamp>/;
    `monitoring/drift/latest.json` points at the newest."""
    result.stamp = result.stamp or time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 10**6:06d}"
    folder = ("monitoring", "drift", result.stamp)
    png = plot_windows(reference, current, result) if result.p_values else None
    if png is not None:
        result.plot_png = storage.write_bytes(storage.url(*folder, "windows.png"), png)
    snapshot = getattr(result, "_snapshot", None)
    if snapshot is not None:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "report.html"
            snapshot.save_html(str(path))
            html = path.read_text(encoding="utf-8")
        result.report_html = storage.write_text(storage.url(*folder, "report.html"), _with_summary(html, result, png))
    record = result.to_dict()
    storage.write_json(storage.url(*folder, "result.json"), record)
    storage.write_json(storage.url("monitoring", "drift", "latest.json"), record)
    return result


def _with_summary(html: str, result: DriftResult, png: bytes | None) -> str:
    """Our verdict and the PNG above Evidently's report (one self-contained file)."""
    import base64
    import html as h

    colour = {"ERROR": "#c0392b", "WARN": "#d68910"}.get(result.severity or "", "#1e8449")
    rows = "".join(f"<tr><td>{h.escape(s)}</td><td>{result.means.get(s, [None, None])[0]}</td>"
                   f"<td>{result.means.get(s, [None, None])[1]}</td><td>{result.p_values.get(s, float('nan')):.3g}</td>"
                   f"<td>{'drift' if s in result.drifted else ''}</td></tr>" for s in STATS)
    img = f'<img alt="windows" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
    banner = (f'<div style="font-family:sans-serif;padding:12px;border-left:8px solid {colour}">'
              f'<h2 style="color:{colour}">Scan drift: {result.severity or "no drift"}</h2>'
              f"<p>{h.escape(result.reason)}</p><p>reference {result.reference_pages} pages · current "
              f"{result.current_pages} pages · drifted scans: {h.escape(', '.join(result.drifted_scans[:20]) or 'none')}</p>"
              f"<table border=1 cellpadding=3><tr><th>statistic</th><th>reference mean</th><th>current mean</th>"
              f"<th>p (K-S)</th><th></th></tr>{rows}</table>{img}</div><hr>")
    marker = "<body>"
    at = html.find(marker)
    return html[: at + len(marker)] + banner + html[at + len(marker):] if at >= 0 else banner + html


def detect_drift(storage: Storage, settings: MonitoringSettings, keys: list[str] | None = None) -> DriftResult:
    """Signals of every OCR'd scan (computed where missing), the two windows, the comparison and its report."""
    signals = load_signals(storage, keys)
    reference, current = windows(storage, signals, settings)
    result = compare(reference, current, settings)
    return write_report(storage, reference, current, result)


def latest_drift(storage: Storage) -> dict | None:
    url = storage.url("monitoring", "drift", "latest.json")
    if not storage.exists(url):
        return None
    try:
        return storage.read_json(url)
    except ValueError:
        return None
