"""Train/validation/test splits and folds grouped by document, so no book leaks across them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

SPLITS = ("train", "validation", "test")


class SplitResult(NamedTuple):
    """The table with its new column, and a note for people when the grouping had to be relaxed."""

    table: pa.Table
    note: str | None


def _document_sizes(pairs: pa.Table) -> dict[str, int]:
    counts = pc.value_counts(pairs.column("document")).to_pylist()
    return {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}


def _check_fractions(fractions) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions {tuple(fractions)} must be three non-negative shares of train/validation/test summing to 1"
        )
    return tuple(float(f) for f in fractions)


def _contiguous_labels(n: int, fractions) -> list[str]:
    """Labels for n ordered lines: train block, then validation, then test (non-empty shares get a line)."""
    counts = [int(round(f * n)) for f in fractions]
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0 and n >= sum(1 for g in fractions if g > 0):
            counts[i] = 1
    counts[0] = n - counts[1] - counts[2]
    return [name for name, count in zip(SPLITS, counts) for _ in range(max(count, 0))]


def _with_column(pairs: pa.Table, name: str, by_line: dict[str, object], type_) -> pa.Table:
    values = [by_line[line_id] for line_id in pairs.column("line_id").to_pylist()]
    if name in pairs.column_names:
        pairs = pairs.drop_columns([name])
    return pairs.append_column(name, pa.array(values, type=type_))


def _line_documents(pairs: pa.Table):
    return zip(pairs.column("line_id").to_pylist(), pairs.column("document").to_pylist())


def _lines_by_document(pairs: pa.Table) -> dict[str, list[str]]:
    by_doc: dict[str, list[str]] = {}
    for line_id, doc in _line_documents(pairs):
        by_doc.setdefault(doc, []).append(line_id)
    return {doc: sorted(ids) for doc, ids in sorted(by_doc.items())}


def split_by_document(pairs: pa.Table, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> SplitResult:
    """Add a `split` column (train/validation/test); whole documents go to one split."""
    fractions = _check_fractions(fractions)
    sizes = _document_sizes(pairs)
    wanted = [name for name, f in zip(SPLITS, fractions) if f > 0]
    if len(sizes) < len(wanted):
        labels: dict[str, str] = {}
        for ids in _lines_by_document(pairs).values():
            labels.update(zip(ids, _contiguous_labels(len(ids), fractions)))
        note = (
            f"only {len(sizes)} document(s) for {len(wanted)} splits: each document's lines were split "
            "contiguously in line_id order (train first, then validation, then test), so test lines come "
            "from documents seen in training and measure seen-document quality only"
        )
        return SplitResult(_with_column(pairs, "split", labels, pa.string()), note)
    docs = list(sizes)
    random.Random(seed).shuffle(docs)
    total = sum(sizes.values())
    assigned = {name: 0 for name in SPLITS}
    doc_split: dict[str, str] = {}
    # Every wanted split gets one document first (smallest shares first), then each further document
    # goes where the line count is furthest below its target.
    for name in sorted(wanted, key=lambda n: fractions[SPLITS.index(n)]):
        doc = docs.pop()
        doc_split[doc] = name
        assigned[name] += sizes[doc]
    for doc in docs:
        name = max(wanted, key=lambda n: fractions[SPLITS.index(n)] * total - assigned[n])
        doc_split[doc] = name
        assigned[name] += sizes[doc]
    labels = {line_id: doc_split[doc] for line_id, doc in _line_documents(pairs)}
    return SplitResult(_with_column(pairs, "split", labels, pa.string()), None)


def kfold_by_document(pairs: pa.Table, k: int = 5, seed: int = 0) -> SplitResult:
    """Add a `fold` column 0..k-1; documents are kept whole and folds balanced by line count."""
    if k < 2:
        raise ValueError(f"k={k}: cross-validation needs at least 2 folds")
    sizes = _document_sizes(pairs)
    if len(sizes) < k:
        labels: dict[str, int] = {}
        for ids in _lines_by_document(pairs).values():
            labels.update({line_id: i * k // len(ids) for i, line_id in enumerate(ids)})
        note = (
            f"only {len(sizes)} document(s) for {k} folds: each document's lines were cut into {k} "
            "contiguous blocks, so folds share documents"
        )
        return SplitResult(_with_column(pairs, "fold", labels, pa.int32()), note)
    docs = list(sizes)
    random.Random(seed).shuffle(docs)  # ties between equal sizes are broken by the seed
    docs.sort(key=lambda d: -sizes[d])
    loads = [0] * k
    doc_fold: dict[str, int] = {}
    for doc in docs:  # largest first into the lightest fold
        fold = min(range(k), key=lambda f: (loads[f], f))
        doc_fold[doc] = fold
        loads[fold] += sizes[doc]
    labels = {line_id: doc_fold[doc] for line_id, doc in _line_documents(pairs)}
    return SplitResult(_with_column(pairs, "fold", labels, pa.int32()), None)


def leave_one_document_out(pairs: pa.Table) -> Iterator[tuple[str, pa.Table, pa.Table]]:
    """(held-out document, train table, test table) for each document in name order."""
    docs = pairs.column("document")
    for doc in _document_sizes(pairs):
        held_out = pc.equal(docs, doc)
        yield doc, pairs.filter(pc.invert(held_out)), pairs.filter(held_out)
