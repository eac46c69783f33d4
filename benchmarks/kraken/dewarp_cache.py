"""Kraken's centerline normalisation, computed once per line instead of once per line per epoch (benchmark only).

Kraken's recognition loader dewarps every raw line image with `CenterNormalizer` each time it is drawn (~43 ms for a
~1,300 px line on one core): on a 16-core GPU machine that, not the GPU, bounds an epoch (~200 s per epoch on the
folds that hold Buldan's wide lines). The dewarp is deterministic (no augmentation runs before it), so this module
memoises Kraken's own `functional_im_transforms.pil_dewarp` on disk, keyed by the target height and the exact pixels it
receives: what the network sees is unchanged, only the repeated work is gone. `prewarm` fills the cache from the
Arrow datasets with all cores before training, running Kraken's own steps (its grey conversion, then its dewarp).

    python3 dewarp_cache.py prewarm --cache DIR --height 120 --workers 16 A.arrow B.arrow ...
    python3 dewarp_cache.py ketos --cache DIR -- <ketos arguments>      (ketos with the memoised dewarp)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np

_STATS = {"hits": 0, "misses": 0}


def _key(height: int, im) -> str:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{height}|{im.mode}|{im.size[0]}x{im.size[1]}|".encode())
    digest.update(im.tobytes())
    return digest.hexdigest()


def install(cache: Path) -> None:
    """Replace `kraken.lib.functional_im_transforms.pil_dewarp` by a disk-memoised call of the original."""
    from PIL import Image
    from kraken.lib import functional_im_transforms as F_t

    original = F_t.pil_dewarp
    cache.mkdir(parents=True, exist_ok=True)

    def pil_dewarp(im, lnorm):
        path = cache / f"{_key(lnorm.target_height, im)}.npy"
        try:
            out = Image.fromarray(np.load(path))  # float32 -> mode "F", as dewarp returns
            _STATS["hits"] += 1
        except (OSError, ValueError):
            out = original(im, lnorm)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, np.asarray(out, dtype=np.float32))
            os.replace(tmp, path)
            _STATS["misses"] += 1
        calls = _STATS["hits"] + _STATS["misses"]
        if calls in (1, 100) or calls % 2000 == 0:
            print(f"dewarp cache (pid {os.getpid()}): {_STATS['hits']} hits, {_STATS['misses']} misses",
                  file=sys.stderr, flush=True)
        return out

    F_t.pil_dewarp = pil_dewarp


def _prewarm_file(job: tuple[str, int, int, int]) -> tuple[int, int]:
    import pyarrow as pa
    from PIL import Image
    from torchvision.transforms import v2
    from kraken.lib import functional_im_transforms as F_t
    from kraken.lib.lineest import CenterNormalizer

    arrow, height, lo, hi = job  # the memoised dewarp is installed before the workers fork (`prewarm`)
    before = dict(_STATS)
    grey = v2.Grayscale(num_output_channels=1)
    lnorm = CenterNormalizer(height)
    with pa.memory_map(arrow, "rb") as source:
        table = pa.ipc.open_file(source).read_all()
    column = table.column("lines")
    for i in range(lo, min(hi, len(column))):
        sample = column[i].as_py()
        F_t.pil_dewarp(grey(Image.open(io.BytesIO(sample["im"]))), lnorm)
    return _STATS["hits"] - before["hits"], _STATS["misses"] - before["misses"]


def prewarm(arrows: list[str], height: int, cache: Path, workers: int, chunk: int = 64) -> None:
    import multiprocessing

    import pyarrow as pa

    jobs = []
    for arrow in arrows:
        with pa.memory_map(arrow, "rb") as source:
            n = pa.ipc.open_file(source).read_all().num_rows
        jobs += [(arrow, height, lo, lo + chunk) for lo in range(0, n, chunk)]
    install(cache)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        totals = np.array(pool.map(_prewarm_file, jobs, chunksize=1)).sum(0) if jobs else (0, 0)
    print(f"prewarm: {len(jobs)} chunks of {chunk} lines from {len(arrows)} files; "
          f"already cached {totals[0]}, computed {totals[1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    warm = sub.add_parser("prewarm")
    warm.add_argument("--cache", type=Path, required=True)
    warm.add_argument("--height", type=int, default=120, help="the network's input height (default spec: 120)")
    warm.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    warm.add_argument("arrows", nargs="+")
    run = sub.add_parser("ketos")
    run.add_argument("--cache", type=Path, required=True)
    run.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.verb == "prewarm":
        prewarm(args.arrows, args.height, args.cache, args.workers)
        return
    install(args.cache)
    from kraken.ketos import cli

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    sys.argv = ["ketos", *rest]
    sys.exit(cli())


if __name__ == "__main__":
    main()
