"""Corpus graph: each scan in the inbox is a partition; page_lines → ocr_pages per scan, ocr_corpus over all."""

import time
import warnings

import dagster as dg


# Multi-run backfill policies are marked beta in dagster 1.13; the batching is what the corpus needs.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

scan_partitions = dg.DynamicPartitionsDefinition(name="scans")
# A UI backfill of many scans runs in batches, so one run loads the model once and keeps a GPU busy.
SCANS_PER_RUN = 16
batch_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=SCANS_PER_RUN)


class CorpusConfig(dg.Config):
    model: str = ""  # model dir or models:/NAME@ALIAS; empty: the registry champion, else the shipped default
    batch_size: int = 64


class ReviewConfig(dg.Config):
    review_lines: int = 50  # the least confident lines listed for people to check


def corpus_model(spec: str = "") -> tuple[str | None, str]:
    """(model spec for load_recognizer, where it came from): explicit, registry champion, or shipped default."""
    from ocr_assets import registry

    if spec:
        return spec, spec
    version = registry.alias_version(registry.CHAMPION)
    if version is not None:
        uri = f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}"
        return uri, f"{uri} (version {version})"
    return None, "shipped default (no champion in the registry)"


@dg.asset(group_name="corpus", partitions_def=scan_partitions, backfill_policy=batch_policy, kinds={"numpy"})
def page_lines(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Pages of each scan with their line boxes and roles; unreadable scans quarantined with a reason."""
    from ocr_assets.corpus.build import segment_scan

    layouts = []
    for i, key in enumerate(context.partition_keys, 1):
        layouts.append(segment_scan(key))
        context.log.info(f"segmented {i}/{len(context.partition_keys)}: {layouts[-1]['path']} ({layouts[-1]['status']})")
    bad = {l["path"]: f"{l['status']}: {l['reason']}" for l in layouts if l["status"] != "ok"}
    for path, reason in bad.items():
        context.log.warning(f"{path}: {reason}")
    return dg.MaterializeResult(metadata={
        "scans": len(layouts),
        "pages": sum(len(l["pages"]) for l in layouts),
        "lines": sum(len(p["lines"]) for l in layouts for p in l["pages"]),
        "quarantined": dg.MetadataValue.json(bad),
    })


@dg.asset(group_name="corpus", partitions_def=scan_partitions, backfill_policy=batch_policy, deps=[page_lines],
          pool="gpu", kinds={"pytorch"}, required_resource_keys={"compute"})
def ocr_pages(context: dg.AssetExecutionContext, config: CorpusConfig) -> dg.MaterializeResult:
    """Text, JSONL, PAGE 2019 and ALTO 4 per page, read by the champion model (else the shipped default)."""
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.corpus.build import ocr_scans

    spec, source = corpus_model(config.model)
    recognizer = load_recognizer(spec, device=context.resources.compute.device)
    context.log.info(f"model: {source} on {context.resources.compute.resolved_device()}")
    started = time.perf_counter()
    summaries = ocr_scans(list(context.partition_keys), recognizer, config.batch_size,
                          progress=lambda done, total: context.log.info(f"OCR {done}/{total} pages"), model=source)
    seconds = time.perf_counter() - started
    pages = sum(s["pages"] for s in summaries)
    return dg.MaterializeResult(metadata={
        "model": source,
        "pages": pages,
        "lines": sum(s["lines"] for s in summaries),
        "seconds_per_page": round(seconds / pages, 3) if pages else 0.0,
        "scans": dg.MetadataValue.json([{k: s[k] for k in ("path", "status", "lines", "mean_confidence")} for s in summaries]),
    })


# Like eager(), without "no dependency missing": one scan whose OCR failed must not freeze the corpus.
CORPUS_CONDITION = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after new OCR'd scans")


@dg.asset(group_name="corpus", deps=[ocr_pages], kinds={"json"}, automation_condition=CORPUS_CONDITION)
def ocr_corpus(context: dg.AssetExecutionContext, config: ReviewConfig) -> dg.MaterializeResult:
    """All OCR'd scans as one corpus (text, JSONL with line and word confidences), a review list, quarantine."""
    from ocr_assets.corpus.build import build_corpus

    keys = context.instance.get_dynamic_partitions(scan_partitions.name)
    summary = build_corpus(keys, config.review_lines)
    review = summary.pop("review")
    table = "\n".join(f"| {r['confidence']:.3f} | {r['source']} p{r['page']} l{r['line']} | {r['text'][:80]} |" for r in review[:15])
    return dg.MaterializeResult(metadata={
        **{k: v for k, v in summary.items() if k != "dir"},
        "path": dg.MetadataValue.path(summary["dir"]),
        "least_confident": dg.MetadataValue.md("| conf | where | text |\n|---|---|---|\n" + table),
    })


@dg.asset_check(asset=ocr_corpus, description="Every page's PAGE and ALTO XML is valid against its schema.")
def corpus_xml_valid() -> dg.AssetCheckResult:
    from ocr_assets.pages.schemas import validate_alto_xml, validate_page_xml
    from ocr_assets.corpus.build import corpus_dir

    bad = {}
    files = sorted((corpus_dir() / "scans").glob("*/*.xml"))
    for path in files:
        errors = (validate_page_xml if path.name.endswith(".page.xml") else validate_alto_xml)(path.read_bytes())
        if errors:
            bad[str(path.relative_to(corpus_dir()))] = errors[:3]
    return dg.AssetCheckResult(passed=not bad, metadata={"files": len(files), "invalid": dg.MetadataValue.json(bad)})


corpus_assets = [page_lines, ocr_pages, ocr_corpus]
corpus_checks = [corpus_xml_valid]

