"""The one set of defaults: typed settings with help text per field, and the environment read in one place.

Dagster configs (`ocr_assets.defs.configs`) and CLI options (`ocr_assets.cli`) are generated from these
dataclasses, so a default or a help text is written once. Unknown keys are refused (`from_mapping`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ocr_assets.errors import ConfigError

ENV_DATA_ROOT = "OCR_ASSETS_DATA_ROOT"
ENV_SHARED_DATA = "OCR_ASSETS_SHARED_DATA"
ENV_MLFLOW = "MLFLOW_TRACKING_URI"
ENV_TRUST_REMOTE_CODE = "OCR_ASSETS_TRUST_REMOTE_CODE"

T = TypeVar("T")


def setting(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text (shown by `--help` and in the Dagster launchpad)."""
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


def help_of(cls: type, name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def from_mapping(cls: type[T], data: dict | None) -> T:
    """Build `cls` from a mapping; an unknown key is an error naming the allowed ones."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no setting {unknown}; allowed: {sorted(names)}")
    return cls(**data)


def replace(obj: T, **changes: Any) -> T:
    """A copy with `changes`; None values keep the current setting (unset CLI flags)."""
    return dataclasses.replace(obj, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class LoraSettings:
    """The LoRA adapter shape; turned into peft's LoraConfig in one place (ocr_assets.training.lora)."""

    rank: int = setting(16, "LoRA rank r (adapter width)")
    alpha: int = setting(32, "LoRA alpha (scaling = alpha / rank)")
    dropout: float = setting(0.05, "dropout on the LoRA path")
    target_modules: list[str] | None = setting(None, "module names to adapt; empty: the backend's default targets")
    modules_to_save: list[str] | None = setting(None, "modules trained in full and saved with the adapters")
    layers: list[int] | None = setting(None, "adapt only these layer indices (peft layers_to_transform); empty: all")
    layers_pattern: str | None = setting(None, "the name of the model's list of layers that `layers` indexes")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoRA rank {self.rank} must be >= 1 (16 is a common choice)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout {self.dropout} must be in [0, 1)")


AUTO_PATIENCE = 4


@dataclass
class FinetuneSettings:
    """LoRA fine-tuning of a base model (`ocr-assets finetune`, `lora_adapters`, `cross_validation`)."""

    epochs: int | None = setting(None, "passes over the lines; empty: about 1,600 line presentations, 4 to 30 passes")
    rank: int = setting(16, "LoRA rank r")
    alpha: int = setting(32, "LoRA alpha")
    dropout: float = setting(0.05, "LoRA dropout")
    target_modules: list[str] | None = setting(None, "LoRA target modules; empty: the backend's default")
    learning_rate: float | None = setting(None, "peak learning rate; empty: the backend's default")
    batch_size: int = setting(16, "lines per optimiser step")
    seed: int = setting(0, "random seed (shuffling, augmentation, validation hold-out)")
    val_fraction: float = setting(0.1, "share of the lines held out for validation when no split is given")
    merge_dtype: str = setting("float16", "precision of the merged model: float16, bfloat16 or float32")
    device: str = setting("auto", "auto, cpu or cuda")
    checkpoint_dir: str | None = setting(None, "where training checkpoints go (resume after a crash)")
    conventions: bool = setting(True, "learn the book's honorific ligatures (ﷺ, ﷻ, رضي الله عنه ...): train on the "
                                      "ligature where the print has a glyph, write the book's expansion on output")
    top_layers: int = setting(4, "compact models: adapt only the top N encoder blocks and the output head; the "
                                 "frozen lower part runs once per line (and augmented copy) and its output is "
                                 "cached, ~10x less CPU than adapting every block; 0: LoRA over the whole encoder")
    model_dropout: float | None = setting(None, "dropout inside the model while fine-tuning; empty: the model's own "
                                                "(0.1). 0 cuts a CPU fine-tune's time by about a third (drawing dropout "
                                                "masks costs more than the adapted blocks' matrix products there)")
    feature_variants: int = setting(8, "copies of each line whose lower-part features are cached with top_layers: "
                                       "the clean line and augmented ones")
    patience: int | None = setting(None, "compact models: stop after this many epochs in a row without a lower CER "
                                         "on the held-out lines (the best weights are kept either way); 0: every "
                                         "epoch; empty: 4 when the number of epochs is automatic, else 0")

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs {self.epochs} must be >= 1 (or empty for the automatic choice)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size {self.batch_size} must be >= 1")
        if self.merge_dtype not in ("float16", "bfloat16", "float32"):
            raise ConfigError(f"merge_dtype {self.merge_dtype!r} is not one of float16, bfloat16, float32")
        if self.model_dropout is not None and not 0.0 <= self.model_dropout < 1.0:
            raise ConfigError(f"model_dropout {self.model_dropout} must be in [0, 1)")
        if self.top_layers < 0 or self.feature_variants < 1:
            raise ConfigError(f"top_layers {self.top_layers} must be >= 0 and feature_variants "
                              f"{self.feature_variants} >= 1")
        if self.patience is not None and self.patience < 0:
            raise ConfigError(f"patience {self.patience} must be >= 0 (0: every epoch)")
        self.lora()  # validate rank and dropout now, not mid-run

    def lora(self, modules_to_save: list[str] | None = None, layers: list[int] | None = None,
             layers_pattern: str | None = None) -> LoraSettings:
        return LoraSettings(rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                            target_modules=self.target_modules or None, modules_to_save=modules_to_save,
                            layers=layers, layers_pattern=layers_pattern)

    def auto_patience(self) -> int:
        """Epochs without a better held-out CER before a fine-tune stops: the setting, else 4 for the automatic
        epoch count (measured on the five shared books with the v5 folds: the same CER_norm on average in about
        half the time, docs/NOTES.md session 14) and none when the user named the epochs."""
        if self.patience is not None:
            return self.patience
        return AUTO_PATIENCE if self.epochs is None else 0

    def auto_epochs(self, lines: int) -> int:
        if self.epochs is not None:
            return self.epochs
        # LoRA over the whole encoder: about 1,600 line presentations, between 4 and 30 passes: 200 lines -> 8
        # epochs, which measured best (Adab: CER_norm 0.0179 after 8 epochs in 66 s vs 0.0186 after 17 in 488 s).
        # Top layers on cached features: a pass costs ~10x less, and ~3,000 presentations measured best
        # (docs/NOTES.md, "Adaptation recipe").
        presentations = 3000 if self.top_layers else 1600
        return int(min(30, max(4, round(presentations / max(lines, 1)))))


@dataclass
class ScratchSettings:
    """A compact model trained from scratch on the train split (`base_model` when no base exists)."""

    epochs: int = setting(40, "passes over the train split")
    learning_rate: float = setting(1e-3, "peak learning rate")
    batch_size: int = setting(16, "lines per optimiser step")
    seed: int = setting(0, "random seed")


@dataclass
class PretrainSettings:
    """Pretraining of the compact recognizer on synthetic + real lines (`ocr-assets pretrain`, `pretrained_model`)."""

    synthetic_lines: int = setting(20000, "synthetic lines to render (held-out fonts excluded)")
    seed: int = setting(1, "random seed of the synthetic lines and the training order")
    gt_folders: list[str] = setting([], "ground-truth folders of real lines mixed in")
    real_repeat: int = setting(3, "how often each real line is repeated per epoch")
    epochs: int = setting(8, "passes over the mix")
    batch_size: int = setting(64, "lines per optimiser step")
    learning_rate: float = setting(1.5e-3, "peak learning rate")
    init: str | None = setting(None, "start from this model instead of from scratch")
    architecture: dict = setting({}, "overrides of CompactOCRConfig, e.g. {\"hidden_size\": 256} (from scratch only)")
    device: str = setting("auto", "auto, cpu or cuda")

    def __post_init__(self) -> None:
        if self.synthetic_lines < 0 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"synthetic_lines >= 0, epochs >= 1 and batch_size >= 1 are required; got "
                              f"{self.synthetic_lines}, {self.epochs}, {self.batch_size}")


