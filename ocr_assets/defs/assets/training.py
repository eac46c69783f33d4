"""Training graph: base model → baseline evaluation → LoRA adapters → merged model → evaluation report."""

from pathlib import Path
from typing import Optional

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ocr_assets.defs.assets.ingest import line_splits
from ocr_assets.data import store
from ocr_assets.settings import data_root


class BaseModelConfig(dg.Config):
    """Where the base model comes from: a model spec, or a compact model trained from scratch on the train split."""

    model: Optional[str] = None  # model directory or models:/NAME@ALIAS; None: the shipped default
    from_scratch: bool = False  # also used automatically when no shipped default exists
    scratch_epochs: int = 40
    scratch_learning_rate: float = 1e-3


class LoraConfig(dg.Config):
    """LoRA fine-tuning of the base model (names as ocr_assets.training.finetune.FinetuneSettings)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Optional[list[str]] = None
    epochs: Optional[int] = None
    learning_rate: Optional[float] = None
    batch_size: int = 16
    seed: int = 0

    def settings(self, device: str, **overrides):
        """The library's FinetuneSettings with these values (one mapping for every asset that fine-tunes)."""
        from ocr_assets.training.finetune import FinetuneSettings

        values = dict(epochs=self.epochs, rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                      target_modules=self.target_modules, learning_rate=self.learning_rate,
                      batch_size=self.batch_size, device=device, seed=self.seed)
        return FinetuneSettings(**{**values, **overrides})


class EvaluationConfig(dg.Config):
    """The promotion gate: the challenger must beat the champion's test CER_norm by at least min_gain."""

    min_gain: float = 0.0
    register_model: bool = True


def split_pairs(name: str) -> pa.Table:
    """The validated pairs of one split (train / validation / test)."""
    splits = store.read_table(store.LINE_SPLITS, columns=["line_id", "split"])
    ids = splits.filter(pc.equal(splits.column("split"), name)).column("line_id")
    pairs = store.read_table(store.LINE_PAIRS)
    return pairs.filter(pc.is_in(pairs.column("line_id"), value_set=ids.combine_chunks()))


