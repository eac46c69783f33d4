"""Where the platform keeps its files: one data root, a local folder or any fsspec URL (`s3://bucket/prefix`).

Everything the assets and the CLI write (datasets, models, evaluations, the corpus) goes through a `Storage`.
Library functions take a Storage (or plain paths) as an argument and never read the environment; the CLI builds
one with `Storage.from_env()`, the Dagster layer holds one as the `storage` resource (ocr_assets.defs.resources).

Models are directories that torch loads from local disk: `local_dir` gives a local copy (the folder itself when
the root is local, a cache download otherwise) and `publish_dir` uploads a finished local directory. Every write
is atomic: readers never see half a file, and a killed writer leaves no half artifact under its final name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import fsspec

from ocr_assets.errors import StorageError


def _clean(part: str) -> str:
    part = str(part).strip("/")
    if not part or part in (".", "..") or "\\" in part or "/../" in f"/{part}/":
        raise StorageError(f"storage path part {part!r} must be a plain relative name such as 'datasets/x.parquet'")
    return part


def remote_options(url: str, options: dict | None = None) -> dict:
    """fsspec options for `url`: an S3 endpoint given only by $AWS_ENDPOINT_URL is made explicit, so fsspec's
    cache of filesystem instances (keyed by the options, not the environment) never hands back one that talks to
    another endpoint (a server since stopped, another test's)."""
    options = dict(options or {})
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url.startswith(("s3://", "s3a://")) and endpoint and "endpoint_url" not in options \
            and "endpoint_url" not in options.get("client_kwargs", {}):
        options["endpoint_url"] = endpoint
    return options


class Storage:
    """A data root: `url(*parts)` names a file under it; read/write helpers work the same locally and on S3."""

    def __init__(self, root: str | Path, *, cache_dir: str | Path | None = None, storage_options: dict | None = None):
        text = str(root)
        self.root = text if "://" in text else str(Path(text).expanduser().resolve())
        self.is_local = "://" not in self.root or self.root.startswith("file://")
        self.storage_options = remote_options(str(root), storage_options)
        self._fs = None
        self._cache = Path(cache_dir) if cache_dir else None

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Storage":
        from ocr_assets.settings import data_root_url

        return cls(data_root_url(env))

    def mlflow_uri(self) -> str:
        """The MLflow store that goes with this root: $MLFLOW_TRACKING_URI, else sqlite under a local root."""
        from ocr_assets.settings import mlflow_uri_from_env

        explicit = mlflow_uri_from_env()
        if explicit:
            return explicit
        if not self.is_local:
            raise StorageError(f"the data root {self.root!r} is remote: set MLFLOW_TRACKING_URI (or the profile's "
                               "mlflow_tracking_uri) to a tracking server")
        return f"sqlite:///{self.url('mlflow.db')}"

    def has_local_mlflow_store(self) -> bool:
        """Whether a registry could hold anything: an explicit tracking URI, or the sqlite file already exists."""
        from ocr_assets.settings import mlflow_uri_from_env

        return bool(mlflow_uri_from_env()) or (self.is_local and Path(self.url("mlflow.db")).is_file())

    # --- names -------------------------------------------------------------------------------------------
    @property
    def fs(self):
        if self._fs is None:
            self._fs, _ = fsspec.core.url_to_fs(self.root, **self.storage_options)
        return self._fs

    @property
    def _base(self) -> str:
        return fsspec.core.url_to_fs(self.root, **self.storage_options)[1] if not self.is_local else self.root

    def url(self, *parts: str) -> str:
        """The full name of a file under the root (a local path, or `s3://...`)."""
        rel = "/".join(_clean(p) for p in parts)
        if self.is_local:
            return str(Path(self.root.removeprefix("file://")) / rel)
        return f"{self.root.rstrip('/')}/{rel}"

    def relative(self, url: str) -> str:
        """The path of `url` under the root ('' for the root itself); an error for a name outside it."""
        root = self.url("x")[:-1]
        if not url.startswith(root):
            raise StorageError(f"{url!r} is not under the data root {self.root!r}")
        return url[len(root):]

    def _path(self, url: str) -> str:
        """The filesystem's own name for a URL of this storage."""
        return url if self.is_local else fsspec.core.url_to_fs(url, **self.storage_options)[1]

    def local_path(self, *parts: str) -> Path:
        """A local path under a local root (for tools that need one); an error on a remote root."""
        if not self.is_local:
            raise StorageError(f"the data root {self.root!r} is remote; use the Storage read/write helpers")
        path = Path(self.url(*parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # --- files -------------------------------------------------------------------------------------------
    def exists(self, url: str) -> bool:
        return self.fs.exists(self._path(url))

    def read_bytes(self, url: str) -> bytes:
        try:
            with self.fs.open(self._path(url), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise StorageError(f"{url} does not exist (data root {self.root})") from None

    def write_bytes(self, url: str, data: bytes) -> str:
        """Write atomically: a temporary name then a rename (local), one PUT (object stores)."""
        path = self._path(url)
        if self.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(path).with_name(f".{Path(path).name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            self.fs.pipe_file(path, data)
        return url

    def read_text(self, url: str) -> str:
        return self.read_bytes(url).decode("utf-8")

    def write_text(self, url: str, text: str) -> str:
        return self.write_bytes(url, text.encode("utf-8"))

    def read_json(self, url: str):
        return json.loads(self.read_text(url))

    def write_json(self, url: str, value) -> str:
        return self.write_text(url, json.dumps(value, ensure_ascii=False, indent=1, default=str))

    def listdir(self, url: str) -> list[str]:
        """Names (not paths) directly under a folder; [] when it does not exist."""
        path = self._path(url)
        if not self.fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))

    def delete(self, url: str) -> None:
        path = self._path(url)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # --- tables ------------------------------------------------------------------------------------------
    def write_table(self, table, url: str) -> str:
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return self.write_bytes(url, buffer.getvalue())

    def write_batches(self, batches: Iterable, schema, url: str) -> tuple[str, int]:
        """Stream record batches or tables of one schema into one Parquet file atomically; (url, rows)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = 0
        with tempfile.TemporaryDirectory(prefix="ocr-assets-") as tmp:
            local = Path(tmp) / "part.parquet"
            with pq.ParquetWriter(local, schema) as writer:
                for batch in batches:
                    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch], schema)
                    writer.write_table(table)
                    rows += table.num_rows
            self.put_file(local, url)
        return url, rows

    def read_table(self, url: str, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        if not self.exists(url):
            raise StorageError(f"dataset {url} not found; materialize the asset that writes it first (data root {self.root})")
        with self.fs.open(self._path(url), "rb") as handle:
            return pq.read_table(handle, columns=columns)

    def iter_batches(self, url: str, batch_size: int = 256, columns: list[str] | None = None) -> Iterator:
        import pyarrow.parquet as pq

        if not self.exists(url):
            raise StorageError(f"dataset {url} not found; materialize the asset that writes it first (data root {self.root})")
        with self.fs.open(self._path(url), "rb") as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_size, columns=columns)

    # --- whole files and directories ---------------------------------------------------------------------
    def put_file(self, local: Path, url: str) -> str:
        path = self._path(url)
        if self.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(path).with_name(f".{Path(path).name}.{uuid.uuid4().hex[:8]}.tmp")
            shutil.copyfile(local, tmp)
            os.replace(tmp, path)
        else:
            self.fs.put_file(str(local), path)
        return url

    def publish_dir(self, local: Path, url: str) -> str:
        """Make the finished local directory `local` the content of `url` (atomic rename when local)."""
        local = Path(local)
        path = self._path(url)
        if self.is_local:
            if Path(path).resolve() == local.resolve():
                return url
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if local.parent.resolve() == target.parent.resolve():
                staging = local  # built beside its final place (staging_dir): a rename publishes it
            else:
                staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
                shutil.copytree(local, staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        else:
            # Files first, then a marker: a reader that sees the marker sees a complete directory.
            for file in sorted(p for p in local.rglob("*") if p.is_file()):
                self.fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")
            self.fs.pipe_file(f"{path}/.complete", b"")
        return url

    def staging_dir(self, url: str) -> Path:
        """A local folder to build `url` in: the final place itself when local (written, then published)."""
        if self.is_local:
            target = Path(self._path(url))
            staging = target.with_name(f".{target.name}.staging")
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
            return staging
        return Path(tempfile.mkdtemp(prefix="ocr-assets-stage-"))

    def local_dir(self, url: str) -> Path:
        """A local directory with the content of `url`: the folder itself when local, else a cached download."""
        path = self._path(url)
        if self.is_local:
            if not Path(path).is_dir():
                raise StorageError(f"{url} is not a directory under the data root {self.root}")
            return Path(path)
        if not self.fs.exists(f"{path}/.complete"):
            raise StorageError(f"{url} is not a complete directory (no .complete marker); it was not published")
        cache = (self._cache or Path(tempfile.gettempdir()) / "ocr-assets-cache") / hashlib.sha256(url.encode()).hexdigest()[:16]
        if not (cache / ".complete").is_file():
            tmp = cache.with_name(cache.name + f".{uuid.uuid4().hex[:6]}.tmp")
            tmp.mkdir(parents=True)
            for remote in self.fs.find(path):
                rel = remote[len(path.rstrip("/")) + 1:]
                if rel == ".complete":
                    continue
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(remote, str(tmp / rel))
            (tmp / ".complete").write_bytes(b"")
            if cache.exists():
                shutil.rmtree(cache)
            os.replace(tmp, cache)
        return cache
