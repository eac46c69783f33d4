"""Scans -> page lines -> OCR'd pages -> one corpus: the library behind the corpus assets and `ocr-assets corpus`.

Layout under the data root (any Storage, local or S3): `scans/pages/<key>/` (page images + layout.json),
`corpus/scans/<key>/` (per page .txt, .jsonl, .page.xml, .alto.xml and scan.json), `corpus/` (corpus.txt,
corpus.jsonl, review.jsonl, quarantine.json, summary.json). Every file is written atomically; a file cut short
by a crash before that rule (or by a full disk) counts as missing, so the scan is read again.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict

from PIL import Image

from ocr_assets.corpus.inbox import InboxError, manifest_keys, read_manifest, read_scan, refused_url
from ocr_assets.corpus.scan_pages import scan_pages
from ocr_assets.models.base import Recognizer
from ocr_assets.pages.ocr import page_files, read_pages
from ocr_assets.pages.segment import LineBox, segment_lines
from ocr_assets.storage import Storage

PAGES_PER_BATCH = 32  # pages whose lines go through the recognizer together


def layout_url(storage: Storage, key: str, name: str = "layout.json") -> str:
    return storage.url("scans", "pages", key, name)


def corpus_url(storage: Storage, *parts: str) -> str:
    return storage.url("corpus", *parts)


def scan_output_url(storage: Storage, key: str, name: str = "scan.json") -> str:
    return corpus_url(storage, "scans", key, name)


def _read_json(storage: Storage, url: str):
    """A JSON file's value; None when missing or cut short."""
    if not storage.exists(url):
        return None
    try:
        return storage.read_json(url)
    except (ValueError, UnicodeDecodeError):
        return None


def _source_path(storage: Storage, key: str) -> str:
    meta = read_manifest(storage, key)
    return meta["path"] if meta else key


def segment_scan(storage: Storage, key: str) -> dict:
    """Pages of scan `key` as gray PNGs plus their line boxes, one page in memory at a time.

    Status `ok`; `quarantined` when the content cannot be read (never raised, the batch goes on); `unavailable`
    when the bytes could not be fetched now (file gone, storage error): the inbox sensor asks again once the
    file is back. A page that fails segmentation is kept as an empty page with its `error`.
    """
    layout = {"key": key, "path": _source_path(storage, key), "status": "ok", "reason": None, "pages": []}
    try:
        data, scan = read_scan(storage, key)
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
                buffer = io.BytesIO()
                page.save(buffer, format="PNG")
                storage.write_bytes(layout_url(storage, key, name), buffer.getvalue())
                layout["pages"].append({"page": index, "image": name, "width": page.width, "height": page.height,
                                        "lines": [asdict(b) for b in boxes],
                                        "error": error})
        except Exception as err:  # noqa: BLE001 - unreadable content is quarantined with its reason
            layout.update(status="quarantined", reason=f"{type(err).__name__}: {err}", pages=[])
    layout["segmented_at"] = time.time()
    storage.write_json(layout_url(storage, key), layout)
    return layout


def layout_status(storage: Storage, key: str) -> tuple[str | None, float]:
    """(status, time) of a scan's last segmentation (ok, quarantined, unavailable); (None, 0) before any or when
    its layout was cut short."""
    layout = _read_json(storage, layout_url(storage, key))
    if not isinstance(layout, dict):
        return None, 0.0
    return layout.get("status"), float(layout.get("segmented_at", 0.0))


def load_layout(storage: Storage, key: str) -> dict:
    """The layout of scan `key`; segmented again when missing or cut short by a crash."""
    layout = _read_json(storage, layout_url(storage, key))
    if not isinstance(layout, dict) or "pages" not in layout:
        layout = segment_scan(storage, key)
    return layout


def _page_name(layout: dict, page: dict) -> str:
    return layout["path"] if len(layout["pages"]) == 1 else f"{layout['path']}#page={page['page']}"


