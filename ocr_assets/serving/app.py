"""The ASGI app the server runs: MLflow's scoring app, with error answers a client can read and nothing more.

MLflow's scoring server answers an exception in the model with `{"error_code", "message", "stack_trace"}`:
the stack trace names server paths and code, and MLflow has no setting to leave it out (mlflow 3:
`scoring_server.invocations` adds `stack_trace=traceback.format_exc()` for any non-MLflow exception, and prefixes
the message of an MlflowException with a dump of the input). `create_app` wraps `invocations` so that every
error answer keeps its HTTP status and error code but carries one clear line: the refusal's own message for a
`RequestRefused` (serving/contract.py), MLflow's own reason for a bad payload, a generic line otherwise. The full
traceback goes to the server's log, never to the client. See docs/ARCHITECTURE.md, "Serving".

Run by `ocr_assets.serving.server` as `python -m uvicorn --factory ocr_assets.serving.app:create_app` with the
pyfunc's local folder in `__pyfunc_model_path__` (what `mlflow models serve` sets for its own app).
"""

from __future__ import annotations

import logging
import os

from ocr_assets.serving.contract import RequestRefused

_log = logging.getLogger("ocr_assets.serving")
MAX_MESSAGE_CHARS = 400
GENERIC = "the model could not read this request; the server log has the details"


def public_message(exc: BaseException) -> str:
    """One line for the client: no traceback, no input dump, no server paths."""
    from mlflow.exceptions import MlflowException

    cause = exc.__cause__ or exc.__context__
    while cause is not None and not isinstance(cause, RequestRefused):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, RequestRefused):
        text = str(cause)
    elif isinstance(exc, RequestRefused):
        text = str(exc)
    elif isinstance(exc, MlflowException) and not exc.json_kwargs.get("stack_trace"):
        # MLflow's own refusal of a payload (bad JSON, missing column): keep its reason, not the input it echoes
        # ("Failed to predict data '<data>'. Error: <reason>", "... Input: <body>").
        text = exc.message
        if text.startswith("Failed to predict data"):
            text = text.rsplit("Error: ", 1)[-1]
        text = text.split("\nInput:", 1)[0]
    else:
        text = GENERIC
    text = " ".join(text.split())
    if "Traceback" in text or 'File "' in text:
        text = GENERIC
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def public_error(exc: BaseException):
    """An MlflowException with the status and error code of `exc` (400 for a refused request, else 500) and
    only `public_message(exc)` in its JSON."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST, INTERNAL_ERROR, ErrorCode

    if isinstance(exc, MlflowException):
        code = ErrorCode.Value(exc.error_code)
    else:
        code = BAD_REQUEST if isinstance(exc, RequestRefused) else INTERNAL_ERROR
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, RequestRefused):
        code = BAD_REQUEST
    return MlflowException(public_message(exc), error_code=code)


def _guarded(invocations):
    def guarded(*args, **kwargs):
        try:
            return invocations(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every error answer goes through public_error
            _log.warning("request failed: %s", exc, exc_info=not isinstance(exc.__context__, RequestRefused))
            raise public_error(exc) from None

    guarded.__wrapped__ = invocations
    return guarded


def create_app():
    """MLflow's scoring app for the pyfunc in $__pyfunc_model_path__, with guarded error answers."""
    from mlflow.pyfunc import scoring_server

    if not hasattr(scoring_server.invocations, "__wrapped__"):
        # `transformation` (the POST /invocations handler) looks `invocations` up in its module at call time.
        scoring_server.invocations = _guarded(scoring_server.invocations)
    model = scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])
    return scoring_server.init(model)
