"""Corrections that cannot be used are quarantined with a reason, never a failed sensor or run: no matching OCR'd
line, empty or Latin-only text, XML that is not PAGE/ALTO (or not XML), a line id twice with different text, a
file of another kind. And the CLI verbs `drift`, `review`, `corrections import` over the same library."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from lxml import etree

from ocr_assets.defs.resources import StorageResource
from ocr_assets.pages.export import PAGE_NS
from ocr_assets_tests.monitoring_kit import clean_scan, truth_of

CLI = str(Path(sys.executable).with_name("ocr-assets"))


@pytest.fixture()
def corpus(tmp_path, monkeypatch):
    """Three clean scans read by the shipped model into a corpus (without Dagster: `ocr-assets corpus`'s library)."""
    from ocr_assets.corpus.build import process_inbox
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.storage import Storage

    root, box = tmp_path / "root", tmp_path / "inbox"
    box.mkdir()
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(root))
    monkeypatch.setenv("OCR_ASSETS_INBOX_SETTLE_S", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for i in range(3):
        clean_scan(i).save(box / f"clean{i}.png")
    process_inbox(Storage.from_env(), str(box), load_recognizer("default"))
    keys = sorted(p.name for p in (root / "corpus" / "scans").iterdir())
    return root, keys


def _ids(root, key):
    return [f"{key}/p0001/l{json.loads(l)['line']}" for l in (root / "corpus/scans" / key / "p0001.jsonl").read_text().splitlines()]


def _corrected_page_xml(root, key, image_name=None) -> bytes:
    """The corpus's PAGE XML of a scan with every line's text set to the truth (as eScriptorium would export it)."""
    tree = etree.fromstring((root / "corpus/scans" / key / "p0001.page.xml").read_bytes())
    lines = tree.findall(f".//{{{PAGE_NS}}}TextLine")
    for line, truth in zip(lines, truth_of(root, key)):
        line.find(f"{{{PAGE_NS}}}TextEquiv/{{{PAGE_NS}}}Unicode").text = truth
    if image_name:
        tree.find(f".//{{{PAGE_NS}}}Page").set("imageFilename", image_name)
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


def _sensor_tick(defs, instance, cursor):
    return defs.get_sensor_def("corrections_sensor").evaluate_tick(dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"storage": StorageResource()}))


