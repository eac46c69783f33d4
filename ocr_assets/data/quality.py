"""Great Expectations suite over line-pair metadata (sizes, text length, script, charset, uniqueness)."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import asdict, dataclass, field

import pandas as pd
import pyarrow as pa

from ocr_assets.text import arabic_ratio


@dataclass(frozen=True)
class QualityConfig:
    """Dataset-level bounds; looser than validation's per-line rules so they catch systematic faults."""

    min_height: int = 8
    max_height: int = 600
    min_width: int = 8
    max_width: int = 12_000
    max_chars: int = 500
    min_arabic_ratio: float = 0.5
    min_aspect_per_char: float = 0.03
    max_aspect_per_char: float = 10.0
    aspect_mostly: float = 0.98  # a few odd crops are tolerable, a shifted image/text pairing is not


@dataclass
class QualityReport:
    """Outcome of the suite: overall success plus one JSON-ready summary per expectation."""

    success: bool
    evaluated: int
    successful: int
    rows: int
    expectations: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def failures(self) -> list[dict]:
        return [e for e in self.expectations if not e["success"]]

    def to_markdown(self) -> str:
        lines = ["| expectation | column | ok | unexpected | examples |", "|---|---|---|---|---|"]
        for e in self.expectations:
            examples = ", ".join(str(v) for v in e["examples"][:3]).replace("|", "\\|")
            lines.append(
                f"| {e['expectation']} | {e['column'] or ''} | {'yes' if e['success'] else '**no**'} "
                f"| {e['unexpected_count'] if e['unexpected_count'] is not None else ''} | {examples} |"
            )
        return "\n".join(lines)


def _charset_ok(text: str) -> bool:
    return all(ch != "\ufffd" and unicodedata.category(ch) not in ("Cc", "Co", "Cs", "Cn") for ch in text)


def pair_metadata(pairs: pa.Table) -> pd.DataFrame:
    """One row of metadata per pair (no pixels): ids, sizes, text length, Arabic ratio, charset."""
    cols = [c for c in ("line_id", "document", "source", "text", "width", "height") if c in pairs.column_names]
    frame = pairs.select(cols).to_pandas()
    texts = frame["text"].fillna("")
    frame["text_length"] = texts.str.len()
    # Lines without letters (page numbers) have no script to judge: leave their ratio empty.
    frame["arabic_ratio"] = [arabic_ratio(t) if any(c.isalpha() for c in t) else math.nan for t in texts]
    frame["charset_ok"] = [_charset_ok(t) for t in texts]
    frame["aspect"] = frame["width"] / frame["height"]
    frame["aspect_per_char"] = frame["aspect"] / frame["text_length"].where(frame["text_length"] > 0)
    return frame.drop(columns=["text"])


def build_suite(config: QualityConfig):
    """The expectation suite for pair metadata."""
    import great_expectations as gx

    e = gx.expectations
    suite = gx.ExpectationSuite(name="line_pairs")
    for expectation in (
        e.ExpectTableRowCountToBeBetween(min_value=1),
        e.ExpectColumnValuesToNotBeNull(column="line_id"),
        e.ExpectColumnValuesToBeUnique(column="line_id"),
        e.ExpectColumnValuesToNotBeNull(column="document"),
        e.ExpectColumnValuesToBeBetween(column="height", min_value=config.min_height, max_value=config.max_height),
        e.ExpectColumnValuesToBeBetween(column="width", min_value=config.min_width, max_value=config.max_width),
        e.ExpectColumnValuesToBeBetween(column="text_length", min_value=1, max_value=config.max_chars),
        e.ExpectColumnValuesToBeBetween(column="arabic_ratio", min_value=config.min_arabic_ratio, max_value=1.0),
        e.ExpectColumnValuesToBeInSet(column="charset_ok", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(
            column="aspect_per_char",
            min_value=config.min_aspect_per_char,
            max_value=config.max_aspect_per_char,
            mostly=config.aspect_mostly,
        ),
    ):
        suite.add_expectation(expectation)
    return suite


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # Ephemeral and silent: no files, no analytics calls, no progress bars in Dagster logs.
    config = DataContextConfig(
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _plain(value):
    """JSON-safe copy of GX result values (numpy scalars, NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def run_expectations(metadata: pd.DataFrame, config: QualityConfig | None = None) -> QualityReport:
    """Run the suite on a metadata frame (as pair_metadata builds it)."""
    config = config or QualityConfig()
    context = _context()
    batch_definition = (
        context.data_sources.add_pandas("line_pairs")
        .add_dataframe_asset("pair_metadata")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(build_suite(config))
    result = batch_definition.get_batch(batch_parameters={"dataframe": metadata}).validate(suite)
    summaries = []
    for r in result.results:
        kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
        res = r.result or {}
        summaries.append(
            _plain(
                {
                    "expectation": r.expectation_config.type,
                    "column": kwargs.pop("column", None),
                    "kwargs": kwargs,
                    "success": bool(r.success),
                    "observed_value": res.get("observed_value"),
                    "unexpected_count": res.get("unexpected_count"),
                    "unexpected_percent": res.get("unexpected_percent"),
                    "examples": res.get("partial_unexpected_list", [])[:5],
                }
            )
        )
    return QualityReport(
        success=bool(result.success),
        evaluated=len(summaries),
        successful=sum(s["success"] for s in summaries),
        rows=len(metadata),
        expectations=summaries,
    )


def run_pair_expectations(pairs_table: pa.Table, config: QualityConfig | None = None) -> QualityReport:
    """Run the GX suite on a PAIR_SCHEMA table's metadata."""
    return run_expectations(pair_metadata(pairs_table), config)
