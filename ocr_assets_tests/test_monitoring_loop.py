"""The correction loop on a real Dagster instance, a real MLflow (SQLite) registry and Debian's headless Chromium:
a person corrects lines on the review page, corrected PAGE XML arrives as from eScriptorium, the corrections sensor
imports them and then asks for a challenger; it is fine-tuned from the champion, gated on the golden set plus
held-out corrections, promoted because it wins, and the scans the old champion read are read again (the earlier
corpus kept). A challenger that fails the gate leaves the champion and the corpus untouched.

The champion is a tiny compact model (random weights, seconds to fine-tune on 2 CPU cores): what is measured is the
loop's plumbing and the gate's decisions, not the quality of a real model (benchmarks/correction_loop.py is that)."""

import json
import shutil
import threading

import dagster as dg
import pytest
from lxml import etree

from ocr_assets.defs.resources import StorageResource
from ocr_assets.pages.export import PAGE_NS
from ocr_assets_tests.monitoring_kit import SENTENCES, degraded_scan, truth_of
from ocr_assets_tests.services import free_port
from ocr_assets_tests.test_corpus import _tick


@pytest.fixture()
def loop_env(tmp_path, monkeypatch):
    import mlflow

    from ocr_assets.monitoring.loop import start_experiment
    from ocr_assets.registry import CHAMPION, Registry
    from ocr_assets.storage import Storage
    from ocr_assets_tests.tiny_models import save_tiny_compact

    root, box = tmp_path / "root", tmp_path / "inbox"
    box.mkdir()
    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(root))
    monkeypatch.setenv("OCR_ASSETS_INBOX", str(box))
    monkeypatch.setenv("OCR_ASSETS_INBOX_SETTLE_S", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the SQLite store under the data root
    monkeypatch.setenv("OCR_ASSETS_MONITORING", json.dumps({"golden_lines": 16}))
    monkeypatch.setenv("OCR_ASSETS_CORRECTIONS", json.dumps(
        {"min_corrections": 20, "epochs": 6, "learning_rate": 0.005, "heldout_fraction": 0.3}))
    storage = Storage.from_env()
    alphabet = sorted(set("".join(SENTENCES) + " تمت الصفحة من الكتاب ٠١٢٣٤٥٦٧٨٩"))
    tiny = save_tiny_compact(tmp_path / "tiny", alphabet)
    registry = Registry(storage.mlflow_uri())
    start_experiment(registry.uri, storage)
    with mlflow.start_run(run_name="tiny champion"):
        registry.set_alias(CHAMPION, registry.register(tiny, {"cer_norm": 1.0}))
    return root, box, registry


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Debian's chromium and chromium-driver are needed (scripts/test.sh installs them)")
    options = Options()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=ar"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def _correct_on_the_review_page(root, url, count):
    """Open the page in headless Chromium, type the true text of the first `count` lines, Submit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chromium()
    try:
        browser.get(url)
        assert browser.title == "OCR review"
        fields = browser.find_elements(By.CSS_SELECTOR, "input.text")
        assert len(fields) == 40  # every line of the 8 scans (the queue holds up to 50)
        # Every line image was served and decoded by the browser.
        assert browser.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        typed = {}
        for field in fields[:count]:
            lid = field.get_attribute("data-line-id")
            key, _, line = lid.split("/")
            typed[lid] = truth_of(root, key)[int(line[1:]) - 1]
            field.clear()
            field.send_keys(typed[lid])
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "status"), "Saved"))
        assert browser.find_element(By.ID, "status").text == f"Saved {count} corrections"
        return typed
    finally:
        browser.quit()


def _corrections_tick(defs, instance, cursor):
    return defs.get_sensor_def("corrections_sensor").evaluate_tick(dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"storage": StorageResource()}))


def _corpus_state(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "corpus").rglob("*")) if p.is_file()}


@pytest.mark.timeout(900)
def test_corrections_train_a_challenger_that_is_promoted_only_when_better(loop_env, monkeypatch):
    from ocr_assets.defs.definitions import build_defs
    from ocr_assets.monitoring.review_app import server
    from ocr_assets.registry import CHAMPION
    from ocr_assets.storage import Storage

    root, box, registry = loop_env
    defs = build_defs()
    with dg.instance_for_test() as instance:
        # Eight degraded scans read by the (tiny) champion, into a corpus.
        for i in range(8):
            degraded_scan(i).save(box / f"degraded{i}.png")
        _tick(defs, instance, None)
        assert dg.materialize([defs.get_assets_def("ocr_corpus")], instance=instance, selection=["ocr_corpus"],
                              resources={"storage": StorageResource()}).success
        keys = instance.get_dynamic_partitions("scans")
        assert all("version 1" in json.loads((root / f"corpus/scans/{k}/scan.json").read_text())["model"] for k in keys)
        before = _corpus_state(root)

        # A person corrects eight lines on the review page (headless Chromium against the real server).
        port = free_port()
        web = server(Storage.from_env(), port=port)
        thread = threading.Thread(target=web.run, daemon=True)
        thread.start()
        try:
            typed = _correct_on_the_review_page(root, f"http://127.0.0.1:{port}/", 8)
        finally:
            web.should_exit = True
            thread.join(timeout=30)
        (review_file,) = (root / "corrections" / "inbox").glob("review-*.jsonl")
        assert {json.loads(l)["line_id"]: json.loads(l)["text"] for l in review_file.read_text().splitlines()} == typed

        # Corrected PAGE XML of every page arrives too, as exported from eScriptorium.
        for key in keys:
            tree = etree.fromstring((root / f"corpus/scans/{key}/p0001.page.xml").read_bytes())
            for line, truth in zip(tree.findall(f".//{{{PAGE_NS}}}TextLine"), truth_of(root, key)):
                line.find(f"{{{PAGE_NS}}}TextEquiv/{{{PAGE_NS}}}Unicode").text = truth
            (root / f"corrections/inbox/scan-{key}.page.xml").write_bytes(etree.tostring(tree, encoding="UTF-8"))

        # The sensor imports them, then asks for a challenger.
        first = _corrections_tick(defs, instance, None)
        assert [r.job_name for r in first.run_requests] == ["corrections_job"]
        imported = defs.resolve_job_def("corrections_job").execute_in_process(instance=instance)
        assert imported.success
        meta = imported.asset_materializations_for_node("corrected_lines")[0].metadata
        assert meta["accepted"].value == 40 and meta["quarantined"].value == 0
        import pyarrow.parquet as pq

        origins = {r["line_id"]: r["origin"] for r in pq.read_table(root / "corrections/lines.parquet").to_pylist()}
        assert all(origins[lid].startswith("review-") for lid in typed)
        second = _corrections_tick(defs, instance, first.cursor)
        assert [r.job_name for r in second.run_requests] == ["challenger_job"]

        # Fine-tuned from the champion, gated, promoted because it wins; the old champion's scans are read again.
        run = defs.resolve_job_def("challenger_job").execute_in_process(instance=instance)
        assert run.success
        gate = run.asset_materializations_for_node("correction_challenger")[0].metadata
        assert gate["promoted"].value is True, gate["reason"].value
        assert gate["challenger_cer_norm"].value < gate["champion_cer_norm"].value
        assert registry.alias_version(CHAMPION) == gate["version"].value == "2"
        reread = run.asset_materializations_for_node("corpus_reread")[0].metadata
        assert reread["reread_scans"].value == 8
        assert all("version 2" in json.loads((root / f"corpus/scans/{k}/scan.json").read_text())["model"] for k in keys)
        (kept,) = (root / "corpus_versions").iterdir()  # the corpus the old champion read, kept
        assert (kept / "corpus.jsonl").read_bytes() == before["corpus/corpus.jsonl"]
        assert all((kept / "scans" / k / "scan.json").read_bytes() == before[f"corpus/scans/{k}/scan.json"] for k in keys)
        third = _corrections_tick(defs, instance, second.cursor)
        assert not third.run_requests and "0 accepted corrections new since the last challenger" in third.skip_message

        # A challenger that fails the gate (here: it must win by 5 CER points) changes nothing.
        monkeypatch.setenv("OCR_ASSETS_CORRECTIONS", json.dumps(
            {"min_corrections": 20, "epochs": 2, "learning_rate": 0.005, "heldout_fraction": 0.3, "min_gain": 5.0}))
        promoted_corpus = _corpus_state(root)
        worse = defs.resolve_job_def("challenger_job").execute_in_process(instance=instance)
        assert worse.success
        refused = worse.asset_materializations_for_node("correction_challenger")[0].metadata
        assert refused["promoted"].value is False and "does not beat champion" in refused["reason"].value
        assert registry.alias_version(CHAMPION) == "2"
        assert worse.asset_materializations_for_node("corpus_reread")[0].metadata["reread_scans"].value == 0
        assert _corpus_state(root) == promoted_corpus and len(list((root / "corpus_versions").iterdir())) == 1
