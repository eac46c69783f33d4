"""REST serving of a registered OCR model through `mlflow models serve` (loopback only unless told otherwise).

What MLflow 3 runs (read from mlflow/pyfunc/backend.py and mlflow/pyfunc/scoring_server/): `mlflow models
serve --env-manager local` execs `uvicorn ... mlflow.pyfunc.scoring_server.app:app`, a FastAPI app with
GET /ping and /health (200 once the model is loaded), GET /version and POST /invocations. The body is JSON
(`dataframe_split`, `dataframe_records`, `instances`, `inputs`), CSV or Parquet; our pyfunc takes the columns
`image` (base64 PNG/JPEG/TIFF, required) and `kind` (line | page | auto, optional) and answers
{"predictions": [{"text", "confidence", "error", "lines"}, ...]}; see `ocr_assets.registry.OcrPyfuncModel`.

Request size: neither the scoring server nor uvicorn has a body-size setting (uvicorn's limits are on
concurrency, request count and header size; MLflow's only serving knob is the request timeout,
MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT / `-t`, answered with HTTP 504). The app reads the whole body into memory
(`await request.body()`) and parses it before the model runs, so the caps are the model's:
MAX_IMAGE_BASE64_CHARS per row (that row gets an `error`, the others are read) and MAX_REQUEST_BASE64_CHARS per
request (HTTP 400, nothing read). A huge body therefore still costs the server its memory while it is parsed;
put a proxy with a body limit (e.g. nginx `client_max_body_size`) in front before exposing the port.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from ocr_assets.errors import ServingError

DEFAULT_MODEL_URI = "models:/ocr-assets-recognizer@champion"
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
    """`host` when it is a loopback address, or any host with `allow_remote`; else ValueError."""
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"refusing to bind {host!r}: the OCR server listens on loopback (127.0.0.1) only; "
                         "pass allow_remote / --allow-remote to bind another interface (put a proxy with a body "
                         "size limit in front)")
    return host


def serve_command(model_uri: str, port: int, host: str = LOOPBACK, workers: int = 1,
                  timeout: int | None = None, allow_remote: bool = False) -> list[str]:
    """argv of `mlflow models serve` for `model_uri` (run with this interpreter, so the venv's mlflow)."""
    check_host(host, allow_remote)
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_uri), "--env-manager", "local",
           "-h", host, "-p", str(int(port)), "-w", str(int(workers))]
    if timeout is not None:
        cmd += ["-t", str(int(timeout))]
    return cmd


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server: this project's registry, and this interpreter's bin first on PATH (MLflow
    starts `uvicorn` by name through bash, so an unactivated venv would otherwise miss it)."""
    from ocr_assets.settings import mlflow_uri

    env = dict(os.environ if base is None else base)
    env.setdefault("MLFLOW_TRACKING_URI", mlflow_uri())
    env.setdefault("MLFLOW_REGISTRY_URI", env["MLFLOW_TRACKING_URI"])
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]) if env.get("PATH") else bin_dir
    # MLFLOW_HOST / MLFLOW_PORT would only matter without -h / -p; drop them so nothing overrides the check.
    env.pop("MLFLOW_HOST", None)
    env.pop("MLFLOW_PORT", None)
    return env


def start_server(model_uri: str = DEFAULT_MODEL_URI, port: int = DEFAULT_PORT, host: str = LOOPBACK,
                 workers: int = 1, timeout: int | None = None, allow_remote: bool = False,
                 stdout=None, stderr=None) -> subprocess.Popen:
    """Start the server in its own process group (stop it with `stop_server`); returns at once."""
    cmd = serve_command(model_uri, port, host, workers, timeout, allow_remote)
    return subprocess.Popen(cmd, env=server_env(), stdout=stdout, stderr=stderr, start_new_session=True)


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
        return
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
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
