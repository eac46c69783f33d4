"""REST serving for real: the shipped model registered in a sqlite MLflow registry, `mlflow models serve` on
127.0.0.1, rendered Arabic lines and a rendered page POSTed to /invocations."""

import base64
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from ocr_assets import metrics

MODEL_URI = "models:/ocr-assets-recognizer@champion"
LINE = "قال أبو عثمان في كتاب الحيوان"
PAGE = ["حدثنا محمد بن عبد الله سنة ٢٤١", "رضي الله عنه وعن أبيه", "وكان ذلك في أيام الخليفة المأمون",
        "فهذا باب من العلم كما قال"]
# Measured through the server with the shipped model (Amiri, clean, 48 px): line CER 0.0, page CER ~0.009
# (one digit). The bounds leave room for a retrained shipped model without letting garbage through.
LINE_CER_MAX = 0.08
PAGE_CER_MAX = 0.08


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _post(url: str, body: dict, timeout: float = 240) -> tuple[int, dict | str]:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(url + "/invocations", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text


@pytest.fixture(scope="module")
def rendered():
    from ocr_assets.synth.fonts import discover_fonts
    from ocr_assets.synth.lines import render_line

    fonts = {f.name: f for f in discover_fonts()}
    if "Amiri-Regular" not in fonts:
        pytest.skip("Amiri is not installed (pip: fontpkg-amiri)")
    font, rng = fonts["Amiri-Regular"], random.Random(3)
    line = render_line(LINE, font, rng, height=48, degrade=False)
    page_lines = [render_line(t, font, rng, height=48, degrade=False) for t in PAGE]
    gap, margin = 24, 30
    width = max(im.width for im in page_lines) + 2 * margin
    page = Image.new("L", (width, sum(im.height for im in page_lines) + gap * (len(page_lines) + 1)), 255)
    y = gap
    for im in page_lines:
        page.paste(im, (width - margin - im.width, y))  # right-aligned, as an Arabic page is set
        y += im.height + gap
    return line, page


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory):
    """A temp data root with the shipped model registered as champion in its sqlite registry."""
    import mlflow

    from ocr_assets.models.resolve import shipped_model_dir
    from ocr_assets.registry import CHAMPION, Registry
    from ocr_assets.storage import Storage

    root = tmp_path_factory.mktemp("serving")
    previous_uri, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OCR_ASSETS_DATA_ROOT", str(root / "var"))
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_HOST", "MLFLOW_PORT",
                     "OCR_ASSETS_TRUST_REMOTE_CODE"):
            mp.delenv(name, raising=False)
        mp.chdir(root)  # nothing MLflow writes by default lands in the checkout
        try:
            registry = Registry(Storage.from_env().mlflow_uri())  # sqlite under the temp data root
            registry.client()
            experiment = mlflow.create_experiment("serving-test", artifact_location=(root / "artifacts").as_uri())
            with mlflow.start_run(experiment_id=experiment):
                version = registry.register(shipped_model_dir(), {"test_cer_norm": 0.02})
            registry.set_alias(CHAMPION, version)
            yield root
        finally:
            mlflow.set_tracking_uri(previous_uri)
            mlflow.set_registry_uri(previous_registry)


@pytest.fixture(scope="module")
def server(registry_root):
    from ocr_assets.serving.server import start_server, stop_server, wait_ready

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = registry_root / "server.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = start_server(MODEL_URI, port, timeout=300, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_ready(url, timeout=300, process=process)
            except Exception as exc:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
                pytest.fail(f"server did not come up: {exc}\n{tail}")
            print(f"server ready in {time.monotonic() - started:.1f} s")
            yield url
        finally:
            stop_server(process)
    assert process.poll() is not None


