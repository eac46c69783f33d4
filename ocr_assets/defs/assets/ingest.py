"""Ingest assets: raw lines from the configured sources, validated pairs with quarantine, splits and folds."""

import collections
from collections.abc import Iterator
from typing import Optional

import dagster as dg
import pyarrow as pa

from ocr_assets.data.store import LINE_PAIRS, LINE_SPLITS, QUARANTINE, RAW_LINES, dataset_url
from ocr_assets.defs.resources import StorageResource
from ocr_assets.errors import FontError, SourceError
from ocr_assets.data.records import PAIR_SCHEMA, QUARANTINE_SCHEMA, RAW_SCHEMA, RawLine
from ocr_assets.data.validation import ValidationConfig, id_origins, judge_all, quarantine_row, reason_kind

_BATCH = 256
_DEFAULTS = ValidationConfig()
DEFAULT_SYNTHETIC_COUNT = 200


class SyntheticSource(dg.Config):
    """Rendered synthetic lines (ocr_assets.synth.lines)."""

    count: int = DEFAULT_SYNTHETIC_COUNT
    seed: int = 0
    vocalised_fraction: float = 0.5
    fonts: list[str] = []  # only these font names/families (empty: every discovered book and text face)
    exclude_fonts: list[str] = []


class RawLineSources(dg.Config):
    """Which sources feed the raw dataset; with none given, synthetic lines only."""

    gt_folders: list[str] = []
    hf_dataset: Optional[str] = None
    hf_split: str = "train"
    hf_limit: Optional[int] = None
    parquet_paths: list[str] = []
    imagefolders: list[str] = []
    xml_folders: list[str] = []
    synthetic: Optional[SyntheticSource] = None


class ValidationSettings(dg.Config):
    """The per-line acceptance rules (ocr_assets.data.validation.ValidationConfig)."""

    min_arabic_ratio: float = _DEFAULTS.min_arabic_ratio
    max_chars: int = _DEFAULTS.max_chars
    check_aspect: bool = _DEFAULTS.check_aspect


class SplitSettings(dg.Config):
    """Document-grouped split shares and the number of cross-validation folds."""

    fractions: list[float] = [0.8, 0.1, 0.1]
    seed: int = 0
    folds: int = 5


class QuarantineLimit(dg.Config):
    """Largest share of raw lines that may be quarantined before downstream assets are blocked."""

    max_share: float = 0.2


def iter_sources(config: RawLineSources) -> Iterator[RawLine]:
    """Every configured source in a fixed order: GT folders, Parquet, imagefolders, XML, HF, synthetic."""
    from ocr_assets.data import gt_folder, hf_source, xml_sources

    for folder in config.gt_folders:
        yield from gt_folder.iter_gt_folder(folder)
    for path in config.parquet_paths:
        yield from hf_source.iter_parquet(path)
    for folder in config.imagefolders:
        yield from hf_source.iter_imagefolder(folder)
    for folder in config.xml_folders:
        yield from xml_sources.iter_xml_folder(folder)
    if config.hf_dataset:
        yield from hf_source.iter_hf_dataset(config.hf_dataset, split=config.hf_split, limit=config.hf_limit)
    synthetic = config.synthetic
    others = (config.gt_folders, config.parquet_paths, config.imagefolders, config.xml_folders, config.hf_dataset)
    if synthetic is None and not any(others):
        synthetic = SyntheticSource()
    if synthetic is not None and synthetic.count > 0:
        from ocr_assets.synth.fonts import discover_fonts
        from ocr_assets.synth.lines import iter_synthetic_lines

        fonts = None
        if synthetic.fonts:
            fonts = [f for f in discover_fonts() if f.name in synthetic.fonts or f.family in synthetic.fonts]
            if not fonts:
                raise FontError(f"none of the fonts {synthetic.fonts} was found; known: {[f.name for f in discover_fonts()]}")
        yield from iter_synthetic_lines(
            synthetic.count, synthetic.seed, fonts=fonts, exclude_fonts=tuple(synthetic.exclude_fonts),
            vocalised_fraction=synthetic.vocalised_fraction
        )


def _chunks(rows: Iterator[dict], schema: pa.Schema) -> Iterator[pa.Table]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == _BATCH:
            yield pa.Table.from_pylist(chunk, schema=schema)
            chunk = []
    if chunk:
        yield pa.Table.from_pylist(chunk, schema=schema)


