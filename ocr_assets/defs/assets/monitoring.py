"""Monitoring graph (thin over ocr_assets.monitoring): drift signals per scan and over windows with a drift check,
the golden set and the champion's re-evaluation with a CER check, the review queue, and the correction loop
(corrected_lines → correction_challenger → corpus_reread). Settings: ocr_assets.settings.MonitoringSettings /
CorrectionSettings, overridden by $OCR_ASSETS_MONITORING / $OCR_ASSETS_CORRECTIONS (JSON)."""

import json

import dagster as dg

from ocr_assets.defs.assets.corpus import batch_policy, ocr_corpus, ocr_pages, scan_partitions
from ocr_assets.defs.resources import ComputeResource, StorageResource
from ocr_assets.defs.cluster import GPU_QUEUE_TAGS

GROUP = "monitoring"
DRIFT_CHECK = "scan_drift_check"
REEVALUATION_CHECK = "champion_reevaluation_check"

# Like the corpus: after new OCR'd scans, never while they are still being read.
AFTER_UPSTREAM = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after new OCR'd scans")
# A scan partition is measured once its own OCR exists: a partition whose OCR never ran (a failed run) waits.
AFTER_OWN_OCR = (AFTER_UPSTREAM & ~dg.AutomationCondition.any_deps_missing()).with_label("after this scan's OCR")


def _settings():
    from ocr_assets.settings import monitoring_settings_from_env

    return monitoring_settings_from_env()


def _png_md(storage, url: str | None, alt: str) -> str:
    import base64

    if not url or not storage.exists(url):
        return ""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(storage.read_bytes(url)).decode()})"


def _alert(context, kind: str, message: str, details: dict) -> None:
    from ocr_assets.monitoring.alerts import send_alert

    send_alert(kind, message, details, _settings().alert_webhook, log=context.log.warning)


@dg.asset(group_name=GROUP, partitions_def=scan_partitions, deps=[ocr_pages], kinds={"numpy"},
          automation_condition=AFTER_OWN_OCR, backfill_policy=batch_policy)
