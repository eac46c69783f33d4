"""REST serving of a registered OCR model: MLflow's scoring app under uvicorn, loopback only unless told otherwise.

What runs (read from mlflow/pyfunc/backend.py and mlflow/pyfunc/scoring_server/): `mlflow models serve
--env-manager local` downloads the model and execs `uvicorn mlflow.pyfunc.scoring_server.app:app`, a FastAPI app
with GET /ping and /health (200 once the model is loaded), GET /version and POST /invocations. We do the same
two steps ourselves (`prepare_model`, then `python -m uvicorn --factory ocr_assets.serving.app:create_app`) so
that the app's error answers carry one clear line instead of MLflow's `stack_trace` (ocr_assets.serving.app).
The body is JSON (`dataframe_split`, `dataframe_records`, `instances`, `inputs`), CSV or Parquet; our pyfunc
(ocr_assets.serving.pyfunc) takes the columns `image` (base64 PNG/JPEG/TIFF, required) and `kind` (line | page |
auto, optional) and answers {"predictions": [{"text", "confidence", "error", "lines"}, ...]}.

The registry is the Storage's (`Storage.from_env().mlflow_uri()`), and a `models:/` URI is refused when no
store exists, so serving never creates an empty mlflow.db. A model whose loading runs its own code needs the
explicit opt-in (`trust_remote_code=True`, `ocr-assets serve --trust-remote-code`), passed to the server process
as $OCR_ASSETS_TRUST_REMOTE_CODE.

Request size: neither the scoring app nor uvicorn has a body-size setting (uvicorn's limits are on
concurrency, request count and header size; MLflow's only serving knob is the request timeout,
MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT, answered with HTTP 504). The app reads the whole body into memory
(`await request.body()`) and parses it before the model runs, so the caps are the model's:
MAX_IMAGE_BASE64_CHARS per row (that row gets an `error`, the others are read) and MAX_REQUEST_BASE64_CHARS per
request (HTTP 400 with a one-line message, nothing read). A huge body therefore still costs the server its memory
while it is parsed; put a proxy with a body limit (e.g. nginx `client_max_body_size`) in front before exposing
the port. See docs/ARCHITECTURE.md, "Serving".
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ocr_assets.errors import ModelNotFoundError, ServingError, UsageError
from ocr_assets.registry import model_uri as registry_model_uri
from ocr_assets.settings import ENV_TRUST_REMOTE_CODE

MODEL_PATH_ENV = "__pyfunc_model_path__"  # mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH
TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"
DEFAULT_MODEL_URI = registry_model_uri()  # the champion
DEFAULT_PORT = 5001
LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool = False) -> str:
    """`host` when it is a loopback address, or any host with `allow_remote`; else UsageError (a ValueError)."""
    if not allow_remote and not is_loopback(host):
        raise UsageError(f"refusing to bind {host!r}: the OCR server listens on loopback (127.0.0.1) only; "
                         "pass allow_remote / --allow-remote to bind another interface (put a proxy with a body "
                         "size limit in front)")
    return host


def serve_command(port: int, host: str = LOOPBACK, workers: int = 1, allow_remote: bool = False) -> list[str]:
    """argv of the server: uvicorn with the guarded scoring app, run with this interpreter (so the venv's)."""
    check_host(host, allow_remote)
    if not 0 < int(port) < 65536:
        raise UsageError(f"port must be 1-65535, got {port!r}")
    if int(workers) < 1:
        raise UsageError(f"workers must be at least 1, got {workers!r}")
    return [sys.executable, "-m", "uvicorn", "--factory", "ocr_assets.serving.app:create_app",
            "--host", host, "--port", str(int(port)), "--workers", str(int(workers))]


def registry_uri() -> str | None:
    """The Storage's MLflow store, or None when there is none yet (nothing is created by asking)."""
    from ocr_assets.storage import Storage

    storage = Storage.from_env()
    return storage.mlflow_uri() if storage.has_local_mlflow_store() else None


def prepare_model(model_uri: str, dst: Path) -> Path:
    """The local folder of the MLflow pyfunc `model_uri` (registry URI or folder), downloaded under `dst`."""
    from mlflow.exceptions import MlflowException

    text = str(model_uri)
    if "://" not in text and not text.startswith("models:/"):
        path = Path(text).expanduser()
        if not (path / "MLmodel").is_file():
            raise ModelNotFoundError(f"{text!r} is not an MLflow model folder (no MLmodel file); give a registry URI "
                                     "such as models:/ocr-assets-recognizer@champion")
        return path.resolve()
    uri = registry_uri()
    if uri is None:
        raise ModelNotFoundError(f"{text!r} names a registry model but there is no MLflow store here; set "
                                 "MLFLOW_TRACKING_URI or run the training job first (./scripts/up.sh)")
    import mlflow

    from ocr_assets.registry import Registry

    Registry(uri).client()  # MLflow resolves models:/ through its global registry URI: this store's, not ./mlflow.db
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(dst)))
    except MlflowException as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(f"registry model {text!r} not found: {first}") from None


