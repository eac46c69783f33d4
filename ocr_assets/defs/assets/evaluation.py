"""Evaluation graph: baseline scores, the report with plots and the registry gate, leave-one-document-out CV."""


import json
from pathlib import Path

from typing import Any

import dagster as dg

from ocr_assets.defs.assets.training import split_pairs
from ocr_assets.defs.configs import CrossValidationConfig, GateConfig, to_settings
from ocr_assets.defs.resources import ComputeResource, StorageResource
from ocr_assets.settings import FinetuneSettings
from ocr_assets.defs.cluster import GPU_QUEUE_TAGS


def evaluate_split(store, model_dir: Path, line_splits: dict, compute: ComputeResource, split: str = "test",
                   log_info=None):
    """A model's scores on one split of the validated pairs."""
    from ocr_assets.evaluation.evaluate import evaluate_pairs
    from ocr_assets.models.resolve import load_recognizer

    pairs = split_pairs(store, line_splits, split)
    if pairs.num_rows == 0:
        raise dg.Failure(f"the {split} split is empty; give line_splits more documents or other fractions")
    recognizer = load_recognizer(model_dir, device=compute.device, trust_remote_code=compute.trust_remote_code)
    result = evaluate_pairs(recognizer, pairs)
    if log_info:
        log_info(f"{split} split, {pairs.num_rows} lines: CER {result.overall.cer:.4f}, CER_norm {result.overall.cer_norm:.4f}")
    return result


