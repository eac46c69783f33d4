"""Real services for the tests, started on 127.0.0.1 and stopped by the tests themselves."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server():
    """moto's S3-compatible server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}")
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- the cluster's services (issue 15): Redis, PostgreSQL, Celery workers, the daemon ------------------------

import glob
import json
import shutil
import signal
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _wait_port(port: int, proc: subprocess.Popen | None, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start on 127.0.0.1:{port}")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process started with start_new_session=True, with its children (its own process group, by id)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


class Redis:
    """Debian's redis-server on 127.0.0.1 with an append-only file (the broker's queue survives a restart)."""

    def __init__(self, folder: Path, port: int | None = None):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(exe):
            raise RuntimeError("redis-server is not installed; run: apt-get install redis-server")
        self.exe, self.folder, self.port = exe, Path(folder), port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        args = [self.exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes"]
        log = open(self.folder / "redis.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, self.proc, "redis-server")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)


@contextlib.contextmanager
def redis_server(folder: Path):
    server = Redis(folder).start()
    try:
        yield server
    finally:
        server.stop()


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed; run: apt-get install postgresql")
    return found


@contextlib.contextmanager
def postgres_server(user: str = "dagster", databases: tuple[str, ...] = ("dagster",)):
    """A throwaway PostgreSQL cluster (initdb + postgres) on 127.0.0.1; yields {host, port, user, password}.

    PostgreSQL refuses to run as root: as root the cluster belongs to `nobody` (runuser), in a fresh folder
    under the system temp dir that nobody can enter.
    """
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    folder = Path(tempfile.mkdtemp(prefix="ocr-assets-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        as_user = [shutil.which("runuser") or "/sbin/runuser", "-u", "nobody", "--"]
    data, port = folder / "data", free_port()
    subprocess.run(as_user + [initdb, "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=folder)
    log = open(folder / "postgres.log", "ab")
    proc = subprocess.Popen(as_user + [postgres, "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(folder),
                                       "-c", "fsync=off", "-c", "max_connections=200"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)
    try:
        _wait_port(port, proc, "postgres")
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in databases:
                cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()
        yield {"host": "127.0.0.1", "port": port, "user": user, "password": "unused", "proc": proc}
    finally:
        stop_process(proc, signal.SIGINT)  # PostgreSQL's fast shutdown
        shutil.rmtree(folder, ignore_errors=True)


def cluster_env(home: Path, pg: dict, redis: Redis, s3_endpoint: str, data_root: str, inbox: str,
                max_runs: int = 2, gpu_slots: int = 2, redeliver_s: int = 60) -> dict:
    """The environment every cluster process shares (daemon, orchestrators, workers) and a ready $DAGSTER_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    text = (REPO / "resources" / "dagster-cluster.yaml").read_text()
    text = text.replace("max_concurrent_runs: 4", f"max_concurrent_runs: {max_runs}")
    (home / "dagster.yaml").write_text(text.replace("default_limit: 2", f"default_limit: {gpu_slots}"))
    env = {**os.environ,
           "DAGSTER_HOME": str(home), "OCR_ASSETS_PROFILE": "cluster",
           "DAGSTER_PG_HOST": pg["host"], "DAGSTER_PG_PORT": str(pg["port"]), "DAGSTER_PG_USERNAME": pg["user"],
           "DAGSTER_PG_PASSWORD": pg["password"], "DAGSTER_PG_DB": "dagster",
           "OCR_ASSETS_CELERY_BROKER": redis.url, "OCR_ASSETS_CELERY_REDELIVER_S": str(redeliver_s),
           "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1",
           "OCR_ASSETS_DATA_ROOT": data_root, "OCR_ASSETS_INBOX": inbox, "OCR_ASSETS_INBOX_SETTLE_S": "0",
           "MLFLOW_TRACKING_URI": f"postgresql+psycopg2://{pg['user']}@{pg['host']}:{pg['port']}/mlflow",
           "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


def start_worker(name: str, env: dict, log: Path, queues: str = "dagster,gpu") -> subprocess.Popen:
    """One Celery worker (one step at a time) on the given queues; its own process group, stopped by its id."""
    exe = os.path.join(os.path.dirname(sys.executable), "celery")
    return subprocess.Popen([exe, "-A", "ocr_assets.defs.celery_app", "worker", "-Q", queues, "-n", f"{name}@%h",
                             "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
                            cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def start_daemon(env: dict, log: Path) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "dagster-daemon")
    return subprocess.Popen([exe, "run", "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def steps_by_worker(instance, run_ids) -> dict[str, list[str]]:
    """Celery worker name → the steps it started (from dagster-celery's "Executing steps" engine events)."""
    import dagster as dg

    found: dict[str, list[str]] = {}
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            meta = getattr(event.event_specific_data, "metadata", None) or {}
            worker = meta.get("Celery worker")
            if worker is not None:
                found.setdefault(str(getattr(worker, "value", worker)), []).append(event.step_key)
    return found


class LocalCluster:
    """PostgreSQL, Redis, an S3 server and Celery workers on 127.0.0.1, as scripts/cluster-demo.sh and the
    fault tests use them; `env` is what every process of the cluster gets."""

    def __init__(self, folder: Path, workers: int = 2, redeliver_s: int = 60, bucket: str = "ocr-assets",
                 max_runs: int = 2):
        self.folder, self.n_workers, self.redeliver_s, self.bucket = Path(folder), workers, redeliver_s, bucket
        self.max_runs = max_runs
        self.workers: dict[str, subprocess.Popen] = {}
        self.daemon: subprocess.Popen | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "LocalCluster":
        try:
            self.pg = self._stack.enter_context(postgres_server(databases=("dagster", "mlflow")))
            self.redis = Redis(self.folder / "redis").start()
            self._stack.callback(lambda: self.redis.stop())
            self.s3 = self._stack.enter_context(s3_server())
            self.data_root, self.inbox = f"s3://{self.bucket}/var", f"s3://{self.bucket}/inbox"
            self.env = cluster_env(self.folder / "home", self.pg, self.redis, self.s3, self.data_root, self.inbox,
                                   redeliver_s=self.redeliver_s, max_runs=self.max_runs)
            self.fs.mkdir(self.bucket)
            for i in range(1, self.n_workers + 1):
                self.start_worker(f"w{i}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.daemon is not None:
            stop_process(self.daemon)
        for proc in self.workers.values():
            stop_process(proc, signal.SIGTERM, timeout=20)
        self._stack.close()

    @property
    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(key="test", secret="test", client_kwargs={"endpoint_url": self.s3}, skip_instance_cache=True)

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def start_worker(self, name: str) -> subprocess.Popen:
        self.workers[name] = start_worker(name, self.env, self.log(name))
        deadline = time.monotonic() + 120
        while "ready." not in self.log(name).read_text(errors="replace"):
            if self.workers[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker {name} did not start:\n{self.log(name).read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        return self.workers[name]

    def kill_worker(self, name: str) -> None:
        """kill -9 the worker and its pool children (the host is gone)."""
        stop_process(self.workers[name], signal.SIGKILL)

    def start_daemon(self) -> subprocess.Popen:
        self.daemon = start_daemon(self.env, self.log("daemon"))
        return self.daemon

    def instance(self):
        import dagster as dg

        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # the instance's dagster.yaml reads DAGSTER_PG_* from the environment
        try:
            return dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def drop_pages(self, n: int, seed: int = 1000, dpi: int = 150) -> list[str]:
        """N synthetic printed pages (distinct seeds, so distinct content hashes) as PNGs in the inbox."""
        import io

        from ocr_assets.synth.pages import render_page

        names = []
        for i in range(n):
            buffer = io.BytesIO()
            render_page(seed + i, dpi=dpi).image.save(buffer, format="PNG", compress_level=3)
            name = f"page-{seed + i:05d}.png"
            self.fs.pipe(f"{self.inbox.removeprefix('s3://')}/{name}", buffer.getvalue())
            names.append(name)
        return names

    def corpus_summary(self) -> dict | None:
        path = f"{self.data_root.removeprefix('s3://')}/corpus/summary.json"
        try:
            return json.loads(self.fs.cat(path))
        except FileNotFoundError:
            return None

    def corpus_records(self) -> list[dict]:
        text = self.fs.cat(f"{self.data_root.removeprefix('s3://')}/corpus/corpus.jsonl").decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line]

    def corpus_text(self) -> str:
        return self.fs.cat(f"{self.data_root.removeprefix('s3://')}/corpus/corpus.txt").decode("utf-8")
