"""Evaluation graph: the report with plots, registry promotion, and leave-one-document-out cross-validation."""

import json
from pathlib import Path

import dagster as dg

from ocr_assets.defs.assets.training import (
    EvaluationConfig,
    LoraConfig,
    base_model,
    merged_model,
    split_pairs,
    upstream_path,
)
from ocr_assets.settings import data_root


def evaluate_split(model_dir: str | Path, device: str, split: str = "test"):
    """A model's scores on one split of the validated pairs."""
    from ocr_assets.evaluation.evaluate import evaluate_pairs
    from ocr_assets.models.resolve import load_recognizer

    pairs = split_pairs(split)
    if pairs.num_rows == 0:
        raise dg.Failure(f"the {split} split is empty; give line_splits more documents or other fractions")
    return evaluate_pairs(load_recognizer(model_dir, device=device), pairs)


def save_evaluation(result, out_dir: Path, name: str) -> Path:
    """Predictions as Parquet and the summary (per document too) as JSON; returns the JSON path."""
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(result.predictions, out_dir / f"{name}_predictions.parquet")
    summary = {**result.summary(), "per_document": {d: s.as_dict() for d, s in result.per_document.items()}}
    (out_dir / f"{name}.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    return out_dir / f"{name}.json"


@dg.asset(group_name="evaluation", kinds={"pytorch"}, pool="gpu", deps=[base_model], required_resource_keys={"compute", "mlflow"})
def baseline_evaluation(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The base model's scores on the test split, before any fine-tuning."""
    result = evaluate_split(upstream_path(context, "base_model"), context.resources.compute.device)
    path = save_evaluation(result, data_root() / "evaluations" / context.run_id[:8], "baseline")
    context.resources.mlflow.log_metrics({f"baseline_{k}": v for k, v in result.summary().items()})
    return dg.MaterializeResult(metadata={**result.summary(), "path": dg.MetadataValue.path(str(path))})


@dg.asset(group_name="evaluation", kinds={"mlflow"}, pool="gpu", deps=[merged_model, baseline_evaluation],
          required_resource_keys={"compute", "mlflow"})
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig) -> dg.MaterializeResult:
    """Fine-tuned vs base on the test split, with plots; registers the challenger, promotes it if it wins."""
    from ocr_assets import registry
    from ocr_assets.evaluation.report import png_markdown, write_report

    device = context.resources.compute.device
    merged_dir = upstream_path(context, "merged_model")
    baseline = json.loads(Path(upstream_path(context, "baseline_evaluation")).read_text())
    result = evaluate_split(merged_dir, device)
    out = data_root() / "evaluations" / context.run_id[:8]
    save_evaluation(result, out, "finetuned")
    files = write_report(result, out, "Fine-tuned model on the test split", baseline=baseline)
    mlflow = context.resources.mlflow
    summary = result.summary()
    mlflow.log_metrics({f"test_{k}": v for k, v in summary.items()})
    mlflow.log_artifacts(str(out), artifact_path="evaluation")

    decision_md = "registry disabled"
    meta: dict = {}
    if config.register_model:
        version = registry.log_and_register(Path(merged_dir), {"test_cer_norm": summary["cer_norm"], "test_cer": summary["cer"]})
        champion = registry.alias_version(registry.CHAMPION)
        champion_score = None
        if champion is not None:
            # Score the current champion now, on this very test split, so the comparison is like for like.
            champion_score = evaluate_split(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}", device).overall.cer_norm
        decision = registry.promote_if_better(version, summary["cer_norm"], champion_score, min_gain=config.min_gain)
        decision_md = f"version {version}: {'promoted to champion' if decision.promoted else 'stays challenger'} — {decision.reason}"
        meta = {"model_version": version, "promoted": decision.promoted, "champion_before": champion or "none"}
        context.log.info(decision_md)

    report_md = files["markdown"].read_text(encoding="utf-8")
    report_md = report_md.replace(f"![CER per document]({files['cer_per_document'].name})", png_markdown(files["cer_per_document"], "CER per document"))
    report_md = report_md.replace(f"![Error vs length]({files['error_vs_length'].name})", png_markdown(files["error_vs_length"], "Error vs length"))
    return dg.MaterializeResult(metadata={
        **summary,
        "baseline_cer_norm": baseline["cer_norm"],
        "improvement_cer_norm": round(baseline["cer_norm"] - summary["cer_norm"], 5),
        "registry": decision_md,
        **meta,
        "report": dg.MetadataValue.md(report_md),
        "html": dg.MetadataValue.path(str(files["html"])),
        "path": dg.MetadataValue.path(str(files["markdown"])),
    })


class CrossValidationConfig(LoraConfig):
    """Leave-one-document-out LoRA fine-tunes (few epochs each by default)."""

    epochs: int = 3
    max_documents: int = 6


@dg.asset(group_name="evaluation", kinds={"pytorch"}, pool="gpu", deps=[base_model], required_resource_keys={"compute", "mlflow"})
def cross_validation(context: dg.AssetExecutionContext, config: CrossValidationConfig) -> dg.MaterializeResult:
    """For each document: fine-tune on the others, score on it (how the model does on an unseen book)."""
    import pyarrow as pa

    from ocr_assets.training import finetune as training
    from ocr_assets.data.splits import leave_one_document_out
    from ocr_assets.evaluation.evaluate import evaluate_pairs
    from ocr_assets.models.resolve import load_recognizer

    pairs = pa.concat_tables([split_pairs(s) for s in ("train", "validation", "test")])
    base_dir = upstream_path(context, "base_model")
    out = data_root() / "cross_validation" / context.run_id[:8]
    rows = []
    folds = list(leave_one_document_out(pairs))[: config.max_documents]
    if len(folds) < 2:
        raise dg.Failure(f"leave-one-document-out needs at least 2 documents; the splits hold {len(folds)}")
    out.mkdir(parents=True, exist_ok=True)
    for i, (document, train, test) in enumerate(folds):
        context.log.info(f"fold {i + 1}/{len(folds)}: held-out {document} ({test.num_rows} lines)")
        settings = config.settings(context.resources.compute.device)
        fold_dir = out / f"fold{i}"
        training.lora_finetune(base_dir, train, None, settings, fold_dir / "adapters")
        training.merge_adapters(base_dir, fold_dir / "adapters", fold_dir / "merged")
        scores = evaluate_pairs(load_recognizer(fold_dir / "merged", device=context.resources.compute.device), test).overall
        rows.append({"document": document, "lines": test.num_rows, "cer": scores.cer, "cer_norm": scores.cer_norm, "wer": scores.wer})
    mean = sum(r["cer_norm"] for r in rows) / len(rows) if rows else float("nan")
    context.resources.mlflow.log_metric("cv_mean_cer_norm", mean)
    (out / "cross_validation.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    table = "| held-out document | lines | CER | CER_norm | WER |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r['document']} | {r['lines']} | {r['cer']:.4f} | {r['cer_norm']:.4f} | {r['wer']:.4f} |" for r in rows)
    return dg.MaterializeResult(metadata={"folds": len(rows), "mean_cer_norm": round(mean, 5), "table": dg.MetadataValue.md(table),
                                          "path": dg.MetadataValue.path(str(out / "cross_validation.json"))})


training_assets_eval = [evaluation_report, cross_validation]
