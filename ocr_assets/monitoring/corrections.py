"""People's corrections of OCR'd lines: import, match, validate, keep.

Corrections arrive as (a) PAGE 2019 or ALTO 4 XML of OCR'd pages, corrected in eScriptorium or Transkribus and
exported again, (b) JSONL of `{"line_id": ..., "text": ...}`, (c) the review page (`review_app`), which writes
(b). Files dropped in `corrections/inbox/` under the data root are imported by the corrections sensor; `ocr-assets
corrections import PATH` imports directly. Each file is imported once (by content hash).

An OCR'd line is `<scan key>/p<page:04d>/l<line>` (`line_id`); an XML line is matched by its page's image name
(PAGE `imageFilename`, ALTO `fileName`, as written by the corpus) and its `l<N>` id. A match becomes a line pair
(the line's crop from the scan's page image, the corrected text) and goes through the same validation as any
ground truth (`ocr_assets.data.validation`). Quarantined with a reason, never raised: no matching OCR'd line,
empty or non-Arabic (Latin-only) text, XML that is neither PAGE nor ALTO, a line id given twice with different
text. Accepted lines accumulate in `corrections/lines.parquet`; the quarantine in `corrections/quarantine.jsonl`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass, field

import pyarrow as pa
from PIL import Image

from ocr_assets.storage import Storage

LINE_ID = re.compile(r"^(?P<key>[^/]+)/p(?P<page>\d{4})/l(?P<line>\d+)$")
XML_LINE = re.compile(r"^l(\d+)$")
SUFFIXES = (".jsonl", ".xml")


def line_id(key: str, page: int, line: int) -> str:
    return f"{key}/p{int(page):04d}/l{int(line)}"


def url(storage: Storage, *parts: str) -> str:
    return storage.url("corrections", *parts)


def inbox_url(storage: Storage) -> str:
    return url(storage, "inbox")


@dataclass
class ImportReport:
    files: int = 0
    skipped_files: int = 0  # imported before (same bytes)
    accepted: int = 0
    quarantined: int = 0
    reasons: dict = field(default_factory=dict)  # reason kind -> count
    total_accepted: int = 0  # in corrections/lines.parquet after this import

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# --- the OCR'd lines -------------------------------------------------------------------------------------------

def ocr_lines(storage: Storage) -> tuple[dict[str, dict], dict[tuple[str, int], str]]:
    """Every OCR'd line of the corpus as it stands: {line_id: record} and {(page image name, line): line_id}."""
    from ocr_assets.corpus.build import corpus_url, scan_done

    by_id, by_image = {}, {}
    folder = corpus_url(storage, "scans")
    for key in storage.listdir(folder):
        summary = scan_done(storage, key)
        if summary is None or summary["status"] != "ok":
            continue
        for name in storage.listdir(corpus_url(storage, "scans", key)):
            if not (name.startswith("p") and name.endswith(".jsonl")):
                continue
            for text in storage.read_text(corpus_url(storage, "scans", key, name)).splitlines():
                if not text:
                    continue
                record = json.loads(text)
                lid = line_id(key, record["page"], record["line"])
                record["line_id"] = lid
                record["model"] = summary.get("model")
                by_id[lid] = record
                by_image[(record["page_image"], int(record["line"]))] = lid
    return by_id, by_image


def line_image(storage: Storage, lid: str) -> bytes:
    """PNG of an OCR'd line, cut from its page image exactly as the recognizer saw it."""
    from ocr_assets.corpus.build import layout_url, load_layout
    from ocr_assets.pages.segment import LineBox

    m = LINE_ID.match(lid)
    if not m:
        raise KeyError(lid)
    key, page, line = m["key"], int(m["page"]), int(m["line"])
    layout = load_layout(storage, key)
    entry = next(p for p in layout["pages"] if p["page"] == page)
    b = entry["lines"][line - 1]
    box = LineBox(**{**b, "inner": tuple(b["inner"]) if b["inner"] else None})
    with Image.open(io.BytesIO(storage.read_bytes(layout_url(storage, key, entry["image"])))) as img:
        crop = box.crop(img.convert("L"))
    buf = io.BytesIO()
    crop.save(buf, format="PNG")
    return buf.getvalue()


# --- parsing -----------------------------------------------------------------------------------------------------