def scan_drift_signals(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Per page of each scan: image statistics (resolution, brightness, contrast, ink share, skew, sharpness, noise,
    line height) and reading statistics (line confidence mean / low tail, empty or quarantined pages, characters
    per line height, character counts)."""
    from ocr_assets.monitoring.drift import READING_STATS, IMAGE_STATS, write_scan_signals

    store, rows = storage.get(), []
    for key in context.partition_keys:
        signals = write_scan_signals(store, key)
        if signals is None:
            context.log.warning(f"scan {key} is not OCR'd yet: no signals")
            continue
        rows += signals["pages"]
    means = {}
    for stat in IMAGE_STATS + READING_STATS:
        values = [r[stat] for r in rows if r.get(stat) is not None and r[stat] == r[stat]]
        means[stat] = round(sum(values) / len(values), 5) if values else None
    return dg.MaterializeResult(metadata={"pages": len(rows), "means": dg.MetadataValue.json(means)})


@dg.asset(group_name=GROUP, deps=[scan_drift_signals], kinds={"evidently", "html"}, automation_condition=AFTER_UPSTREAM,
          check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset="scan_drift", blocking=False,
                                         description="The latest scans look like the reference window (Evidently "
                                                     "K-S per statistic, character JS distance); WARN / ERROR on drift.")])
def scan_drift(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The latest window of pages against the reference window (the first pages read): an Evidently report with a
    plot per statistic, the drifted statistics and scans."""
    from ocr_assets.monitoring.drift import ERROR, detect_drift

    store = storage.get()
    keys = context.instance.get_dynamic_partitions(scan_partitions.name)
    result = detect_drift(store, _settings(), keys)
    context.log.info(f"drift: {result.severity or 'none'}: {result.reason}")
    metadata = {
        "severity": result.severity or "none",
        "reason": result.reason,
        "share_drifted": round(result.share_drifted, 3),
        "drifted": dg.MetadataValue.json(result.drifted),
        "char_js": round(result.char_js, 4),
        "drifted_scans": dg.MetadataValue.json(result.drifted_scans),
        "reference_pages": result.reference_pages,
        "current_pages": result.current_pages,
    }
    if result.report_html:
        metadata["report"] = dg.MetadataValue.path(result.report_html)
    plot = _png_md(store, result.plot_png, "reference vs current window")
    if plot:
        metadata["plot"] = dg.MetadataValue.md(plot)
    if not result.passed:
        _alert(context, "drift", f"scan drift {result.severity}: {result.reason}",
               {"report": result.report_html, "drifted_scans": result.drifted_scans})
    check = dg.AssetCheckResult(
        check_name=DRIFT_CHECK, passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR if result.severity == ERROR else dg.AssetCheckSeverity.WARN,
        metadata={k: metadata[k] for k in ("severity", "reason", "share_drifted", "drifted", "char_js", "report", "plot")
                  if k in metadata})
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


@dg.asset(group_name=GROUP, kinds={"parquet"})
def golden_set(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The fixed reference set of line pairs: real lines from the configured folder, else synthetic lines."""
    from ocr_assets.monitoring.golden import ensure_golden, golden_url

    store = storage.get()
    _, info = ensure_golden(store, _settings())
    return dg.MaterializeResult(metadata={**info, "path": dg.MetadataValue.path(golden_url(store))})


@dg.asset(group_name=GROUP, deps=[golden_set], kinds={"mlflow"},
          check_specs=[dg.AssetCheckSpec(REEVALUATION_CHECK, asset="champion_reevaluation", blocking=False,
                                         description="CER_norm on the golden set did not worsen past the tolerance.")])
def champion_reevaluation(context: dg.AssetExecutionContext, storage: StorageResource,
                          compute: ComputeResource) -> dg.MaterializeResult:
    """The champion (else the shipped model) re-scored on the golden set; history kept, CER over time plotted,
    logged to MLflow."""
    import tempfile
    from pathlib import Path

    import mlflow

    from ocr_assets.models.resolve import load_recognizer, resolve_model
    from ocr_assets.monitoring.golden import ensure_golden
    from ocr_assets.monitoring.loop import start_experiment
    from ocr_assets.monitoring.reevaluation import history_markdown, history_url, read_history, reevaluate

    store, settings = storage.get(), _settings()
    pairs, info = ensure_golden(store, settings)
    resolved = resolve_model(None, storage.registry_uri())
    recognizer = load_recognizer(resolved.path, device=compute.device)
    record = reevaluate(store, recognizer, resolved.source, pairs, info, settings.cer_tolerance)
    context.log.info(f"{resolved.source}: CER_norm {record['cer_norm']:.4f} on {record['lines']} golden lines")
    start_experiment(storage.mlflow_uri(), store)
    with mlflow.start_run(run_name=f"reevaluation-{context.run_id[:8]}"):
        mlflow.set_tags({"ocr_assets.kind": "reevaluation", "model": resolved.source, "dagster_run_id": context.run_id})
        mlflow.log_metrics({k: float(record[k]) for k in ("cer", "cer_norm", "wer", "wer_norm")})
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "cer_over_time.png"
            png.write_bytes(store.read_bytes(history_url(store, "cer_over_time.png")))
            mlflow.log_artifact(str(png), artifact_path="reevaluation")
    history = read_history(store)
    passed = not record["worsened"]
    message = (f"CER_norm {record['cer_norm']:.4f}" + (f" vs {record['previous_cer_norm']:.4f} before"
                                                        if record["previous_cer_norm"] is not None else " (first)")
               + f", tolerance {settings.cer_tolerance}")
    if not passed:
        _alert(context, "reevaluation", f"champion worsened on the golden set: {message}", record)
    plot = _png_md(store, history_url(store, "cer_over_time.png"), "CER over time")
    metadata = {"model": resolved.source, "cer": record["cer"], "cer_norm": record["cer_norm"], "lines": record["lines"],
                "golden": info["kind"], "history": dg.MetadataValue.md(history_markdown(history)),
                "cer_over_time": dg.MetadataValue.md(plot), "runs": len(history)}
    check = dg.AssetCheckResult(check_name=REEVALUATION_CHECK, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                                metadata={"message": message, "cer_norm": record["cer_norm"]})
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


@dg.asset(group_name=GROUP, deps=[scan_drift, ocr_corpus], kinds={"json"})
def review_queue(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Lines for people to check (the review page): drifted scans first, then least confident first."""
    from ocr_assets.monitoring.drift import latest_drift
    from ocr_assets.monitoring.review_app import build_review_queue, queue_url

    store, settings = storage.get(), _settings()
    drift = latest_drift(store) or {}
    drifted = drift.get("drifted_scans") or [] if drift.get("severity") else []
    queue = build_review_queue(store, drifted, settings.review_lines)
    table = "\n".join(f"| {q['confidence']:.3f} | {'drift' if q['drifted'] else ''} | {q['line_id']} | {q['text'][:60]} |"
                      for q in queue[:15])
    return dg.MaterializeResult(metadata={
        "lines": len(queue), "from_drifted_scans": sum(q["drifted"] for q in queue),
        "path": dg.MetadataValue.path(queue_url(store)),
        "queue": dg.MetadataValue.md("| conf | | line | text |\n|---|---|---|---|\n" + table)})


@dg.asset(group_name=GROUP, kinds={"parquet"})
def corrected_lines(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """People's corrections (PAGE / ALTO XML, JSONL, the review page) matched to OCR'd lines and validated like any
    ground truth; the rest quarantined with a reason."""
    from ocr_assets.monitoring.corrections import import_inbox, new_since_training, url

    store = storage.get()
    report = import_inbox(store, log=context.log.warning)
    context.log.info(f"corrections: {report.files} files, {report.accepted} accepted, {report.quarantined} quarantined")
    return dg.MaterializeResult(metadata={
        **{k: v for k, v in report.as_dict().items() if k != "reasons"},
        "quarantine_reasons": dg.MetadataValue.json(report.reasons),
        "new_since_last_challenger": new_since_training(store),
        "path": dg.MetadataValue.path(url(store, "lines.parquet")),
        "quarantine": dg.MetadataValue.path(url(store, "quarantine.jsonl"))})


@dg.asset(group_name=GROUP, deps=[corrected_lines, golden_set], kinds={"pytorch", "mlflow"}, pool="gpu",
          op_tags=GPU_QUEUE_TAGS)
def correction_challenger(context: dg.AssetExecutionContext, storage: StorageResource,
                          compute: ComputeResource) -> dg.MaterializeResult:
    """A challenger LoRA fine-tuned from the champion on the corrections, gated on the golden set plus held-out
    corrections; promoted to champion only when it wins."""
    from ocr_assets.errors import SourceError
    from ocr_assets.monitoring.loop import train_challenger
    from ocr_assets.settings import correction_settings_from_env

    try:
        record = train_challenger(storage.get(), storage.registry_uri(), correction_settings_from_env(), _settings(),
                                  device=compute.device, log=context.log.info)
    except SourceError as err:
        raise dg.Failure(str(err)) from None
    return dg.MaterializeResult(metadata={k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))})


@dg.asset(group_name=GROUP, deps=[correction_challenger], kinds={"pytorch"}, pool="gpu", op_tags=GPU_QUEUE_TAGS)
def corpus_reread(context: dg.AssetExecutionContext, storage: StorageResource,
                  compute: ComputeResource) -> dg.MaterializeResult:
    """The scans an older model read, read again by the champion (earlier corpus version kept under
    corpus_versions/); nothing when the champion did not change."""
    from ocr_assets.monitoring.loop import reread_stale

    out = reread_stale(storage.get(), storage.registry_uri(), device=compute.device,
                       review_lines=_settings().review_lines, log=context.log.info)
    return dg.MaterializeResult(metadata={"model": out["model"], "reread_scans": out["reread"],
                                          "earlier_version": out["kept"] or "none"})


monitoring_assets = [scan_drift_signals, scan_drift, golden_set, champion_reevaluation, review_queue, corrected_lines,
                     correction_challenger, corpus_reread]