@pytest.mark.timeout(600)
def test_bad_corrections_are_quarantined_with_reasons(corpus, monkeypatch):
    from ocr_assets.defs.definitions import build_defs

    root, keys = corpus
    monkeypatch.setenv("OCR_ASSETS_CORRECTIONS", json.dumps({"min_corrections": 20}))
    a, b, c = (_ids(root, k) for k in keys)
    inbox = root / "corrections" / "inbox"
    inbox.mkdir(parents=True)
    truth_a = truth_of(root, keys[0])
    rows = [
        {"line_id": a[0], "text": truth_a[0]},  # good
        {"line_id": a[1], "text": truth_a[1]},  # good
        {"line_id": "0000000000000000/p0001/l1", "text": "قال أبو عثمان"},  # no such scan
        {"line_id": a[2], "text": "   "},  # empty
        {"line_id": a[3], "text": "Lorem ipsum dolor"},  # Latin only
        {"line_id": b[0], "text": "حدثنا محمد"}, {"line_id": b[0], "text": "حدثنا أحمد"},  # same id, two texts
    ]
    (inbox / "batch.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\nnot json\n",
                                       encoding="utf-8")
    (inbox / "tei.xml").write_text('<TEI xmlns="http://www.tei-c.org/ns/1.0"><text/></TEI>')
    (inbox / "broken.xml").write_text("<PcGts><Page")
    (inbox / "elsewhere.page.xml").write_bytes(_corrected_page_xml(root, keys[2], image_name="not-in-corpus.png"))
    (inbox / "c.page.xml").write_bytes(_corrected_page_xml(root, keys[2]))  # good: 5 lines
    (inbox / "notes.txt").write_text("a note, not corrections")

    defs = build_defs()
    with dg.instance_for_test() as instance:
        tick = _sensor_tick(defs, instance, None)
        assert [r.job_name for r in tick.run_requests] == ["corrections_job"]
        run = defs.resolve_job_def("corrections_job").execute_in_process(instance=instance)
        assert run.success
        meta = run.asset_materializations_for_node("corrected_lines")[0].metadata
        assert meta["accepted"].value == 2 + 5 and meta["files"].value == 6
        quarantine = [json.loads(l) for l in (root / "corrections/quarantine.jsonl").read_text().splitlines()]
        reasons = {q["origin"]: q["reason"] for q in quarantine}
        assert any(q["reason"].startswith("no matching line") and (q["line_id"] or "").startswith("0000000000000000/")
                   for q in quarantine)
        assert any(r.startswith("text is empty") for r in reasons.values())
        assert any(r.startswith("text is not Arabic script") for r in reasons.values())
        assert sum(r.startswith("same line id twice with different text") for r in reasons.values()) == 2
        assert reasons["tei.xml"].startswith("not PAGE or ALTO XML: the root element is <TEI>")
        assert reasons["broken.xml"].startswith("not XML")
        assert reasons["notes.txt"].startswith("not a corrections file")
        assert any(o.startswith("batch.jsonl:8") and r.startswith("not a JSON line") for o, r in reasons.items())
        assert sum(o.startswith("elsewhere.page.xml#") and r.startswith("no matching line") for o, r in reasons.items()) == 5
        assert meta["quarantine_reasons"].value == {"no_match": 6, "empty_text": 1, "not_arabic": 1, "conflict": 2,
                                                     "not_page_alto": 1, "not_xml": 1, "not_corrections": 1, "bad_json": 1}
        # Accepted lines are line pairs: the line's crop from the page, the corrected text.
        import pyarrow.parquet as pq

        table = pq.read_table(root / "corrections/lines.parquet").to_pylist()
        assert {r["line_id"]: r["text"] for r in table}[a[0]] == truth_a[0]
        assert all(r["image"][:8] == b"\x89PNG\r\n\x1a\n" and r["height"] >= 20 for r in table)

        # Nothing new: the sensor says why it does not train (7 accepted, 20 needed) and never fails.
        again = _sensor_tick(defs, instance, tick.cursor)
        assert not again.run_requests
        assert "7 accepted corrections new since the last challenger" in again.skip_message and "20 needed" in again.skip_message

    # The CLI imports through the same library; a file imported before is skipped, bad paths are one-line errors.
    env_run = lambda *args: subprocess.run([CLI, *args], capture_output=True, text=True)  # noqa: E731
    again = env_run("corrections", "import", str(inbox / "batch.jsonl"))
    assert again.returncode == 0 and json.loads(again.stdout)["skipped_files"] == 1
    more = root.parent / "more.jsonl"
    more.write_text(json.dumps({"line_id": b[1], "text": truth_of(root, keys[1])[1]}, ensure_ascii=False) + "\n")
    done = env_run("corrections", "import", str(more))
    assert done.returncode == 0 and json.loads(done.stdout)["accepted"] == 1 and json.loads(done.stdout)["total_accepted"] == 8
    missing = env_run("corrections", "import", str(root / "nope.jsonl"))
    assert missing.returncode == 2 and missing.stderr.startswith("ocr-assets: error: ") and len(missing.stderr.splitlines()) == 1


def test_cli_drift_and_review(corpus):
    root, _ = corpus
    for verb in (["drift"], ["review"], ["corrections", "import"]):
        shown = subprocess.run([CLI, *verb, "--help"], capture_output=True, text=True)
        assert shown.returncode == 0 and "usage: ocr-assets " + " ".join(verb) in shown.stdout
    drift = subprocess.run([CLI, "drift", "--reference-pages", "2", "--window-pages", "2"], capture_output=True, text=True)
    assert drift.returncode == 0, drift.stderr
    out = json.loads(drift.stdout)
    # Three pages: two form the reference, one is the current window (fewer than the 3 needed to compare).
    assert out["severity"] is None and out["reference_pages"] == 2 and "not enough pages" in out["reason"]
    remote = subprocess.run([CLI, "review", "--host", "0.0.0.0"], capture_output=True, text=True)
    assert remote.returncode == 2 and "127.0.0.1 only" in remote.stderr and len(remote.stderr.splitlines()) == 1
