"""Tesseract as the peer, run as docs/ARCHITECTURE.md ("Measurement") says: one process per line, two at a time, OMP_THREAD_LIMIT=1."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def tesseract_version() -> str:
    out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0]


def tesseract_one(path: Path, psm: int = 13, lang: str = "ara") -> str:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    done = subprocess.run(["tesseract", str(path), "stdout", "--psm", str(psm), "-l", lang],
                          capture_output=True, text=True, env=env)
    return done.stdout.strip()


def tesseract_many(paths: list[Path], psm: int = 13, jobs: int = 2) -> tuple[list[str], float]:
    """Texts in input order and the wall time of the whole batch."""
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        texts = list(pool.map(lambda p: tesseract_one(p, psm), paths))
    return texts, time.perf_counter() - start
