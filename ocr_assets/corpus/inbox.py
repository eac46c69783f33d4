"""The scan inbox: list new scans through fsspec, key them by content hash, refuse what is not a scan.

A scan's identity is the SHA-256 of its bytes, so renaming or re-copying a file never makes a new scan and a
restarted sensor recognises what it has seen. A fingerprint cache (path, size, mtime → digest) spares re-hashing
unchanged files on every tick.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import fsspec

from ocr_assets.errors import InboxError
from ocr_assets.storage import Storage

INBOX_ENV = "OCR_ASSETS_INBOX"
SETTLE_ENV = "OCR_ASSETS_INBOX_SETTLE_S"
SCAN_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf")
MAX_SCAN_BYTES = 256 * 1024 * 1024  # a 600-dpi A3 colour TIFF is ~100 MB; beyond this it is not a page scan
KEY_CHARS = 16  # 64 bits of SHA-256: collisions are negligible for any real archive, keys stay readable


@dataclass(frozen=True)
class Scan:
    key: str  # content hash prefix: the dynamic partition key
    path: str  # relative to the inbox, "/"-separated
    size: int


@dataclass(frozen=True)
class Refusal:
    path: str
    reason: str


def inbox_url(storage: Storage, explicit: str | None = None) -> str:
    """The inbox: `explicit`, else $OCR_ASSETS_INBOX (a folder or any fsspec URL), else `inbox/` under the data root."""
    url = explicit or os.environ.get(INBOX_ENV)
    if url:
        return url
    url = storage.url("inbox")
    if storage.is_local:
        Path(url).mkdir(parents=True, exist_ok=True)
    return url


def _filesystem(url: str):
    from ocr_assets.storage import remote_options

    fs, root = fsspec.core.url_to_fs(url, **remote_options(url))
    return fs, root.rstrip("/") or "/"


def inside(root: str, relative: str) -> str:
    """The inbox path of `relative`; refuses absolute paths and `..` that would leave the inbox."""
    if relative.startswith("/") or "\\" in relative:
        raise InboxError(f"path {relative!r} escapes the inbox: give a path relative to it")
    joined = posixpath.normpath(posixpath.join(root, relative))
    if joined != root and not joined.startswith(root.rstrip("/") + "/"):
        raise InboxError(f"path {relative!r} escapes the inbox")
    return joined


def _escapes_locally(fs, root: str, path: str) -> bool:
    """A local symlink (of the file or a folder on its way) that resolves outside the inbox."""
    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return False
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) != real_root


def digest_file(fs, path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def settle_seconds() -> float:
    """How long a file must stay unchanged before it counts as arrived ($OCR_ASSETS_INBOX_SETTLE_S, default 10):
    a scanner or a copy still writing it would otherwise be hashed half-written."""
    return float(os.environ.get(SETTLE_ENV, "10"))


def list_scans(url: str, cache: dict | None = None, budget_s: float | None = None,
               now: float | None = None) -> tuple[list[Scan], list[Refusal], dict]:
    """Every scan in the inbox (one per distinct content), the refused files, and the updated hash cache.

    `cache` maps path → [size, mtime, digest]; files whose size and mtime are unchanged are not re-read. Files
    modified within the settle time, files that cannot be read this time, and files left unhashed when
    `budget_s` runs out are left for a later call (not refused: nothing about them is final yet).
    """
    fs, root = _filesystem(url)
    cache = dict(cache or {})
    scans: dict[str, Scan] = {}
    refused: list[Refusal] = []
    fresh: dict = {}
    started, now = time.monotonic(), time.time() if now is None else now
    settle = settle_seconds()
    for path, info in sorted(fs.find(root, detail=True, withdirs=False).items()):
        rel = posixpath.relpath(path, root)
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # hidden files and partial uploads (.name.part) are not scans yet
        suffix = posixpath.splitext(rel)[1].lower()
        size = int(info.get("size") or 0)
        if _escapes_locally(fs, root, path):
            refused.append(Refusal(rel, "path escapes the inbox (a link to outside it): refused"))
            continue
        if suffix not in SCAN_SUFFIXES:
            refused.append(Refusal(rel, f"not a scan: suffix {suffix or '(none)'!r}; allowed {list(SCAN_SUFFIXES)}"))
            continue
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        mtime = mtime if isinstance(mtime, (int, float)) else str(mtime)
        if isinstance(mtime, (int, float)) and mtime and now - mtime < settle:
            continue  # still being written, perhaps: taken once it has settled
        if size == 0:
            refused.append(Refusal(rel, "empty file (0 bytes)"))
            continue
        if size > MAX_SCAN_BYTES:
            refused.append(Refusal(rel, f"file of {size} bytes exceeds the {MAX_SCAN_BYTES}-byte scan limit"))
            continue
        cached = cache.get(rel)
        if cached and cached[0] == size and cached[1] == mtime:
            digest = cached[2]
        elif budget_s is not None and time.monotonic() - started > budget_s:
            continue  # out of time this tick: hashed on the next one (the cache keeps what was done)
        else:
            try:
                digest = digest_file(fs, path)
            except (OSError, PermissionError) as err:  # gone or unreadable now; one file never stops the inbox
                refused.append(Refusal(rel, f"cannot be read now ({type(err).__name__}: {err}); tried again later"))
                continue
        fresh[rel] = [size, mtime, digest]
        key = digest[:KEY_CHARS]
        scans.setdefault(key, Scan(key, rel, size))  # the same bytes under two names are one scan
    return sorted(scans.values(), key=lambda s: s.path), refused, fresh


def manifest_url(storage: Storage, key: str | None = None) -> str:
    """`scans/manifest/` under the data root, or the manifest file of scan `key`."""
    return storage.url("scans", "manifest", f"{key}.json") if key else storage.url("scans", "manifest")


def manifest_keys(storage: Storage) -> list[str]:
    """Every scan the inbox has recorded, by key."""
    return sorted(name[:-5] for name in storage.listdir(manifest_url(storage)) if name.endswith(".json"))


def record_scan(storage: Storage, scan: Scan, url: str) -> str:
    """Remember where a scan was first seen, so its partition can find the bytes later."""
    path = manifest_url(storage, scan.key)
    if not storage.exists(path):
        storage.write_json(path, {**asdict(scan), "inbox": url})
    return path


def refused_url(storage: Storage) -> str:
    return storage.url("scans", "refused.json")


def record_refusals(storage: Storage, refusals: list[Refusal]) -> str:
    """The inbox files refused before partitioning, with reasons (rewritten every tick: the current state)."""
    return storage.write_json(refused_url(storage), [asdict(r) for r in refusals])


def read_manifest(storage: Storage, key: str) -> dict | None:
    """A scan's manifest entry; None when there is none or it was cut short (a crash mid-write)."""
    path = manifest_url(storage, key)
    if not storage.exists(path):
        return None
    try:
        return storage.read_json(path)
    except ValueError:
        return None


def read_scan(storage: Storage, key: str) -> tuple[bytes, Scan]:
    """The bytes of scan `key`: at its recorded path, else found again by content (it was renamed)."""
    meta = read_manifest(storage, key)
    if meta is None:
        raise InboxError(f"scan {key!r} has no readable manifest entry under {manifest_url(storage)}; "
                         "the inbox sensor records it")
    fs, root = _filesystem(meta["inbox"])
    path = inside(root, meta["path"])
    if fs.exists(path) and not _escapes_locally(fs, root, path):
        if fs.size(path) > MAX_SCAN_BYTES:
            raise InboxError(f"scan {meta['path']!r} grew past the {MAX_SCAN_BYTES}-byte scan limit after it was seen")
        data = fs.cat_file(path)
        if hashlib.sha256(data).hexdigest().startswith(key):
            return data, Scan(key, meta["path"], len(data))
    for scan in list_scans(meta["inbox"])[0]:
        if scan.key == key:
            data = fs.cat_file(inside(root, scan.path))
            return data, scan
    raise InboxError(f"scan {key!r} (first seen as {meta['path']!r}) is no longer in the inbox {meta['inbox']}")