def ocr_scans(storage: Storage, keys: list[str], recognizer: Recognizer, batch_size: int = 64, progress=None,
              model: str = "shipped default") -> list[dict]:
    """OCR every page of the scans, lines of many pages per recognizer call; writes per-page outputs and
    returns one summary per scan."""
    layouts = [load_layout(storage, k) for k in keys]
    jobs = [(layout, page) for layout in layouts for page in layout["pages"]]
    stats = {layout["key"]: {"lines": 0, "chars": 0, "conf_sum": 0.0, "weight": 0} for layout in layouts}
    for start in range(0, len(jobs), PAGES_PER_BATCH):
        chunk = jobs[start : start + PAGES_PER_BATCH]
        pages = []
        for layout, page in chunk:
            with Image.open(io.BytesIO(storage.read_bytes(layout_url(storage, layout["key"], page["image"])))) as img:
                gray = img.convert("L")
            boxes = [LineBox(**{**b, "inner": tuple(b["inner"]) if b["inner"] else None}) for b in page["lines"]]
            pages.append((_page_name(layout, page), gray, boxes))
        for (layout, page), result in zip(chunk, read_pages(recognizer, pages, batch_size=batch_size)):
            stem = f"p{page['page']:04d}"
            for suffix, data in page_files(result, scan=layout["key"], source=layout["path"], page=page["page"],
                                           model=model).items():
                storage.write_bytes(scan_output_url(storage, layout["key"], stem + suffix), data)
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
        storage.write_json(scan_output_url(storage, layout["key"]), summary)  # written last: the scan is done
        summaries.append(summary)
    return summaries


def scan_done(storage: Storage, key: str) -> dict | None:
    """The summary of an OCR'd scan, or None when it is not done (missing, or scan.json cut short)."""
    summary = _read_json(storage, scan_output_url(storage, key))
    return summary if isinstance(summary, dict) and "status" in summary else None


def build_corpus(storage: Storage, keys: list[str], review_lines: int = 50) -> dict:
    """Aggregate the OCR'd scans into corpus.txt, corpus.jsonl, review.jsonl (least confident lines first) and
    quarantine.json; scans not OCR'd yet are listed as pending."""
    done, pending = [], []
    for key in keys:
        summary = scan_done(storage, key)
        (done.append(summary) if summary is not None else pending.append(key))
    done.sort(key=lambda s: s["path"])
    records, text_parts = [], []
    for scan in done:
        if scan["status"] != "ok":
            continue
        folder = corpus_url(storage, "scans", scan["key"])
        for name in storage.listdir(folder):
            if not (name.startswith("p") and name.endswith(".jsonl")):
                continue
            stem = name[: -len(".jsonl")]
            text = storage.read_text(scan_output_url(storage, scan["key"], name))
            records += [json.loads(line) for line in text.splitlines() if line]
            text_parts.append(f"=== {scan['path']} · page {int(stem[1:])} ===\n"
                              + storage.read_text(scan_output_url(storage, scan["key"], stem + ".txt")))
    storage.write_text(corpus_url(storage, "corpus.txt"), "\n".join(text_parts))
    storage.write_text(corpus_url(storage, "corpus.jsonl"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    review = sorted((r for r in records if r["text"] or r["confidence"] < 1), key=lambda r: r["confidence"])[:review_lines]
    storage.write_text(corpus_url(storage, "review.jsonl"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in review))
    quarantine = {
        "scans": [{"key": s["key"], "path": s["path"], "reason": s["reason"]} for s in done if s["status"] == "quarantined"],
        "unavailable": [{"key": s["key"], "path": s["path"], "reason": s["reason"]} for s in done if s["status"] == "unavailable"],
        "inbox_files": _read_json(storage, refused_url(storage)) or [],
    }
    storage.write_json(corpus_url(storage, "quarantine.json"), quarantine)
    confs = [r["confidence"] for r in records]
    summary = {"scans": len(done), "pending": len(pending), "pages": sum(s["pages"] for s in done),
               "lines": len(records), "chars": sum(len(r["text"]) for r in records),
               "mean_line_confidence": round(sum(confs) / len(confs), 4) if confs else None,
               "quarantined_scans": len(quarantine["scans"]), "unavailable_scans": len(quarantine["unavailable"]),
               "refused_files": len(quarantine["inbox_files"])}
    storage.write_json(corpus_url(storage, "summary.json"), summary)
    return {**summary, "dir": corpus_url(storage), "review": review}


def process_inbox(storage: Storage, url: str, recognizer: Recognizer, batch_size: int = 64, progress=None,
                  model: str = "shipped default") -> dict:
    """Without Dagster (`ocr-assets corpus`): take in the inbox's new scans, OCR them, rebuild the corpus.
    A scan counts as done once its scan.json exists, so a second call does nothing new."""
    from ocr_assets.corpus.inbox import list_scans, record_refusals, record_scan

    scans, refused, _ = list_scans(url)
    record_refusals(storage, refused)
    new = [s for s in scans if scan_done(storage, s.key) is None or layout_status(storage, s.key)[0] == "unavailable"]
    for scan in new:
        record_scan(storage, scan, url)
        segment_scan(storage, scan.key)
    if new:
        ocr_scans(storage, [s.key for s in new], recognizer, batch_size, progress, model=model)
    summary = build_corpus(storage, manifest_keys(storage))
    summary.pop("review")
    return {**summary, "new_scans": len(new)}