def save_evaluation(result, out_dir: Path, name: str) -> Path:
    """Predictions as Parquet and the summary (per document too) as JSON; returns the JSON path."""
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(result.predictions, out_dir / f"{name}_predictions.parquet")
    summary = {**result.summary(), "per_document": {d: s.as_dict() for d, s in result.per_document.items()}}
    (out_dir / f"{name}.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    return out_dir / f"{name}.json"


@dg.asset(group_name="evaluation", kinds={"pytorch"}, pool="gpu", op_tags=GPU_QUEUE_TAGS)
def baseline_evaluation(context: dg.AssetExecutionContext, storage: StorageResource, compute: ComputeResource, mlflow: dg.ResourceParam[Any],
                        base_model: dict, line_splits: dict) -> dg.Output[dict]:
    """The base model's scores on the test split, before any fine-tuning."""
    store = storage.get()
    result = evaluate_split(store, store.local_dir(base_model["path"]), line_splits, compute, log_info=context.log.info)
    url = store.url("evaluations", context.run_id, "baseline")
    local = store.staging_dir(url)
    save_evaluation(result, local, "baseline")
    store.publish_dir(local, url)
    summary = result.summary()
    mlflow.log_metrics({f"baseline_{k}": v for k, v in summary.items()})
    per_document = {d: s.cer_norm for d, s in result.per_document.items()}
    return dg.Output({"path": url, **summary, "per_document_cer_norm": per_document},
                     metadata={**summary, "path": dg.MetadataValue.path(url)})


@dg.asset(group_name="evaluation", kinds={"mlflow"}, pool="gpu", op_tags=GPU_QUEUE_TAGS)
def evaluation_report(context: dg.AssetExecutionContext, config: GateConfig, storage: StorageResource,
                      compute: ComputeResource, mlflow: dg.ResourceParam[Any], merged_model: dict, baseline_evaluation: dict,
                      line_splits: dict) -> dg.Output[dict]:
    """Fine-tuned vs base on the test split, with plots; registers the challenger, promotes it only if it wins."""
    from ocr_assets.evaluation.gate import promote_if_better
    from ocr_assets.evaluation.report import png_markdown, write_report
    from ocr_assets.registry import CHAMPION, MODEL_NAME, Registry

    store = storage.get()
    merged_dir = store.local_dir(merged_model["path"])
    result = evaluate_split(store, merged_dir, line_splits, compute, log_info=context.log.info)
    url = store.url("evaluations", context.run_id, "report")
    local = store.staging_dir(url)
    save_evaluation(result, local, "finetuned")
    baseline = {"cer_norm": baseline_evaluation["cer_norm"], "cer": baseline_evaluation["cer"],
                "per_document": {d: {"cer_norm": v} for d, v in baseline_evaluation["per_document_cer_norm"].items()}}
    files = write_report(result, local, "Fine-tuned model on the test split", baseline=baseline)
    summary = result.summary()
    mlflow.log_metrics({f"test_{k}": v for k, v in summary.items()})
    mlflow.log_artifacts(str(local), artifact_path="evaluation")
    report_md = files["markdown"].read_text(encoding="utf-8")
    for key, title in (("cer_per_document", "CER per document"), ("error_vs_length", "Error vs length")):
        report_md = report_md.replace(f"![{title}]({files[key].name})", png_markdown(files[key], title))
    store.publish_dir(local, url)

    decision_md, meta = "registry disabled", {}
    if config.register_model:
        registry = Registry(storage.mlflow_uri())
        version = registry.register(merged_dir, {"test_cer_norm": summary["cer_norm"], "test_cer": summary["cer"]})
        champion = registry.alias_version(CHAMPION)
        champion_score = None
        if champion is not None and champion != version:
            # The champion scored now, on this very test split, so the comparison is like for like; by version,
            # so a champion promoted meanwhile by another run is not the one scored (the gate then refuses).
            from ocr_assets.models.resolve import resolve_model_dir

            champion_dir = resolve_model_dir(f"models:/{MODEL_NAME}/{champion}", storage.mlflow_uri())
            champion_score = evaluate_split(store, champion_dir, line_splits, compute).overall.cer_norm
        decision = promote_if_better(registry, version, summary["cer_norm"], champion_score,
                                     base=baseline_evaluation["cer_norm"], min_gain=config.min_gain,
                                     scored_champion=champion)
        decision_md = f"version {version}: {'promoted to champion' if decision.promoted else 'stays challenger'} — {decision.reason}"
        meta = {"model_version": version, "promoted": decision.promoted, "champion_before": champion or "none",
                "champion_cer_norm": champion_score}
        context.log.info(decision_md)
    value = {"path": url, **summary, "baseline_cer_norm": baseline_evaluation["cer_norm"], "registry": decision_md,
             "model": merged_model["path"], **meta}
    return dg.Output(value, metadata={
        **summary,
        "baseline_cer_norm": baseline_evaluation["cer_norm"],
        "improvement_cer_norm": round(baseline_evaluation["cer_norm"] - summary["cer_norm"], 5),
        "registry": decision_md,
        **{k: v for k, v in meta.items() if v is not None},
        "model": merged_model["path"],
        "report": dg.MetadataValue.md(report_md),
        "path": dg.MetadataValue.path(url),
    })


@dg.asset(group_name="evaluation", kinds={"pytorch"}, pool="gpu", op_tags=GPU_QUEUE_TAGS)
def cross_validation(context: dg.AssetExecutionContext, config: CrossValidationConfig, storage: StorageResource,
                     compute: ComputeResource, mlflow: dg.ResourceParam[Any], base_model: dict, line_splits: dict) -> dg.Output[dict]:
    """For each document: fine-tune on the others, score on it (how the model does on an unseen book)."""
    import pyarrow as pa

    from ocr_assets.data.splits import leave_one_document_out
    from ocr_assets.evaluation.evaluate import evaluate_pairs
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.training import finetune

    store = storage.get()
    pairs = pa.concat_tables([split_pairs(store, line_splits, s) for s in ("train", "validation", "test")])
    base_dir = store.local_dir(base_model["path"])
    url = store.url("cross_validation", context.run_id)
    local = store.staging_dir(url)
    folds = list(leave_one_document_out(pairs))[: config.max_documents]
    if len(folds) < 2:
        raise dg.Failure(f"leave-one-document-out needs at least 2 documents; the splits hold {len(folds)}")
    settings = to_settings(config, FinetuneSettings, device=compute.device)
    rows = []
    for i, (document, train, test) in enumerate(folds):
        context.log.info(f"fold {i + 1}/{len(folds)}: held-out {document} ({test.num_rows} lines)")
        fold_dir = local / f"fold{i}"
        trust = compute.trust_remote_code
        finetune.lora_finetune(base_dir, train, None, settings, fold_dir / "adapters", trust_remote_code=trust)
        finetune.merge_adapters(base_dir, fold_dir / "adapters", fold_dir / "merged", settings.merge_dtype,
                                trust_remote_code=trust)
        recognizer = load_recognizer(fold_dir / "merged", device=compute.device, trust_remote_code=compute.trust_remote_code)
        scores = evaluate_pairs(recognizer, test).overall
        rows.append({"document": document, "lines": test.num_rows, "cer": scores.cer, "cer_norm": scores.cer_norm,
                     "wer": scores.wer})
    mean = sum(r["cer_norm"] for r in rows) / len(rows)
    mlflow.log_metric("cv_mean_cer_norm", mean)
    (local / "cross_validation.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    store.publish_dir(local, url)
    table = "| held-out document | lines | CER | CER_norm | WER |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r['document']} | {r['lines']} | {r['cer']:.4f} | {r['cer_norm']:.4f} | {r['wer']:.4f} |" for r in rows)
    return dg.Output({"path": url, "folds": rows, "mean_cer_norm": mean}, metadata={
        "folds": len(rows), "mean_cer_norm": round(mean, 5), "table": dg.MetadataValue.md(table),
        "path": dg.MetadataValue.path(url)})