def _markdown(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dg.asset(group_name="ingest", kinds={"parquet"})
def raw_line_dataset(context: dg.AssetExecutionContext, config: RawLineSources,
                     storage: StorageResource) -> dg.Output[dict]:
    """Every line the configured sources hold, unjudged, as Parquet (image and text bytes as found)."""
    by_source: collections.Counter = collections.Counter()
    documents: set[str] = set()

    def rows():
        for raw in iter_sources(config):
            by_source[raw.source] += 1
            documents.add(raw.document)
            yield raw.to_row()

    store = storage.get()
    try:
        path, count = store.write_batches(_chunks(rows(), RAW_SCHEMA), RAW_SCHEMA,
                                          dataset_url(store, RAW_LINES, context.run_id))
    except (SourceError, FontError) as err:
        raise dg.Failure(description=str(err)) from err
    context.log.info(f"{count} raw lines from {dict(by_source)}")
    return dg.Output(
        {"path": path, "lines": count},
        metadata={
            "lines": count,
            "documents": len(documents),
            "by_source": dg.MetadataValue.md(_markdown(["source", "lines"], sorted(by_source.items()))),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


def _raw_lines(store, url: str) -> Iterator[RawLine]:
    for batch in store.iter_batches(url, batch_size=_BATCH):
        for row in batch.to_pylist():
            yield RawLine(**row)


@dg.asset(group_name="ingest", kinds={"parquet"})
def validated_line_pairs(context: dg.AssetExecutionContext, config: ValidationSettings, storage: StorageResource,
                         raw_line_dataset: dict) -> dg.Output[dict]:
    """Accepted image-text pairs (8-bit gray PNG, normalized text) plus a quarantine table with reasons."""
    rules = ValidationConfig(
        min_arabic_ratio=config.min_arabic_ratio, max_chars=config.max_chars, check_aspect=config.check_aspect
    )
    quarantine: list[dict] = []
    per_document: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    samples: list[list] = []
    store = storage.get()
    raw_url = raw_line_dataset["path"]

    def accepted_rows():
        # A first pass over the ids alone finds repeated line_ids, so the images stream through judging.
        origins = id_origins(
            (line_id, origin)
            for batch in store.iter_batches(raw_url, batch_size=65536, columns=["line_id", "origin"])
            for line_id, origin in zip(batch.column("line_id").to_pylist(), batch.column("origin").to_pylist())
        )
        for raw, row, reason in judge_all(_raw_lines(store, raw_url), rules, origins):
            if row is None:
                quarantine.append(quarantine_row(raw, reason))
                per_document[raw.document][1] += 1
                continue
            per_document[raw.document][0] += 1
            if len(samples) < 5:
                samples.append([row["line_id"], row["document"], f"{row['width']}x{row['height']}", row["text"]])
            yield row

    pairs_path, accepted = store.write_batches(_chunks(accepted_rows(), PAIR_SCHEMA), PAIR_SCHEMA,
                                               dataset_url(store, LINE_PAIRS, context.run_id))
    quarantine_path = store.write_table(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA),
                                        dataset_url(store, QUARANTINE, context.run_id))
    total = accepted + len(quarantine)
    kinds = collections.Counter(reason_kind(q["reason"]) for q in quarantine)
    examples = {}
    for q in quarantine:
        examples.setdefault(reason_kind(q["reason"]), f"{q['line_id']}: {q['reason']}")
    context.log.info(f"{accepted} accepted, {len(quarantine)} quarantined of {total}")
    return dg.Output(
        {"pairs": pairs_path, "quarantine": quarantine_path, "accepted": accepted, "quarantined": len(quarantine)},
        metadata={
            "accepted": accepted,
            "quarantined": len(quarantine),
            "quarantine_share": len(quarantine) / total if total else 0.0,
            "documents": len(per_document),
            "quarantine_reasons": dg.MetadataValue.md(
                _markdown(["reason", "lines", "example"], [[k, n, examples[k]] for k, n in kinds.most_common()])
                if kinds
                else "nothing quarantined"
            ),
            "per_document": dg.MetadataValue.md(
                _markdown(["document", "accepted", "quarantined"], [[d, *c] for d, c in sorted(per_document.items())])
            ),
            "samples": dg.MetadataValue.md(_markdown(["line_id", "document", "size", "text"], samples)),
            "path": dg.MetadataValue.path(str(pairs_path)),
            "quarantine_path": dg.MetadataValue.path(str(quarantine_path)),
        }
    )


_METADATA_COLUMNS = ["line_id", "document", "source", "text", "width", "height"]


@dg.asset_check(asset=validated_line_pairs, blocking=True, description="Great Expectations suite over pair metadata")
def pairs_meet_expectations(storage: StorageResource, validated_line_pairs: dict) -> dg.AssetCheckResult:
    """Run the GX suite (sizes, text length, Arabic ratio, charset, unique ids) on the accepted pairs."""
    from ocr_assets.data.quality import run_pair_expectations

    report = run_pair_expectations(storage.get().read_table(validated_line_pairs["pairs"], columns=_METADATA_COLUMNS))
    failed = [f"{e['expectation']}({e['column'] or ''})" for e in report.failures()]
    return dg.AssetCheckResult(
        passed=report.success,
        description="all expectations met" if report.success else "failed: " + ", ".join(failed),
        metadata={
            "evaluated": report.evaluated,
            "successful": report.successful,
            "rows": report.rows,
            "expectations": dg.MetadataValue.md(report.to_markdown()),
            "report": dg.MetadataValue.json(report.to_dict()),
        },
    )


@dg.asset_check(asset=validated_line_pairs, blocking=True, description="quarantined share of raw lines under a limit")
def quarantine_share_below_limit(config: QuarantineLimit, storage: StorageResource,
                                 validated_line_pairs: dict) -> dg.AssetCheckResult:
    """Fail when too many raw lines were quarantined (a broken source, wrong folder or encoding)."""
    store = storage.get()
    accepted = store.read_table(validated_line_pairs["pairs"], columns=["line_id"]).num_rows
    quarantined = store.read_table(validated_line_pairs["quarantine"], columns=["line_id"]).num_rows
    total = accepted + quarantined
    share = quarantined / total if total else 1.0
    return dg.AssetCheckResult(
        passed=total > 0 and share <= config.max_share,
        description=f"{quarantined} of {total} lines quarantined ({share:.1%}, limit {config.max_share:.0%})",
        metadata={"quarantine_share": share, "max_share": config.max_share, "lines": total},
    )


@dg.asset(group_name="ingest", kinds={"parquet"})
def line_splits(context: dg.AssetExecutionContext, config: SplitSettings, storage: StorageResource,
                validated_line_pairs: dict) -> dg.Output[dict]:
    """Train/validation/test split and cross-validation folds, whole documents at a time."""
    from ocr_assets.data.splits import kfold_by_document, split_by_document

    store = storage.get()
    pairs = store.read_table(validated_line_pairs["pairs"], columns=["line_id", "document"])
    split = split_by_document(pairs, tuple(config.fractions), seed=config.seed)
    folds = kfold_by_document(split.table, k=config.folds, seed=config.seed)
    path = store.write_table(folds.table, dataset_url(store, LINE_SPLITS, context.run_id))
    counts = collections.Counter(folds.table.column("split").to_pylist())
    docs: dict[str, set] = collections.defaultdict(set)
    for doc, name in zip(folds.table.column("document").to_pylist(), folds.table.column("split").to_pylist()):
        docs[name].add(doc)
    notes = [n for n in (split.note, folds.note) if n]
    for note in notes:
        context.log.warning(note)
    return dg.Output(
        {"splits": path, "pairs": validated_line_pairs["pairs"], **{f"{n}_lines": counts.get(n, 0) for n in ("train", "validation", "test")}},
        metadata={
            **{f"{name}_lines": counts.get(name, 0) for name in ("train", "validation", "test")},
            "splits": dg.MetadataValue.md(
                _markdown(
                    ["split", "lines", "documents"],
                    [[n, counts.get(n, 0), ", ".join(sorted(docs[n]))] for n in ("train", "validation", "test")],
                )
            ),
            "folds": config.folds,
            "grouping_note": "; ".join(notes) if notes else "documents kept whole",
            "path": dg.MetadataValue.path(str(path)),
        }
    )


ingest_assets = [raw_line_dataset, validated_line_pairs, line_splits]
ingest_checks = [pairs_meet_expectations, quarantine_share_below_limit]
