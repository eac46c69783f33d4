import collections

import pyarrow as pa
import pytest

from ocr_assets.data.splits import kfold_by_document, leave_one_document_out, split_by_document


def pairs(sizes: dict[str, int]) -> pa.Table:
    """A pairs-like table: line_id, document, text (images are irrelevant to grouping)."""
    ids, docs = [], []
    for doc, n in sizes.items():
        ids += [f"{doc}/{i:06d}" for i in range(n)]
        docs += [doc] * n
    return pa.table({"line_id": ids, "document": docs, "text": ["قال"] * len(ids)})


BOOKS = {"Buldan": 1466, "Hayawan": 992, "Adab": 790, "Tarikh": 1110, "Muntazam": 938, "Extra": 300}


def _docs_per_split(table: pa.Table, column: str) -> dict:
    out = collections.defaultdict(set)
    for doc, name in zip(table.column("document").to_pylist(), table.column(column).to_pylist()):
        out[name].add(doc)
    return out


def test_no_document_crosses_splits_and_shares_are_near_target():
    result = split_by_document(pairs(BOOKS), seed=3)
    docs = _docs_per_split(result.table, "split")
    assert result.note is None
    assert set(docs) == {"train", "validation", "test"}
    assert sum(len(d) for d in docs.values()) == len(BOOKS)  # each document in exactly one split
    counts = collections.Counter(result.table.column("split").to_pylist())
    assert counts["train"] > counts["validation"] and counts["train"] > counts["test"]
    assert counts["train"] / result.table.num_rows >= 0.5


def test_split_is_deterministic_per_seed_and_keeps_rows():
    table = pairs(BOOKS)
    a = split_by_document(table, seed=1).table
    b = split_by_document(table, seed=1).table
    assert a.column("split").to_pylist() == b.column("split").to_pylist()
    assert a.column("line_id").to_pylist() == table.column("line_id").to_pylist()
    seeds = {tuple(sorted(_docs_per_split(split_by_document(table, seed=s).table, "split")["test"])) for s in range(8)}
    assert len(seeds) > 1  # the seed really chooses


def test_single_document_falls_back_to_contiguous_lines_with_a_note():
    result = split_by_document(pairs({"only": 100}), seed=0)
    labels = result.table.column("split").to_pylist()
    assert labels == ["train"] * 80 + ["validation"] * 10 + ["test"] * 10
    assert result.note and "only 1 document" in result.note and "contiguously" in result.note


def test_two_documents_for_three_splits_also_fall_back():
    result = split_by_document(pairs({"a": 10, "b": 20}))
    counts = collections.Counter(result.table.column("split").to_pylist())
    assert result.note and counts == {"train": 24, "validation": 3, "test": 3}


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match=r"fractions \(0.8, 0.3, 0.1\) must be three non-negative shares"):
        split_by_document(pairs(BOOKS), fractions=(0.8, 0.3, 0.1))


def test_kfold_keeps_documents_whole_and_balances_lines():
    result = kfold_by_document(pairs(BOOKS), k=3, seed=0)
    folds = _docs_per_split(result.table, "fold")
    assert result.note is None and sorted(folds) == [0, 1, 2]
    assert sum(len(d) for d in folds.values()) == len(BOOKS)
    loads = collections.Counter(result.table.column("fold").to_pylist())
    assert max(loads.values()) - min(loads.values()) <= max(BOOKS.values())


def test_kfold_with_fewer_documents_than_folds_says_so():
    result = kfold_by_document(pairs({"a": 10, "b": 10}), k=5)
    assert result.note and "only 2 document(s) for 5 folds" in result.note
    assert collections.Counter(result.table.column("fold").to_pylist()) == {f: 4 for f in range(5)}


def test_leave_one_document_out_holds_out_each_document_once():
    table = pairs({"a": 3, "b": 4, "c": 5})
    seen = []
    for doc, train, test in leave_one_document_out(table):
        seen.append(doc)
        assert set(test.column("document").to_pylist()) == {doc}
        assert doc not in set(train.column("document").to_pylist())
        assert train.num_rows + test.num_rows == table.num_rows
    assert seen == ["a", "b", "c"]