def upstream_path(context: dg.AssetExecutionContext, asset: str, key: str = "path") -> Path:
    """The file an upstream asset's latest materialization recorded (each run's artifacts stay versioned)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"asset {asset!r} has not been materialized yet; materialize it first")
    value = event.asset_materialization.metadata.get(key)
    if value is None:
        raise dg.Failure(f"asset {asset!r} recorded no {key!r} metadata")
    return Path(str(value.value))


def run_dir(context: dg.AssetExecutionContext, kind: str):
    path = data_root() / "models" / kind / context.run_id[:8]
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _mlflow_epoch_logger(mlflow, prefix: str):
    def log(epoch: int, metrics: dict) -> None:
        numbers = {f"{prefix}_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "epoch"}
        if numbers:
            mlflow.log_metrics(numbers, step=epoch)

    return log


@dg.asset(group_name="training", kinds={"pytorch"}, pool="gpu", deps=[line_splits], required_resource_keys={"compute", "mlflow"})
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig) -> dg.MaterializeResult:
    """The model every fine-tune starts from: shipped default, a given model, or trained here from scratch."""
    import shutil

    from ocr_assets.training import finetune as training
    from ocr_assets.models.base import ModelNotFoundError
    from ocr_assets.models.resolve import resolve_model_dir

    out = run_dir(context, "base")
    source = config.model or "shipped default"
    scratch = config.from_scratch
    if not scratch:
        try:
            src = resolve_model_dir(config.model)
        except ModelNotFoundError as exc:
            if config.model:
                raise dg.Failure(str(exc)) from None
            context.log.warning(f"{exc}; training a compact model from scratch instead")
            scratch = True
    mlflow = context.resources.mlflow
    if scratch:
        source = "trained from scratch on the train split"
        mlflow.log_params({"base_source": "scratch", "scratch_epochs": config.scratch_epochs})
        report = training.train_from_scratch(
            split_pairs("train"), split_pairs("validation"), out, epochs=config.scratch_epochs,
            learning_rate=config.scratch_learning_rate, device=context.resources.compute.device,
            on_epoch=_mlflow_epoch_logger(mlflow, "scratch"),
        )
        extra = {"train_seconds": round(report.seconds, 1), "peak_rss_mb": round(report.peak_rss_mb, 1)}
    else:
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(src, out)
        mlflow.log_param("base_source", str(config.model or "shipped"))
        extra = {}
    from ocr_assets.models.resolve import load_recognizer

    params = load_recognizer(out, device="cpu").parameters_count()
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(out)), "source": source, "parameters": params, **extra})


@dg.asset(group_name="training", kinds={"pytorch", "safetensors"}, pool="gpu", deps=[base_model],
          required_resource_keys={"compute", "mlflow"})
def lora_adapters(context: dg.AssetExecutionContext, config: LoraConfig) -> dg.MaterializeResult:
    """LoRA adapters (safetensors) trained on the train split, validated on the validation split."""
    from ocr_assets.training import finetune as training

    settings = config.settings(context.resources.compute.device)
    mlflow = context.resources.mlflow
    mlflow.log_params({f"lora_{k}": v for k, v in config.model_dump().items()})
    out = run_dir(context, "adapters")
    settings.checkpoint_dir = str(out.parent / f"{out.name}.ckpt")
    report = training.lora_finetune(upstream_path(context, "base_model"), split_pairs("train"), split_pairs("validation"),
                                    settings, out, on_epoch=_mlflow_epoch_logger(mlflow, "lora"))
    mlflow.log_artifacts(str(out), artifact_path="adapters")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    history = report.history
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)),
        "train_seconds": round(report.seconds, 1),
        "peak_rss_mb": round(report.peak_rss_mb, 1),
        "adapter_kb": round(size / 1024, 1),
        "epochs": report.extra.get("epochs"),
        "trainable_params": report.extra.get("trainable_params"),
        "best_val_cer": report.extra.get("best_val_cer"),
        "unknown_chars": report.extra.get("unknown_chars", 0),
        "history": dg.MetadataValue.json(history[-50:]),
    })


@dg.asset(group_name="training", kinds={"pytorch", "safetensors"}, deps=[lora_adapters, base_model])
def merged_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Base weights with the adapters folded in, saved in 16-bit: a plain model directory."""
    from ocr_assets.training import finetune as training

    out = run_dir(context, "merged")
    training.merge_adapters(upstream_path(context, "base_model"), upstream_path(context, "lora_adapters"), out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(out)), "size_mb": round(size / 2**20, 2)})


class PretrainConfig(dg.Config):
    """Pretraining mix of the compact recognizer (ocr_assets.training.pretrain.pretrain; same names as the CLI)."""

    synthetic_lines: int = 20000
    seed: int = 1
    gt_folders: list[str] = []
    real_repeat: int = 3
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 1.5e-3
    init: Optional[str] = None
    model_config: dict = {}


@dg.asset(group_name="pretraining", kinds={"pytorch"}, pool="gpu", required_resource_keys={"compute", "mlflow"})
def pretrained_model(context: dg.AssetExecutionContext, config: PretrainConfig) -> dg.MaterializeResult:
    """A compact recognizer pretrained on synthetic classical lines plus any real GT folders given."""
    from ocr_assets.training.pretrain import pretrain

    out = run_dir(context, "pretrained")
    context.resources.mlflow.log_params({f"pretrain_{k}": str(v) for k, v in config.model_dump().items()})
    info = pretrain(out, synthetic_lines=config.synthetic_lines, seed=config.seed, gt_folders=tuple(config.gt_folders),
                    real_repeat=config.real_repeat, epochs=config.epochs, batch_size=config.batch_size,
                    learning_rate=config.learning_rate, init=config.init, device=context.resources.compute.device,
                    model_config=config.model_config, log=context.log.info)
    return dg.MaterializeResult(metadata={**{k: v for k, v in info.items() if k != "path"}, "path": dg.MetadataValue.path(str(out))})
