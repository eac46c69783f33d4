"""Shared test hygiene: MLflow's process-wide tracking/registry URIs (which `mlflow.set_tracking_uri` also writes
into os.environ, where subprocesses inherit them) are put back after every test, so no test leaks a store into
the next one or into the working folder."""

import os

import pytest

_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _restore_mlflow_uris():
    saved = {k: os.environ.get(k) for k in _ENV}
    yield
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking
    import mlflow.tracking._model_registry.utils as registry

    # A failed Dagster run leaves its MLflow run active; end it against its own store now, not at interpreter
    # exit against whatever URI is set then (MLflow's default is ./mlflow.db in the working folder).
    while mlflow.active_run() is not None:
        try:
            mlflow.end_run(status="FAILED")
        except Exception:  # noqa: BLE001 - its store may be gone with the test's tmp folder
            break
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tracking._tracking_uri = saved["MLFLOW_TRACKING_URI"]
    registry._registry_uri = saved["MLFLOW_REGISTRY_URI"]