@dataclass
class GateSettings:
    """When a fine-tuned challenger becomes champion (ocr_assets.evaluation.gate)."""

    min_gain: float = setting(0.0, "CER_norm the challenger must win by, against the champion or (first time) its base")
    register_model: bool = setting(True, "register the merged model in the MLflow registry")


# --- the environment, read here and nowhere else ---------------------------------------------------------

def data_root_url(env: dict | None = None) -> str:
    """$OCR_ASSETS_DATA_ROOT (a folder or any fsspec URL), else ./var under the working directory."""
    env = os.environ if env is None else env
    value = env.get(ENV_DATA_ROOT) or str(Path.cwd() / "var")
    return value if "://" in value else str(Path(value).expanduser().resolve())


def mlflow_uri_from_env(env: dict | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get(ENV_MLFLOW) or None


def trust_remote_code_from_env(env: dict | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(ENV_TRUST_REMOTE_CODE, "").strip().lower() in ("1", "true", "yes")


def shared_data_dir() -> Path | None:
    """The shared ground truth (`../shared/data` beside a developer checkout), or None on a user's machine."""
    explicit = os.environ.get(ENV_SHARED_DATA)
    if explicit:
        path = Path(explicit)
        return path if path.is_dir() else None
    here = Path(__file__).resolve().parents[1]
    candidate = here.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


# --- inference engine and its cache (issue 14) ----------------------------------------------------------------

ENV_RUNTIME = "OCR_ASSETS_RUNTIME"  # auto | onnx | onnx-int8 | onnx-fp32 | torch (ocr_assets.models.compact.runtime)
ENV_CACHE_DIR = "OCR_ASSETS_CACHE_DIR"  # exported ONNX graphs, keyed by the model's weights hash


def runtime_from_env(env: dict | None = None) -> str:
    """$OCR_ASSETS_RUNTIME, else auto (the fastest engine equal in accuracy)."""
    env = os.environ if env is None else env
    return env.get(ENV_RUNTIME, "").strip() or "auto"


def cache_dir(env: dict | None = None) -> Path:
    """$OCR_ASSETS_CACHE_DIR, else $XDG_CACHE_HOME/ocr_assets, else ~/.cache/ocr_assets."""
    env = os.environ if env is None else env
    if env.get(ENV_CACHE_DIR):
        return Path(env[ENV_CACHE_DIR]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "ocr_assets"


# --- monitoring and the correction loop (issue 13) -----------------------------------------------------------

ENV_MONITORING = "OCR_ASSETS_MONITORING"  # JSON overrides of MonitoringSettings, e.g. {"window_pages": 40}
ENV_CORRECTIONS = "OCR_ASSETS_CORRECTIONS"  # JSON overrides of CorrectionSettings, e.g. {"min_corrections": 50}
ENV_GOLDEN_DIR = "OCR_ASSETS_GOLDEN_DIR"  # a ground-truth folder of real lines for the golden set
ENV_ALERT_WEBHOOK = "OCR_ASSETS_ALERT_WEBHOOK"  # a URL that receives alerts as JSON (POST)


@dataclass
class MonitoringSettings:
    """Drift of incoming scans against a reference window, the golden-set re-evaluation, alerts (ocr_assets.monitoring)."""

    reference_pages: int = setting(20, "pages of the reference window: the first pages read after the reference was (re)set")
    window_pages: int = setting(20, "pages of the current window: the latest pages after the reference")
    min_window_pages: int = setting(3, "fewer pages in the current window: no comparison yet")
    p_value: float = setting(0.05, "a statistic drifts when the two-sample test (Evidently: K-S) gives p below this")
    warn_share: float = setting(0.25, "share of drifted statistics from which drift is a WARN")
    error_share: float = setting(0.5, "share of drifted statistics from which drift is an ERROR")
    char_js_warn: float = setting(0.25, "Jensen-Shannon distance of the character distributions from which drift is a WARN")
    char_js_error: float = setting(0.45, "Jensen-Shannon distance of the character distributions from which drift is an ERROR")
    review_lines: int = setting(50, "lines in the review queue (drifted scans first, least confident first)")
    golden_dir: str = setting("", "ground-truth folder of real lines for the golden set; empty: $OCR_ASSETS_GOLDEN_DIR, "
                                  "else synthetic lines")
    golden_lines: int = setting(120, "lines in the golden set (a fixed, seeded sample)")
    reevaluation_cron: str = setting("0 4 * * 1", "when the champion is re-scored on the golden set (cron; weekly)")
    cer_tolerance: float = setting(0.005, "re-evaluation fails when CER_norm worsens by more than this since the last one")
    alert_webhook: str = setting("", "URL that receives alerts as JSON; empty: $OCR_ASSETS_ALERT_WEBHOOK, else log only")

    def __post_init__(self) -> None:
        if min(self.reference_pages, self.window_pages, self.min_window_pages) < 1:
            raise ConfigError("reference_pages, window_pages and min_window_pages must be >= 1")
        if not 0 < self.warn_share <= self.error_share <= 1:
            raise ConfigError(f"need 0 < warn_share <= error_share <= 1; got {self.warn_share}, {self.error_share}")
        if not 0 < self.char_js_warn <= self.char_js_error <= 1:
            raise ConfigError(f"need 0 < char_js_warn <= char_js_error <= 1; got {self.char_js_warn}, {self.char_js_error}")


@dataclass
class CorrectionSettings:
    """People's corrections → a challenger fine-tuned from the champion, gated, promoted, the corpus re-read."""

    min_corrections: int = setting(30, "accepted corrections, new since the last challenger, needed to train one")
    heldout_fraction: float = setting(0.25, "share of the corrections held out for the gate (with the golden set)")
    epochs: int = setting(8, "passes over the corrected lines")
    learning_rate: float | None = setting(None, "peak learning rate; empty: the backend's default")
    rank: int = setting(16, "LoRA rank r")
    batch_size: int = setting(8, "lines per optimiser step")
    seed: int = setting(0, "random seed (held-out sample, training order)")
    min_gain: float = setting(0.0, "CER_norm the challenger must win by on the golden set plus held-out corrections")
    golden_tolerance: float | None = setting(None, "when set, also refuse a challenger whose golden-set CER_norm is worse "
                                                   "than the champion's by more than this (no forgetting of other books)")

    def __post_init__(self) -> None:
        if self.min_corrections < 2:
            raise ConfigError(f"min_corrections {self.min_corrections} must be >= 2 (one to train, one to hold out)")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"heldout_fraction {self.heldout_fraction} must lie strictly between 0 and 1")
        if self.epochs < 1 or self.batch_size < 1 or self.rank < 1:
            raise ConfigError("epochs, batch_size and rank must be >= 1")

    def finetune(self) -> FinetuneSettings:
        return FinetuneSettings(epochs=self.epochs, learning_rate=self.learning_rate, rank=self.rank,
                                alpha=2 * self.rank, batch_size=self.batch_size, seed=self.seed)


def _json_env(name: str, env: dict) -> dict:
    import json

    text = env.get(name, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"${name} is not valid JSON ({exc}); give an object such as {{\"window_pages\": 40}}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"${name} must be a JSON object, not {type(value).__name__}")
    return value


def monitoring_settings_from_env(env: dict | None = None, **overrides: Any) -> MonitoringSettings:
    """MonitoringSettings: defaults, then $OCR_ASSETS_MONITORING (JSON), $OCR_ASSETS_GOLDEN_DIR,
    $OCR_ASSETS_ALERT_WEBHOOK, then `overrides`."""
    env = os.environ if env is None else env
    data = _json_env(ENV_MONITORING, env)
    if env.get(ENV_GOLDEN_DIR):
        data.setdefault("golden_dir", env[ENV_GOLDEN_DIR])
    if env.get(ENV_ALERT_WEBHOOK):
        data.setdefault("alert_webhook", env[ENV_ALERT_WEBHOOK])
    return from_mapping(MonitoringSettings, {**data, **{k: v for k, v in overrides.items() if v is not None}})


def correction_settings_from_env(env: dict | None = None, **overrides: Any) -> CorrectionSettings:
    """CorrectionSettings: defaults, then $OCR_ASSETS_CORRECTIONS (JSON), then `overrides`."""
    env = os.environ if env is None else env
    data = _json_env(ENV_CORRECTIONS, env)
    return from_mapping(CorrectionSettings, {**data, **{k: v for k, v in overrides.items() if v is not None}})


# --- scale-out on Celery workers (issue 15; profile "cluster") ---------------------------------------------

ENV_CELERY_BROKER = "OCR_ASSETS_CELERY_BROKER"  # the Redis the orchestrators and workers share
ENV_CELERY_BACKEND = "OCR_ASSETS_CELERY_BACKEND"  # where step results go; empty: the broker
ENV_CELERY_REDELIVER_S = "OCR_ASSETS_CELERY_REDELIVER_S"  # a vanished worker's step goes to another after this


@dataclass
class CelerySettings:
    """The Celery executor and its workers (ocr_assets.defs.cluster); both sides build the app from these."""

    broker: str = setting("redis://127.0.0.1:6379/0", "Redis URL of the Celery broker")
    backend: str = setting("", "Redis URL of the result backend; empty: the broker")
    redeliver_s: int = setting(3600, "seconds after which a step whose worker vanished is given to another worker; "
                                     "must exceed the longest step, or a slow step runs twice")

    def __post_init__(self) -> None:
        for name in ("broker", "backend"):
            value = getattr(self, name)
            if value and not value.startswith(("redis://", "rediss://")):
                raise ConfigError(f"Celery {name} {value!r} is not a Redis URL; give one such as redis://127.0.0.1:6379/0")
        if int(self.redeliver_s) < 1:
            raise ConfigError(f"redeliver_s {self.redeliver_s} must be >= 1 second (default 3600)")


def celery_settings_from_env(env: dict | None = None) -> CelerySettings:
    """CelerySettings: defaults, then $OCR_ASSETS_CELERY_BROKER, $OCR_ASSETS_CELERY_BACKEND, $OCR_ASSETS_CELERY_REDELIVER_S."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if env.get(ENV_CELERY_BROKER):
        data["broker"] = env[ENV_CELERY_BROKER]
    if env.get(ENV_CELERY_BACKEND):
        data["backend"] = env[ENV_CELERY_BACKEND]
    if env.get(ENV_CELERY_REDELIVER_S):
        try:
            data["redeliver_s"] = int(env[ENV_CELERY_REDELIVER_S])
        except ValueError:
            raise ConfigError(f"${ENV_CELERY_REDELIVER_S}={env[ENV_CELERY_REDELIVER_S]!r} is not a whole number of seconds") from None
    return from_mapping(CelerySettings, data)