def parse_jsonl(data: bytes, origin: str) -> tuple[list[dict], list[dict]]:
    """({line_id, text, origin}, refusals) of a JSONL file of corrections."""
    items, refused = [], []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return [], [{"origin": origin, "line_id": None, "text": None,
                     "reason": f"not a corrections file: not UTF-8 ({err.reason} at byte {err.start})"}]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{origin}:{number}"
        try:
            row = json.loads(line)
        except ValueError as err:
            refused.append({"origin": where, "line_id": None, "text": None, "reason": f"not a JSON line ({err})"})
            continue
        if not isinstance(row, dict) or not isinstance(row.get("line_id"), str) or not isinstance(row.get("text"), str):
            refused.append({"origin": where, "line_id": str(row.get("line_id")) if isinstance(row, dict) else None,
                            "text": None, "reason": 'not a correction: each line needs {"line_id": str, "text": str}'})
            continue
        items.append({"line_id": row["line_id"], "text": row["text"], "origin": where})
    return items, refused


def parse_xml(data: bytes, origin: str, by_image: dict[tuple[str, int], str]) -> tuple[list[dict], list[dict]]:
    """Corrections from a PAGE or ALTO file: each TextLine matched to an OCR'd line by page image and `l<N>` id."""
    from lxml import etree

    from ocr_assets.data.xml_sources import _PARSER, _alto_lines, _local, _page_lines

    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as err:
        return [], [{"origin": origin, "line_id": None, "text": None, "reason": f"not XML ({err})"}]
    kind = _local(root.tag)
    if kind == "PcGts":
        image, lines = _page_lines(root)
    elif kind.lower() == "alto":
        image, lines, _ = _alto_lines(root)
    else:
        return [], [{"origin": origin, "line_id": None, "text": None,
                     "reason": f"not PAGE or ALTO XML: the root element is <{kind}>, not <PcGts> or <alto>"}]
    items, refused = [], []
    for number, (xml_id, _points, text) in enumerate(lines, 1):
        where = f"{origin}#{xml_id}"
        m = XML_LINE.match(xml_id or "")
        index = int(m.group(1)) if m else number
        lid = by_image.get((image or "", index))
        if lid is None:
            refused.append({"origin": where, "line_id": f"{image}#{xml_id}", "text": text,
                            "reason": f"no matching line: no OCR'd page {image!r} with line {index} in the corpus"})
            continue
        items.append({"line_id": lid, "text": text or "", "origin": where})
    return items, refused


# --- import ------------------------------------------------------------------------------------------------------

def corrections_table(storage: Storage) -> pa.Table | None:
    target = url(storage, "lines.parquet")
    return storage.read_table(target) if storage.exists(target) else None


def accepted_count(storage: Storage) -> int:
    table = corrections_table(storage)
    return 0 if table is None else table.num_rows


def read_quarantine(storage: Storage) -> list[dict]:
    target = url(storage, "quarantine.jsonl")
    if not storage.exists(target):
        return []
    return [json.loads(l) for l in storage.read_text(target).splitlines() if l]


def _imported(storage: Storage) -> dict:
    target = url(storage, "imported.json")
    if not storage.exists(target):
        return {}
    try:
        return storage.read_json(target)
    except ValueError:
        return {}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def pending_inbox(storage: Storage) -> list[tuple[str, str]]:
    """(name, digest) of inbox files not imported yet."""
    done = set(_imported(storage).values())
    out = []
    for name in sorted(storage.listdir(inbox_url(storage))):
        if name.startswith(".") or ".tmp" in name:
            continue
        d = digest(storage.read_bytes(url(storage, "inbox", name)))
        if d not in done:
            out.append((name, d))
    return out