@pytest.mark.timeout(600)
def test_line_and_page_rows_are_read(server, rendered):
    line, page = rendered
    t0 = time.monotonic()
    status, body = _post(server, {"dataframe_split": {"columns": ["image", "kind"],
                                                      "data": [[_b64_png(line), None], [_b64_png(page), "auto"]]}})
    print(f"line + page request: {time.monotonic() - t0:.2f} s")
    assert status == 200, body
    line_row, page_row = body["predictions"]
    assert set(line_row) == {"text", "confidence", "error", "lines"}

    # auto: the 48 px strip is a line, the stacked block a page.
    assert not line_row["error"] and not page_row["error"]
    line_cer = metrics.cer([LINE], [line_row["text"]])
    page_cer = metrics.cer(["\n".join(PAGE)], [page_row["text"]])
    print(f"served CER: line {line_cer:.4f}, page {page_cer:.4f}")
    assert line_cer < LINE_CER_MAX, line_row["text"]
    assert page_cer < PAGE_CER_MAX, page_row["text"]

    entries = json.loads(line_row["lines"])
    assert len(entries) == 1 and entries[0]["box"] == [0, 0, line.width, line.height]
    assert entries[0]["text"] == line_row["text"]

    lines = json.loads(page_row["lines"])
    assert len(lines) == len(PAGE)
    assert page_row["text"].split("\n") == [e["text"] for e in lines]
    tops = [e["box"][1] for e in lines]
    assert tops == sorted(tops)
    for e in lines:
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= page.width and 0 <= y0 < y1 <= page.height
        assert 0.0 <= e["confidence"] <= 1.0
    chars = sum(len(e["text"]) for e in lines)
    weighted = sum(e["confidence"] * len(e["text"]) for e in lines) / chars
    assert page_row["confidence"] == pytest.approx(weighted, abs=1e-9)
    for row in (line_row, page_row):
        assert 0.0 < row["confidence"] <= 1.0

    # An explicit kind wins over the shape rule: the line read as a page is still one line.
    status, body = _post(server, {"dataframe_records": [{"image": _b64_png(line), "kind": "page"}]})
    assert status == 200, body
    assert len(json.loads(body["predictions"][0]["lines"])) == 1
    assert metrics.cer([LINE], [body["predictions"][0]["text"]]) < LINE_CER_MAX


@pytest.mark.timeout(600)
def test_a_bad_row_gets_its_error_and_the_others_are_read(server, rendered):
    from ocr_assets.serving.contract import MAX_IMAGE_BASE64_CHARS

    line, _ = rendered
    good = _b64_png(line)
    records = [
        {"image": "not base64!"},
        {"image": good},
        {"image": "A" * (MAX_IMAGE_BASE64_CHARS + 4)},  # over the per-row cap
        {"image": good, "kind": "poster"},
        {"image": base64.b64encode(b"not an image at all").decode()},
        {"image": _b64_png(Image.new("L", (600, 800), 255))},  # a blank page: no lines, and no error either
    ]
    status, body = _post(server, {"dataframe_records": records})
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == len(records)
    assert "unreadable image" in rows[0]["error"] and rows[0]["text"] == "" and rows[0]["confidence"] == 0.0
    assert not rows[1]["error"] and metrics.cer([LINE], [rows[1]["text"]]) < LINE_CER_MAX
    assert "too large" in rows[2]["error"] and rows[2]["text"] == ""
    assert "kind must be one of" in rows[3]["error"]
    assert "unreadable image" in rows[4]["error"]
    assert rows[5]["error"] is None and rows[5]["text"] == "" and rows[5]["confidence"] == 0.0
    for i in (0, 2, 3, 4, 5):
        assert json.loads(rows[i]["lines"]) == []


def _is_clean(body) -> bool:
    """An error answer a client may see: a message, and no stack trace or server path."""
    text = json.dumps(body) if isinstance(body, dict) else str(body)
    return "Traceback" not in text and 'File \\"' not in text and 'File "' not in text and "stack_trace" not in text


@pytest.mark.timeout(600)
def test_an_over_cap_request_is_refused_as_a_whole_in_one_line(server):
    from ocr_assets.serving.contract import MAX_IMAGE_BASE64_CHARS, MAX_REQUEST_BASE64_CHARS

    rows = MAX_REQUEST_BASE64_CHARS // MAX_IMAGE_BASE64_CHARS + 1  # each row under its own cap, the sum over
    blob = "A" * MAX_IMAGE_BASE64_CHARS
    status, body = _post(server, {"dataframe_split": {"columns": ["image"], "data": [[blob]] * rows}})
    assert status == 400, body
    assert isinstance(body, dict) and body["message"].startswith("request too large:"), body
    assert "\n" not in body["message"] and str(MAX_REQUEST_BASE64_CHARS) in body["message"]
    assert _is_clean(body), body
    # A request without the image column: refused with MLflow's reason, no trace either.
    status, body = _post(server, {"dataframe_records": [{"kind": "line"}]})
    assert status == 400 and _is_clean(body), body
    assert "image" in body["message"] and "\n" not in body["message"], body
    # A body that is not JSON: MLflow's reason, without the body echoed back.
    req = urllib.request.Request(server + "/invocations", data=b"{not json " + b"x" * 5000, method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=60)
    body = json.loads(refused.value.read())
    assert refused.value.code == 400 and _is_clean(body) and "JSON" in body["message"], body
    assert "xxxx" not in body["message"]
    # The server is still there afterwards.
    with urllib.request.urlopen(server + "/ping", timeout=10) as resp:
        assert resp.status == 200


