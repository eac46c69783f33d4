"""Scans → page lines → OCR'd pages → one corpus: the library behind the corpus assets.

Layout under the data root: `scans/pages/<key>/` (page images + layout.json), `corpus/scans/<key>/`
(per page .txt, .jsonl, .page.xml, .alto.xml and scan.json), `corpus/` (corpus.txt, corpus.jsonl, review.jsonl,
quarantine.json, summary.json).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from ocr_assets.models.base import Recognizer
from ocr_assets.pages.ocr import read_pages, write_page
from ocr_assets.pages.segment import LineBox, segment_lines
from ocr_assets.corpus.inbox import InboxError, manifest_dir, read_scan
from ocr_assets.corpus.scan_pages import scan_pages
from ocr_assets.settings import data_root

PAGES_PER_BATCH = 32  # pages whose lines go through the recognizer together


def layout_dir(key: str) -> Path:
    return data_root() / "scans" / "pages" / key


def corpus_dir() -> Path:
    return data_root() / "corpus"


def scan_output_dir(key: str) -> Path:
    return corpus_dir() / "scans" / key


def _source_path(key: str) -> str:
    meta = manifest_dir() / f"{key}.json"
    return json.loads(meta.read_text(encoding="utf-8"))["path"] if meta.exists() else key


def segment_scan(key: str) -> dict:
    """Pages of scan `key` as gray PNGs plus their line boxes, one page in memory at a time.

    Status `ok`; `quarantined` when the content cannot be read (never raised, the batch goes on); `unavailable`
    when the bytes could not be fetched now (file gone, storage error): the inbox sensor asks again once the
    file is back. A page that fails segmentation is kept as an empty page with its `error`.
    """
    out = layout_dir(key)
    out.mkdir(parents=True, exist_ok=True)
    layout = {"key": key, "path": _source_path(key), "status": "ok", "reason": None, "pages": []}
    try:
        data, scan = read_scan(key)
    except (InboxError, OSError) as err:
        layout.update(status="unavailable", reason=f"{type(err).__name__}: {err}")
    else:
        layout["path"] = scan.path
        try:
            for index, page in enumerate(scan_pages(data), 1):
                name, error = f"p{index:04d}.png", None
                try:
                    boxes = segment_lines(page)
                except Exception as err:  # noqa: BLE001 - one odd page keeps its place, empty, with the reason
                    boxes, error = [], f"segmentation failed: {type(err).__name__}: {err}"
                page.save(out / name)
                layout["pages"].append({"page": index, "image": name, "width": page.width, "height": page.height,
                                        "lines": [asdict(b) for b in boxes],
                                        "error": error})
        except Exception as err:  # noqa: BLE001 - unreadable content is quarantined with its reason
            layout.update(status="quarantined", reason=f"{type(err).__name__}: {err}", pages=[])
    (out / "layout.json").write_text(json.dumps(layout, ensure_ascii=False), encoding="utf-8")
    return layout


def layout_status(key: str) -> tuple[str | None, float]:
    """(status, layout file mtime) of a scan's last segmentation, (None, 0) before any."""
    path = layout_dir(key) / "layout.json"
    if not path.exists():
        return None, 0.0
    return json.loads(path.read_text(encoding="utf-8"))["status"], path.stat().st_mtime


def load_layout(key: str) -> dict:
    path = layout_dir(key) / "layout.json"
    if not path.exists():
        raise FileNotFoundError(f"scan {key!r} has no layout at {path}: materialize page_lines for it first")
    return json.loads(path.read_text(encoding="utf-8"))


def _page_name(layout: dict, page: dict) -> str:
    return layout["path"] if len(layout["pages"]) == 1 else f"{layout['path']}#page={page['page']}"


