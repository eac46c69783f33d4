"""Training graph: base model -> LoRA adapters -> merged model; pretraining of the compact recognizer.

Each asset's value is a small dict with the URL of what it wrote under the data root; downstream assets get the
value of their own run (ocr_assets.defs.io).
"""


from typing import Any

import dagster as dg

from ocr_assets.defs.assets.ingest import line_splits
from ocr_assets.defs.configs import BaseModelConfig, FinetuneConfig, PretrainConfig, to_settings
from ocr_assets.defs.resources import ComputeResource, StorageResource
from ocr_assets.settings import FinetuneSettings, PretrainSettings, ScratchSettings
from ocr_assets.defs.cluster import GPU_QUEUE_TAGS


def split_pairs(storage, splits: dict, name: str):
    """The validated pairs of one split (train / validation / test) of a `line_splits` value."""
    import pyarrow.compute as pc

    table = storage.read_table(splits["splits"], columns=["line_id", "split"])
    ids = table.filter(pc.equal(table.column("split"), name)).column("line_id")
    pairs = storage.read_table(splits["pairs"])
    return pairs.filter(pc.is_in(pairs.column("line_id"), value_set=ids.combine_chunks()))


def model_url(storage, context: dg.AssetExecutionContext, kind: str) -> str:
    return storage.url("models", kind, context.run_id)


