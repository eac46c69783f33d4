import random
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ocr_assets.defs.assets.ingest import RawLineSources, ingest_assets, ingest_checks, iter_sources
from ocr_assets.defs.io import RunScopedIOManager
from ocr_assets.defs.resources import StorageResource
from ocr_assets.settings import ENV_DATA_ROOT, shared_data_dir
from ocr_assets_tests.test_images import render_line, write_pair

WORDS = "قال أبو عثمان وهذا كتاب الحيوان في معرفة طبائع الأشياء وذكر الأخبار".split()


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv(ENV_DATA_ROOT, str(root))
    return root


def rendered_gt(folder: Path, books: int = 4, lines: int = 6, seed: int = 0) -> list[str]:
    """Render `books` x `lines` Arabic lines into a GT folder; returns the stems."""
    rng = random.Random(seed)
    stems = []
    for b in range(books):
        for i in range(lines):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))
            stem = f"book {b}/{i:06d}"
            write_pair(folder, stem, text, render_line(text, size=rng.choice([24, 32])))
            stems.append(stem)
    return stems


def run(gt_folders: list[str], max_share: float = 0.2, sources: dict | None = None) -> dg.ExecuteInProcessResult:
    config = {
        "ops": {
            "raw_line_dataset": {"config": sources or {"gt_folders": gt_folders}},
            "validated_line_pairs_quarantine_share_below_limit": {"config": {"max_share": max_share}},
        }
    }
    storage = StorageResource()  # the data root from the environment (the autouse fixture)
    return dg.materialize(
        [*ingest_assets, *ingest_checks],
        instance=dg.DagsterInstance.ephemeral(),
        run_config=config,
        raise_on_error=False,
        resources={"storage": storage, "io_manager": RunScopedIOManager(storage=storage)},
    )


def table(result, asset: str, key: str):
    """The Parquet table this run's `asset` value names under `key` (the run's own artifact)."""
    return pq.read_table(result.asset_value(asset)[key])


def _check(result, name: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def test_ingest_graph_on_a_rendered_gt_folder(tmp_path, data_root):
    folder = tmp_path / "gt"
    stems = rendered_gt(folder)
    write_pair(folder, "book 0/latin", "plain English text", render_line("كتاب"))
    write_pair(folder, "book 1/orphan", None, render_line("كتاب"))
    result = run([str(folder)])
    assert result.success
    meta = result.asset_materializations_for_node("validated_line_pairs")[0].metadata
    assert meta["accepted"].value == len(stems) and meta["quarantined"].value == 2
    assert "not_arabic" in meta["quarantine_reasons"].value and "orphan_image" in meta["quarantine_reasons"].value
    assert _check(result, "pairs_meet_expectations").passed
    assert _check(result, "quarantine_share_below_limit").passed
    pairs = table(result, "validated_line_pairs", "pairs")
    assert result.asset_value("validated_line_pairs")["pairs"].startswith(str(data_root))
    assert sorted(pairs.column("line_id").to_pylist()) == sorted(stems)
    splits = table(result, "line_splits", "splits")
    by_doc = {}
    for doc, split in zip(splits.column("document").to_pylist(), splits.column("split").to_pylist()):
        by_doc.setdefault(doc, set()).add(split)
    assert all(len(s) == 1 for s in by_doc.values()) and len(by_doc) == 4
    assert {s for v in by_doc.values() for s in v} == {"train", "validation", "test"}
    split_meta = result.asset_materializations_for_node("line_splits")[0].metadata
    assert split_meta["grouping_note"].value.startswith("only 4 document(s) for 5 folds")


def test_failing_blocking_check_stops_the_splits(tmp_path):
    folder = tmp_path / "gt"
    rendered_gt(folder, books=1, lines=3)
    for i in range(4):
        write_pair(folder, f"book 0/bad{i}", "Latin transcription here", render_line("كتاب"))
    result = run([str(folder)], max_share=0.2)
    check = _check(result, "quarantine_share_below_limit")
    assert not check.passed and "4 of 7 lines quarantined" in check.description
    assert not result.success
    assert result.asset_materializations_for_node("line_splits") == []


def test_missing_source_folder_fails_with_the_reason(tmp_path):
    result = run([str(tmp_path / "absent")])
    assert not result.success
    failure = result.failure_data_for_node("raw_line_dataset")
    assert "does not exist" in failure.user_failure_data.description


def test_default_sources_are_synthetic_and_synthetic_lines_pass(tmp_path):
    assert next(iter_sources(RawLineSources())).source == "synthetic"
    result = run([], sources={"synthetic": {"count": 12, "seed": 1}})
    assert result.success
    raw_meta = result.asset_materializations_for_node("raw_line_dataset")[0].metadata
    meta = result.asset_materializations_for_node("validated_line_pairs")[0].metadata
    assert raw_meta["lines"].value == 12 and meta["accepted"].value == 12
    assert _check(result, "pairs_meet_expectations").passed


@pytest.mark.shared_data
def test_ingest_graph_on_a_sample_of_the_shared_books(tmp_path):
    shared = shared_data_dir()
    if shared is None or not (shared / "ocr_gs_print").is_dir():
        pytest.skip("../shared/data/ocr_gs_print is absent (developer checkout only)")
    sample = tmp_path / "sample"
    books = sorted(p for p in (shared / "ocr_gs_print").iterdir() if p.is_dir())
    for book in books:
        (sample / book.name).mkdir(parents=True)
        for text in sorted(book.glob("*.gt.txt"))[:20]:  # links, not copies, of 20 lines per book
            stem = text.name[: -len(".gt.txt")]
            (sample / book.name / text.name).symlink_to(text)
            (sample / book.name / f"{stem}.png").symlink_to(book / f"{stem}.png")
    result = run([str(sample)])
    assert result.success
    meta = result.asset_materializations_for_node("validated_line_pairs")[0].metadata
    assert meta["accepted"].value + meta["quarantined"].value == 20 * len(books)
    assert meta["accepted"].value == 20 * len(books)  # the gold standard has no bad line in this sample
    assert _check(result, "pairs_meet_expectations").passed
    splits = table(result, "line_splits", "splits")
    docs = {}
    for doc, split in zip(splits.column("document").to_pylist(), splits.column("split").to_pylist()):
        docs.setdefault(split, set()).add(doc)
    assert sorted(len(d) for d in docs.values()) == [1, 1, len(books) - 2]
    assert set().union(*docs.values()) == {b.name for b in books}
    shutil.rmtree(sample)