def import_files(storage: Storage, files: list[tuple[str, bytes]], log=None) -> ImportReport:
    """Import corrections files (name, bytes): match, validate, quarantine, append to corrections/lines.parquet.
    Never raises for bad content; files imported before (same bytes) are skipped."""
    from ocr_assets.data.records import RawLine
    from ocr_assets.data.validation import reason_kind, validate_lines

    log = log or (lambda message: None)
    report = ImportReport()
    imported = _imported(storage)
    done = set(imported.values())
    by_id, by_image = ocr_lines(storage)
    items, refused = [], []
    new_files = []
    for name, data in files:
        d = digest(data)
        if d in done:
            report.skipped_files += 1
            continue
        done.add(d)
        new_files.append((name, d))
        report.files += 1
        lowered = name.lower()
        if lowered.endswith(".jsonl") or lowered.endswith(".json"):
            got, bad = parse_jsonl(data, name)
        elif lowered.endswith(".xml"):
            got, bad = parse_xml(data, name, by_image)
        else:
            got, bad = [], [{"origin": name, "line_id": None, "text": None,
                             "reason": f"not a corrections file: {name!r} is neither .jsonl nor PAGE/ALTO .xml"}]
        items += got
        refused += bad
    previous = corrections_table(storage)
    earlier = {} if previous is None else dict(zip(previous.column("line_id").to_pylist(), previous.column("text").to_pylist()))
    # A line id given twice with different text (in this import, or against an accepted correction) is ambiguous.
    texts: dict[str, set] = {}
    for item in items:
        texts.setdefault(item["line_id"], set()).add(item["text"].strip())
    raws, meta, seen = [], {}, set()
    for item in items:
        lid, text = item["line_id"], item["text"]
        if len(texts[lid]) > 1:
            refused.append({**item, "reason": f"same line id twice with different text: {sorted(texts[lid])}"})
            continue
        if lid in earlier and earlier[lid].strip() != text.strip():
            refused.append({**item, "reason": f"same line id twice with different text: accepted before as {earlier[lid]!r}"})
            continue
        if lid in earlier or lid in seen:
            continue  # the same correction again: nothing new
        if lid not in by_id:
            refused.append({**item, "reason": f"no matching line: {lid!r} is not an OCR'd line of the corpus"})
            continue
        seen.add(lid)
        try:
            image = line_image(storage, lid)
        except (KeyError, StopIteration, IndexError, OSError) as err:
            refused.append({**item, "reason": f"no matching line: its page image is gone ({type(err).__name__})"})
            continue
        raws.append(RawLine(line_id=lid, document=lid.split("/")[0], source="correction", origin=item["origin"],
                            image=image, text_bytes=text.encode("utf-8")))
        meta[lid] = item
    pairs, quarantine = validate_lines(raws) if raws else (None, None)
    if quarantine is not None:
        for row in quarantine.to_pylist():
            refused.append({"origin": row.get("origin"), "line_id": row.get("line_id"),
                            "text": meta.get(row.get("line_id"), {}).get("text"), "reason": row["reason"]})
    now = time.time()
    if pairs is not None and pairs.num_rows:
        ids = pairs.column("line_id").to_pylist()
        extra = {
            "ocr_text": [by_id[i]["text"] for i in ids],
            "confidence": [float(by_id[i]["confidence"]) for i in ids],
            "model": [str(by_id[i].get("model")) for i in ids],
            "origin": [meta[i]["origin"] for i in ids],
            "imported_at": [now] * len(ids),
        }
        for name, values in extra.items():
            pairs = pairs.append_column(name, pa.array(values))
        table = pairs if previous is None else pa.concat_tables([previous, pairs.cast(previous.schema)])
        storage.write_table(table, url(storage, "lines.parquet"))
        report.accepted = pairs.num_rows
    if refused:
        rows = read_quarantine(storage) + [{**r, "at": now} for r in refused]
        storage.write_text(url(storage, "quarantine.jsonl"),
                           "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    report.quarantined = len(refused)
    for r in refused:
        kind = _kind(r["reason"], reason_kind)
        report.reasons[kind] = report.reasons.get(kind, 0) + 1
        log(f"quarantined {r['origin']}: {r['reason']}")
    for name, d in new_files:
        imported[f"{name}@{d}"] = d
    storage.write_json(url(storage, "imported.json"), imported)  # last: a crash before it imports again
    report.total_accepted = accepted_count(storage)
    return report


def _kind(reason: str, reason_kind) -> str:
    for prefix, kind in (("no matching line", "no_match"), ("not PAGE or ALTO", "not_page_alto"), ("not XML", "not_xml"),
                         ("same line id twice", "conflict"), ("not a corrections file", "not_corrections"),
                         ("not a JSON line", "bad_json"), ("not a correction", "bad_json")):
        if reason.startswith(prefix):
            return kind
    return reason_kind(reason)


def import_inbox(storage: Storage, log=None) -> ImportReport:
    """Import every file of corrections/inbox/ not imported yet."""
    files = [(name, storage.read_bytes(url(storage, "inbox", name))) for name, _ in pending_inbox(storage)]
    return import_files(storage, files, log)


def write_inbox_jsonl(storage: Storage, rows: list[dict], prefix: str = "review") -> str:
    """A JSONL of corrections into the inbox (the review page's submit), atomically."""
    name = f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{time.time_ns() % 10**9:09d}.jsonl"
    body = "".join(json.dumps({"line_id": r["line_id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in rows)
    return storage.write_text(url(storage, "inbox", name), body)


def training_state(storage: Storage) -> dict:
    target = url(storage, "state.json")
    if not storage.exists(target):
        return {"trained_on": 0, "challengers": []}
    try:
        return storage.read_json(target)
    except ValueError:
        return {"trained_on": 0, "challengers": []}


def new_since_training(storage: Storage) -> int:
    return accepted_count(storage) - int(training_state(storage).get("trained_on", 0))
