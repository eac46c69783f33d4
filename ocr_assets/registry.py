"""The MLflow model registry, and nothing else: register a model directory as the serving pyfunc, read and set
the aliases `challenger` / `champion`, download a registered model. Every call names its store (`uri`)."""

from __future__ import annotations

from pathlib import Path

from ocr_assets.errors import ModelNotFoundError, RegistryError

MODEL_NAME = "ocr-assets-recognizer"
CHAMPION, CHALLENGER = "champion", "challenger"


def model_uri(alias: str = CHAMPION, name: str = MODEL_NAME) -> str:
    """`models:/NAME@ALIAS`, the spelling every caller uses."""
    return f"models:/{name}@{alias}"


class Registry:
    """One MLflow store (tracking and registry on the same URI)."""

    def __init__(self, uri: str):
        self.uri = uri

    def client(self):
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def lock(self):
        """A lock around read-compare-move of an alias. A SQLite store gets an inter-process file lock next to the
        database (every process on this host that gates into it); other stores (a tracking server, PostgreSQL)
        get none here, and `promote_if_better` still refuses to move a champion that moved since it was scored."""
        return sqlite_lock(self.uri, "gate")

    def alias_version(self, alias: str, name: str = MODEL_NAME) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client().get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str, name: str = MODEL_NAME) -> None:
        self.client().set_registered_model_alias(name, alias, version)

    def register(self, model_dir: Path, metrics: dict[str, float], name: str = MODEL_NAME) -> str:
        """Log `model_dir` as the serving pyfunc in the active MLflow run, register it, tag it, alias it challenger."""
        import mlflow

        import ocr_assets
        from ocr_assets.serving.contract import serving_signature
        from ocr_assets.serving.pyfunc import OcrPyfuncModel

        client = self.client()
        info = mlflow.pyfunc.log_model(
            name="ocr_model",
            python_model=OcrPyfuncModel(),
            signature=serving_signature(),
            artifacts={"model_dir": str(model_dir)},
            registered_model_name=name,
            pip_requirements=pinned_requirements(),
            metadata={"ocr_assets_version": getattr(ocr_assets, "__version__", "0.1.0")},
        )
        version = str(info.registered_model_version)
        for key, value in metrics.items():
            client.set_model_version_tag(name, version, key, f"{value:.6f}")
        client.set_registered_model_alias(name, CHALLENGER, version)
        return version

    def download(self, uri: str) -> Path:
        """Local model directory behind `models:/NAME@ALIAS` (or `models:/NAME/VERSION`)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        self.client()
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        except MlflowException as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelNotFoundError(f"registry model {uri!r} not found in {self.uri}: {first}") from None
        candidates = [p.parent for p in local.rglob("config.json")]
        if not candidates:
            raise RegistryError(f"registry model {uri!r} holds no model directory (config.json)")
        return sorted(candidates, key=lambda p: len(p.parts))[0]


def pinned_requirements() -> list[str]:
    from importlib.metadata import version

    pins = ["torch", "transformers", "peft", "Pillow", "safetensors", "pandas", "numpy", "mlflow"]
    return [f"{p}=={version(p)}" for p in pins]


def sqlite_lock(uri: str, purpose: str):
    """An inter-process file lock beside a SQLite store (`<db>.<purpose>.lock`); no lock for other stores."""
    import contextlib

    if uri.startswith("sqlite:///"):
        from filelock import FileLock

        return FileLock(uri[len("sqlite:///"):] + f".{purpose}.lock", timeout=600)
    return contextlib.nullcontext()
