"""The cluster on one machine, a worker lost midway (scripts/cluster-demo.sh runs this).

PostgreSQL (Dagster instance, MLflow backend), Redis (Celery broker), an S3 server (data root and inbox) and two
Celery workers on 127.0.0.1; N synthetic pages dropped into the inbox; the real dagster-daemon's inbox sensor
and the workers OCR them; the worker that runs the OCR step is killed with SIGKILL in the middle of it. Progress
goes to stderr; the last line on stdout is one JSON object:
{"scans": N, "in_corpus": N, "repeated": 0, "lost": 0, "workers_used": 2, "seconds": S}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocr_assets_tests.services import LocalCluster, steps_by_worker  # noqa: E402


def say(message: str) -> None:
    print(f"cluster-demo: {message}", file=sys.stderr, flush=True)


def ocr_step_worker(instance) -> str | None:
    import dagster as dg

    for run in instance.get_runs(filters=dg.RunsFilter(job_name="ocr_scans_job")):
        for worker, steps in steps_by_worker(instance, [run.run_id]).items():
            if "ocr_pages" in steps:
                return worker
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=12, help="synthetic pages dropped into the inbox (default 12)")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds to wait for the corpus (default 1500)")
    parser.add_argument("--redeliver-s", type=int, default=45,
                        help="seconds after which a lost worker's step goes to another worker (default 45)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) instead of deleting it")
    args = parser.parse_args(argv)
    if args.pages < 1:
        parser.error(f"--pages {args.pages} must be >= 1")
    folder = Path(tempfile.mkdtemp(prefix="ocr-assets-cluster-demo-"))
    started = time.monotonic()
    result = {"scans": args.pages, "in_corpus": 0, "repeated": 0, "lost": args.pages, "workers_used": 0, "seconds": 0}
    try:
        with LocalCluster(folder, workers=2, redeliver_s=args.redeliver_s) as cluster:
            say(f"PostgreSQL :{cluster.pg['port']}, Redis :{cluster.redis.port}, S3 {cluster.s3}, "
                f"workers {sorted(cluster.workers)} (pids {[p.pid for p in cluster.workers.values()]}); logs in {folder}")
            names = cluster.drop_pages(args.pages)
            say(f"{len(names)} synthetic pages in {cluster.inbox}; starting dagster-daemon")
            cluster.start_daemon()
            deadline = started + args.timeout
            with cluster.instance() as instance:
                victim = None
                while victim is None and time.monotonic() < deadline:
                    victim = ocr_step_worker(instance)
                    time.sleep(0.5)
                if victim is None:
                    raise TimeoutError("no worker started the OCR step")
                time.sleep(2)  # inside the step
                cluster.kill_worker(victim.split("@")[0])
                say(f"killed {victim} (SIGKILL) in the middle of its OCR step; waiting for the corpus")
                summary = None
                while time.monotonic() < deadline:
                    summary = cluster.corpus_summary()
                    if summary and summary.get("scans") == len(names) and summary.get("pending") == 0:
                        break
                    time.sleep(2)
                workers = steps_by_worker(instance, [r.run_id for r in instance.get_runs()])
                runs = {r.run_id[:8]: f"{r.job_name} {r.status.value}" for r in instance.get_runs()}
            say(f"runs: {runs}")
            say(f"steps by worker: {workers}")
            headers = [line.split(" · ")[0].removeprefix("=== ") for line in cluster.corpus_text().splitlines()
                       if line.startswith("=== ")] if summary else []
            in_corpus = len(set(headers) & set(names))
            result.update(in_corpus=in_corpus, repeated=len(headers) - len(set(headers)), lost=len(names) - in_corpus,
                          workers_used=len(workers))
    finally:
        result["seconds"] = round(time.monotonic() - started, 1)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        print(json.dumps(result), flush=True)
    ok = result["in_corpus"] == result["scans"] and not result["repeated"] and result["workers_used"] == 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
