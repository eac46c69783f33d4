"""Corpus graph: each scan in the inbox is a partition; page_lines → ocr_pages per scan, ocr_corpus over all."""

import time
import warnings

import dagster as dg

from ocr_assets.defs.resources import ComputeResource, StorageResource
from ocr_assets.defs.cluster import GPU_QUEUE_TAGS, TRANSIENT_RETRY, no_retry_on_user_errors


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


@dg.asset(group_name="corpus", partitions_def=scan_partitions, backfill_policy=batch_policy, kinds={"numpy"},
          retry_policy=TRANSIENT_RETRY)
def page_lines(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Pages of each scan with their line boxes and roles; unreadable scans quarantined with a reason."""
    from ocr_assets.corpus.build import segment_scan

    layouts = []
    for i, key in enumerate(context.partition_keys, 1):
        with no_retry_on_user_errors():
            layouts.append(segment_scan(storage.get(), key))
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
          pool="gpu", op_tags=GPU_QUEUE_TAGS, kinds={"pytorch"}, retry_policy=TRANSIENT_RETRY)
def ocr_pages(context: dg.AssetExecutionContext, config: CorpusConfig, storage: StorageResource,
              compute: ComputeResource) -> dg.MaterializeResult:
    """Text, JSONL, PAGE 2019 and ALTO 4 per page, read by the champion model (else the shipped default)."""
    from ocr_assets.corpus.build import ocr_scans
    from ocr_assets.models.backends import backend_for, check_remote_code
    from ocr_assets.models.resolve import resolve_model

    with no_retry_on_user_errors():
        resolved = resolve_model(config.model or None, storage.registry_uri())
        backend = backend_for(resolved.path)
        check_remote_code(backend, resolved.path, compute.trust_remote_code)
        recognizer = backend.load(resolved.path, device=compute.device)
    source = resolved.source
    context.log.info(f"model: {source} on {compute.resolved_device()}")
    started = time.perf_counter()
    summaries = ocr_scans(storage.get(), list(context.partition_keys), recognizer, config.batch_size,
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


@dg.asset(group_name="corpus", deps=[ocr_pages], kinds={"json"}, automation_condition=CORPUS_CONDITION,
          retry_policy=TRANSIENT_RETRY)
def ocr_corpus(context: dg.AssetExecutionContext, config: ReviewConfig, storage: StorageResource) -> dg.MaterializeResult:
    """All OCR'd scans as one corpus (text, JSONL with line and word confidences), a review list, quarantine."""
    from ocr_assets.corpus.build import build_corpus

    keys = context.instance.get_dynamic_partitions(scan_partitions.name)
    summary = build_corpus(storage.get(), keys, config.review_lines)
    review = summary.pop("review")
    table = "\n".join(f"| {r['confidence']:.3f} | {r['source']} p{r['page']} l{r['line']} | {r['text'][:80]} |" for r in review[:15])
    return dg.MaterializeResult(metadata={
        **{k: v for k, v in summary.items() if k != "dir"},
        "path": dg.MetadataValue.path(summary["dir"]),
        "least_confident": dg.MetadataValue.md("| conf | where | text |\n|---|---|---|\n" + table),
    })


@dg.asset_check(asset=ocr_corpus, description="Every page's PAGE and ALTO XML is valid against its schema.")
def corpus_xml_valid(storage: StorageResource) -> dg.AssetCheckResult:
    from ocr_assets.corpus.build import corpus_url
    from ocr_assets.pages.schemas import validate_alto_xml, validate_page_xml

    store = storage.get()
    bad, files = {}, []
    for key in store.listdir(corpus_url(store, "scans")):
        for name in store.listdir(corpus_url(store, "scans", key)):
            if name.endswith(".xml"):
                files.append(f"scans/{key}/{name}")
    for rel in files:
        data = store.read_bytes(corpus_url(store, *rel.split("/")))
        errors = (validate_page_xml if rel.endswith(".page.xml") else validate_alto_xml)(data)
        if errors:
            bad[rel] = errors[:3]
    return dg.AssetCheckResult(passed=not bad, metadata={"files": len(files), "invalid": dg.MetadataValue.json(bad)})


corpus_assets = [page_lines, ocr_pages, ocr_corpus]
corpus_checks = [corpus_xml_valid]

