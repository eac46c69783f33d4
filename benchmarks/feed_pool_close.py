"""How often closing a decode-worker pool right after starting it hangs, with and without `FeedPool`'s SIGKILL close.

The process first installs Python's `default_int_handler` for SIGTERM (what Dagster leaves behind after an in-process
run), then starts and closes a two-worker pool CYCLES times while BUSY shell loops keep the cores busy. A close still
waiting after 10 s counts as a hang (the workers are then killed so the loop goes on). Two ways to close:

- `plain fork Pool`: `multiprocessing.get_context("fork").Pool` with the same worker initializer, `terminate()` +
  `join()` — what `FeedPool.close` did before session 16 (SIGTERM);
- `FeedPool`: `FeedPool(2)`, `start()`, `close()` as shipped (SIGKILL).

    .venv/bin/python benchmarks/feed_pool_close.py [--cycles 300] [--busy 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocr_assets.models.compact.line_feed import FeedPool, _worker_init  # noqa: E402


def plain_fork():
    pool = multiprocessing.get_context("fork").Pool(2, _worker_init)

    def close():
        pool.terminate()
        pool.join()

    return list(pool._pool), close


def feed_pool():
    pool = FeedPool(2)
    pool.start()
    return list(pool.pool._pool), pool.close


def cycles(make, count: int) -> tuple[int, float]:
    hangs, t0 = 0, time.perf_counter()
    for _ in range(count):
        workers, close = make()
        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        closer.join(10)
        if closer.is_alive():
            hangs += 1
            for worker in workers:
                worker.kill()
            closer.join(10)
    return hangs, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--busy", type=int, default=2, help="shell busy loops running meanwhile (the load that opens the race)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    busy = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(args.busy)]
    try:
        rows = [(name, *cycles(make, args.cycles)) for name, make in (("plain fork Pool (SIGTERM)", plain_fork),
                                                                      ("FeedPool (SIGKILL)", feed_pool))]
    finally:
        for p in busy:
            p.kill()
            p.wait()
    print(f"start + close of a 2-worker pool, {args.cycles} cycles, {args.busy} busy loops, parent SIGTERM handler: "
          "default_int_handler\n")
    print("| close | hangs (close waiting > 10 s) | wall s |\n|---|---|---|")
    for name, hangs, wall in rows:
        print(f"| {name} | {hangs} of {args.cycles} | {wall:.0f} |")


if __name__ == "__main__":
    main()