def mlflow_epoch_logger(mlflow, prefix: str, log_info=None):
    """Per-epoch metrics to MLflow and, when given, one INFO line per epoch (progress in the UI and up.sh)."""
    def log(epoch: int, metrics: dict) -> None:
        numbers = {f"{prefix}_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "epoch"}
        if numbers:
            mlflow.log_metrics(numbers, step=epoch)
        if log_info:
            log_info(f"{prefix} epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in numbers.items()))

    return log


def dir_size(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dg.asset(group_name="training", kinds={"pytorch"}, pool="gpu", op_tags=GPU_QUEUE_TAGS)
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, storage: StorageResource,
               compute: ComputeResource, mlflow: dg.ResourceParam[Any], line_splits: dict) -> dg.Output[dict]:
    """The model every fine-tune starts from: a given model, else the champion, else the shipped one, or trained here."""
    import shutil

    from ocr_assets.errors import ModelNotFoundError
    from ocr_assets.models.backends import backend_for, check_remote_code
    from ocr_assets.models.resolve import resolve_model
    from ocr_assets.training import finetune

    store = storage.get()
    url = model_url(store, context, "base")
    local = store.staging_dir(url)
    extra: dict = {}
    resolved = None
    if not config.from_scratch:
        try:
            resolved = resolve_model(config.model, storage.registry_uri())
        except ModelNotFoundError as exc:
            if config.model:
                raise dg.Failure(str(exc)) from None
            context.log.warning(f"{exc}; training a compact model from scratch instead")
    if resolved is None:
        source = "trained from scratch on the train split"
        scratch = ScratchSettings(**config.scratch.model_dump())
        mlflow.log_params({"base_source": "scratch", "scratch_epochs": scratch.epochs})
        report = finetune.train_from_scratch(
            split_pairs(store, line_splits, "train"), split_pairs(store, line_splits, "validation"), local, scratch,
            device=compute.device, on_epoch=mlflow_epoch_logger(mlflow, "scratch", context.log.info))
        extra = {"train_seconds": round(report.seconds, 1), "peak_rss_mb": round(report.peak_rss_mb, 1)}
    else:
        source = resolved.source
        check_remote_code(backend_for(resolved.path), resolved.path, compute.trust_remote_code)
        shutil.rmtree(local)
        shutil.copytree(resolved.path, local)
        mlflow.log_param("base_source", source)
    store.publish_dir(local, url)
    context.log.info(f"base model: {source}")
    return dg.Output({"path": url, "source": source},
                     metadata={"path": dg.MetadataValue.path(url), "source": source, "size_mb": round(dir_size(store.local_dir(url)) / 2**20, 2), **extra})


@dg.asset(group_name="training", kinds={"pytorch", "safetensors"}, pool="gpu", op_tags=GPU_QUEUE_TAGS)
def lora_adapters(context: dg.AssetExecutionContext, config: FinetuneConfig, storage: StorageResource,
                  compute: ComputeResource, mlflow: dg.ResourceParam[Any], base_model: dict, line_splits: dict) -> dg.Output[dict]:
    """LoRA adapters (safetensors) trained on the train split, validated on the validation split."""
    from ocr_assets.training import finetune

    store = storage.get()
    mlflow.log_params({f"lora_{k}": v for k, v in config.model_dump().items()})
    url = store.url("models", "adapters", context.run_id)
    local = store.staging_dir(url)
    # Checkpoints per run family: a re-execution of a crashed run (from failure) resumes its fine-tune.
    family = context.dagster_run.root_run_id or context.run_id
    checkpoints = store.url("models", "adapters", f"{family}.ckpt") if store.is_local else None
    settings = to_settings(config, FinetuneSettings, device=compute.device, checkpoint_dir=checkpoints)
    report = finetune.lora_finetune(store.local_dir(base_model["path"]), split_pairs(store, line_splits, "train"),
                                    split_pairs(store, line_splits, "validation"), settings, local,
                                    on_epoch=mlflow_epoch_logger(mlflow, "lora", context.log.info),
                                    trust_remote_code=compute.trust_remote_code)
    mlflow.log_artifacts(str(local), artifact_path="adapters")
    size = dir_size(local)
    store.publish_dir(local, url)
    return dg.Output({"path": url, "merge_dtype": settings.merge_dtype}, metadata={
        "path": dg.MetadataValue.path(url),
        "train_seconds": round(report.seconds, 1),
        "peak_rss_mb": round(report.peak_rss_mb, 1),
        "adapter_kb": round(size / 1024, 1),
        "epochs": report.extra.get("epochs"),
        "trainable_params": report.extra.get("trainable_params"),
        "best_val_cer": report.extra.get("best_val_cer"),
        "unknown_chars": report.extra.get("unknown_chars", 0),
        "history": dg.MetadataValue.json(report.history[-50:]),
    })


@dg.asset(group_name="training", kinds={"pytorch", "safetensors"})
def merged_model(context: dg.AssetExecutionContext, storage: StorageResource, compute: ComputeResource,
                 base_model: dict, lora_adapters: dict) -> dg.Output[dict]:
    """Base weights with the adapters folded in (in the fine-tune's merge_dtype): a plain model directory."""
    from ocr_assets.training import finetune

    store = storage.get()
    url = model_url(store, context, "merged")
    local = store.staging_dir(url)
    finetune.merge_adapters(store.local_dir(base_model["path"]), store.local_dir(lora_adapters["path"]), local,
                            lora_adapters.get("merge_dtype", "float16"), trust_remote_code=compute.trust_remote_code)
    size = dir_size(local)
    store.publish_dir(local, url)
    return dg.Output({"path": url}, metadata={"path": dg.MetadataValue.path(url), "size_mb": round(size / 2**20, 2)})


@dg.asset(group_name="pretraining", kinds={"pytorch"}, pool="gpu", op_tags=GPU_QUEUE_TAGS)
def pretrained_model(context: dg.AssetExecutionContext, config: PretrainConfig, storage: StorageResource,
                     compute: ComputeResource, mlflow: dg.ResourceParam[Any]) -> dg.Output[dict]:
    """A compact recognizer pretrained on synthetic classical lines plus any real GT folders given."""
    from ocr_assets.training.pretrain import pretrain

    store = storage.get()
    url = model_url(store, context, "pretrained")
    local = store.staging_dir(url)
    settings = to_settings(config, PretrainSettings, device=compute.device)
    mlflow.log_params({f"pretrain_{k}": str(v) for k, v in config.model_dump().items()})
    info = pretrain(local, settings, log=context.log.info)
    store.publish_dir(local, url)
    return dg.Output({"path": url}, metadata={**{k: v for k, v in info.items() if k != "path"},
                                              "path": dg.MetadataValue.path(url)})


training_assets = [base_model, lora_adapters, merged_model]
__all__ = ["line_splits", "training_assets", "pretrained_model", "split_pairs", "model_url"]