def ocr_scans(keys: list[str], recognizer: Recognizer, batch_size: int = 64, progress=None,
              model: str = "shipped default") -> list[dict]:
    """OCR every page of the scans, lines of many pages per recognizer call; writes per-page outputs and
    returns one summary per scan."""
    layouts = [load_layout(k) for k in keys]
    jobs = [(layout, page) for layout in layouts for page in layout["pages"]]
    stats = {layout["key"]: {"lines": 0, "chars": 0, "conf_sum": 0.0, "weight": 0} for layout in layouts}
    for start in range(0, len(jobs), PAGES_PER_BATCH):
        chunk = jobs[start : start + PAGES_PER_BATCH]
        pages = []
        for layout, page in chunk:
            with Image.open(layout_dir(layout["key"]) / page["image"]) as img:
                gray = img.convert("L")
            boxes = [LineBox(**{**b, "inner": tuple(b["inner"]) if b["inner"] else None}) for b in page["lines"]]
            pages.append((_page_name(layout, page), gray, boxes))
        for (layout, page), result in zip(chunk, read_pages(recognizer, pages, batch_size=batch_size)):
            write_page(result, scan_output_dir(layout["key"]), f"p{page['page']:04d}",
                       scan=layout["key"], source=layout["path"], page=page["page"], model=model)
            s = stats[layout["key"]]
            for line in result.lines:
                s["lines"] += 1
                s["chars"] += len(line.text)
                s["conf_sum"] += line.confidence * max(len(line.text), 1)  # character-weighted
                s["weight"] += max(len(line.text), 1)
        if progress:
            progress(min(start + PAGES_PER_BATCH, len(jobs)), len(jobs))
    summaries = []
    for layout in layouts:
        s = stats[layout["key"]]
        weight = s["weight"]
        summary = {"key": layout["key"], "path": layout["path"], "status": layout["status"],
                   "reason": layout["reason"], "pages": len(layout["pages"]), "lines": s["lines"],
                   "chars": s["chars"], "mean_confidence": round(s["conf_sum"] / weight, 4) if weight else None,
                   "model": model, "page_errors": {p["page"]: p["error"] for p in layout["pages"] if p.get("error")}}
        out = scan_output_dir(layout["key"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "scan.json").write_text(json.dumps(summary, ensure_ascii=False), encoding="utf-8")
        summaries.append(summary)
    return summaries


def build_corpus(keys: list[str], review_lines: int = 50) -> dict:
    """Aggregate the OCR'd scans into corpus.txt, corpus.jsonl, review.jsonl (least confident lines first) and
    quarantine.json; scans not OCR'd yet are listed as pending."""
    out = corpus_dir()
    out.mkdir(parents=True, exist_ok=True)
    done, pending = [], []
    for key in keys:
        path = scan_output_dir(key) / "scan.json"
        (done.append(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else pending.append(key))
    done.sort(key=lambda s: s["path"])
    records, text_parts = [], []
    for scan in done:
        if scan["status"] != "ok":
            continue
        folder = scan_output_dir(scan["key"])
        for page_file in sorted(folder.glob("p*.jsonl")):
            rows = [json.loads(line) for line in page_file.read_text(encoding="utf-8").splitlines() if line]
            records += rows
            page_no = int(page_file.stem[1:])
            text_parts.append(f"=== {scan['path']} · page {page_no} ===\n"
                              + (folder / f"{page_file.stem}.txt").read_text(encoding="utf-8"))
    (out / "corpus.txt").write_text("\n".join(text_parts), encoding="utf-8")
    (out / "corpus.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    review = sorted((r for r in records if r["text"] or r["confidence"] < 1), key=lambda r: r["confidence"])[:review_lines]
    (out / "review.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in review), encoding="utf-8")
    refused_path = data_root() / "scans" / "refused.json"
    quarantine = {
        "scans": [{"key": s["key"], "path": s["path"], "reason": s["reason"]} for s in done if s["status"] == "quarantined"],
        "unavailable": [{"key": s["key"], "path": s["path"], "reason": s["reason"]} for s in done if s["status"] == "unavailable"],
        "inbox_files": json.loads(refused_path.read_text(encoding="utf-8")) if refused_path.exists() else [],
    }
    (out / "quarantine.json").write_text(json.dumps(quarantine, ensure_ascii=False, indent=1), encoding="utf-8")
    confs = [r["confidence"] for r in records]
    summary = {"scans": len(done), "pending": len(pending), "pages": sum(s["pages"] for s in done),
               "lines": len(records), "chars": sum(len(r["text"]) for r in records),
               "mean_line_confidence": round(sum(confs) / len(confs), 4) if confs else None,
               "quarantined_scans": len(quarantine["scans"]), "unavailable_scans": len(quarantine["unavailable"]),
               "refused_files": len(quarantine["inbox_files"])}
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return {**summary, "dir": str(out), "review": review}


def process_inbox(url: str, recognizer: Recognizer, batch_size: int = 64, progress=None,
                  model: str = "shipped default") -> dict:
    """Without Dagster (`ocr-assets corpus`): take in the inbox's new scans, OCR them, rebuild the corpus.
    A scan counts as done once its scan.json exists, so a second call does nothing new."""
    from ocr_assets.corpus.inbox import list_scans, record_refusals, record_scan

    scans, refused, _ = list_scans(url)
    record_refusals(refused)
    new = [s for s in scans if not (scan_output_dir(s.key) / "scan.json").exists() or layout_status(s.key)[0] == "unavailable"]
    for scan in new:
        record_scan(scan, url)
        segment_scan(scan.key)
    if new:
        ocr_scans([s.key for s in new], recognizer, batch_size, progress, model=model)
    keys = sorted(p.stem for p in manifest_dir().glob("*.json"))
    summary = build_corpus(keys)
    summary.pop("review")
    return {**summary, "new_scans": len(new)}