def test_serving_binds_loopback_unless_told_otherwise():
    from ocr_assets.cli import main
    from ocr_assets.serving.server import serve_command

    cmd = serve_command(5001)
    assert cmd[1:] == ["-m", "uvicorn", "--factory", "ocr_assets.serving.app:create_app",
                       "--host", "127.0.0.1", "--port", "5001", "--workers", "1"]
    assert serve_command(5001, host="::1")[cmd.index("--host") + 1] == "::1"
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(ValueError, match="loopback"):
            serve_command(5001, host=host)
    assert "0.0.0.0" in serve_command(5001, host="0.0.0.0", allow_remote=True)
    assert main(["serve", "--host", "0.0.0.0", "--port", "5001"]) == 2  # refused before anything starts


@pytest.mark.timeout(600)
def test_cli_serve_answers_and_stops_on_sigterm(registry_root, rendered):
    """`ocr-assets serve` end to end: ready line on stderr, a line read over HTTP, SIGTERM takes the server down."""
    from ocr_assets.serving.server import wait_ready

    line, _ = rendered
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OCR_ASSETS_DATA_ROOT=str(registry_root / "var"))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    err_path = registry_root / "cli-serve.err"
    server_pid = None
    with open(err_path, "wb") as err:
        cli = subprocess.Popen([sys.executable, "-m", "ocr_assets.cli", "serve", "--port", str(port)], env=env,
                               cwd=registry_root, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            wait_ready(url, timeout=300, process=cli)
            status, body = _post(url, {"dataframe_records": [{"image": _b64_png(line), "kind": "line"}]})
            assert status == 200, body
            assert metrics.cer([LINE], [body["predictions"][0]["text"]]) < LINE_CER_MAX
            deadline = time.monotonic() + 30
            while "server pid" not in err_path.read_text(errors="replace") and time.monotonic() < deadline:
                time.sleep(0.2)
            text = err_path.read_text(errors="replace")
            assert f"serving {MODEL_URI} at {url}/invocations" in text, text
            server_pid = int(text.split("server pid ")[1].split(";")[0])
            cli.send_signal(signal.SIGTERM)
            assert cli.wait(timeout=60) == 0
            with pytest.raises(OSError):  # nothing listens any more
                urllib.request.urlopen(url + "/ping", timeout=5)
            # The registry is the data root's: no stray store in the working folder.
            assert sorted(registry_root.rglob("mlflow.db")) == [registry_root / "var" / "mlflow.db"]
        finally:
            for pid in (cli.pid, server_pid):  # each ran in its own process group
                if pid is None:
                    continue
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            cli.wait(timeout=30)


def test_decoded_pixels_per_request_are_capped_row_by_row():
    """A few hundred bytes of blank PNG decode to 36 MP: past the request's pixel budget a row gets an error
    instead of being held in memory, and the rows before it are still read."""
    import pandas as pd

    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.serving.contract import MAX_REQUEST_PIXELS
    from ocr_assets.serving.pyfunc import OcrPyfuncModel

    buf = io.BytesIO()
    Image.new("L", (6000, 6000), 255).save(buf, format="PNG")
    blank = base64.b64encode(buf.getvalue()).decode()
    assert len(blank) < 200_000  # tiny on the wire
    rows = MAX_REQUEST_PIXELS // (6000 * 6000) + 1
    model = OcrPyfuncModel()
    model.recognizer = load_recognizer(None, device="cpu")
    out = model.predict(None, pd.DataFrame({"image": [blank] * rows, "kind": ["line"] * rows}))
    errors = out["error"].tolist()
    assert all(e is None for e in errors[:-1]) and "pixel budget" in errors[-1]


def test_serve_without_a_registry_is_one_line_and_creates_no_store(tmp_path):
    env = dict(os.environ, OCR_ASSETS_DATA_ROOT=str(tmp_path / "var"))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "ocr_assets.cli", "serve", "--port", str(_free_port())], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("ocr-assets: error:") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no MLflow store" in done.stderr
    assert not list(tmp_path.rglob("mlflow.db"))


def test_the_remote_code_opt_in_reaches_the_server_only_when_given(tmp_path, monkeypatch):
    from ocr_assets.serving.server import MODEL_PATH_ENV, server_env
    from ocr_assets.settings import ENV_TRUST_REMOTE_CODE, trust_remote_code_from_env

    monkeypatch.setenv("OCR_ASSETS_DATA_ROOT", str(tmp_path / "var"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    given = server_env(tmp_path, trust_remote_code=True)
    assert trust_remote_code_from_env(given) and given[MODEL_PATH_ENV] == str(tmp_path)
    monkeypatch.setenv(ENV_TRUST_REMOTE_CODE, "1")  # inherited from the shell: not an opt-in for this server
    assert not trust_remote_code_from_env(server_env(tmp_path))
    assert "MLFLOW_TRACKING_URI" not in server_env(tmp_path)  # no store yet: none is named, none created
    assert not list(tmp_path.rglob("mlflow.db"))