def server_env(model_path: Path, timeout: int | None = None, trust_remote_code: bool = False,
               base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the server: the model folder, the Storage's registry, the remote-code opt-in (only when
    given here), the request timeout, and this interpreter's bin first on PATH."""
    env = dict(os.environ if base is None else base)
    env[MODEL_PATH_ENV] = str(model_path)
    uri = registry_uri()
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
        env.setdefault("MLFLOW_REGISTRY_URI", uri)
    if trust_remote_code:
        env[ENV_TRUST_REMOTE_CODE] = "1"
    else:
        env.pop(ENV_TRUST_REMOTE_CODE, None)  # an opt-in is given per server, never inherited by accident
    if timeout is not None:
        env[TIMEOUT_ENV] = str(int(timeout))
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]) if env.get("PATH") else bin_dir
    for name in ("MLFLOW_HOST", "MLFLOW_PORT"):  # nothing may override the checked host / port
        env.pop(name, None)
    return env


def start_server(model_uri: str = DEFAULT_MODEL_URI, port: int = DEFAULT_PORT, host: str = LOOPBACK,
                 workers: int = 1, timeout: int | None = None, allow_remote: bool = False,
                 trust_remote_code: bool = False, stdout=None, stderr=None) -> subprocess.Popen:
    """Fetch the model, start the server in its own process group (stop it with `stop_server`); returns once
    the process is started, before the model is loaded (`wait_ready`)."""
    cmd = serve_command(port, host, workers, allow_remote)
    scratch = Path(tempfile.mkdtemp(prefix="ocr-assets-serve-"))
    try:
        model_path = prepare_model(model_uri, scratch)
        process = subprocess.Popen(cmd, env=server_env(model_path, timeout, trust_remote_code), stdout=stdout,
                                   stderr=stderr, start_new_session=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    process.scratch_dir = scratch  # removed by stop_server
    return process


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def wait_ready(url: str, timeout: float = 120.0, process: subprocess.Popen | None = None,
               interval: float = 0.5) -> None:
    """Poll `url`/ping until it answers 200; ServingError on timeout or when `process` exits first."""
    deadline = time.monotonic() + timeout
    ping = url.rstrip("/") + "/ping"
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServingError(f"the server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(ping, timeout=5) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(interval)
    raise ServingError(f"{ping} not ready after {timeout:.0f} s ({last})")


def stop_server(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the server's process group (bash, uvicorn and its workers), SIGKILL after `grace` seconds."""
    import signal

    if process.poll() is not None:
        _remove_scratch(process)
        return
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        _remove_scratch(process)
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Workers may outlive the parent for a moment; make sure the group is gone.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _remove_scratch(process)


def _remove_scratch(process: subprocess.Popen) -> None:
    scratch = getattr(process, "scratch_dir", None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
