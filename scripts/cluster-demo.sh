#!/usr/bin/env bash
# The cluster profile on this machine with a worker lost midway: Redis, PostgreSQL, an S3 server (moto) and two
# Celery workers on 127.0.0.1, N synthetic pages (default 12) through the inbox sensor to the corpus; the worker
# running the OCR step is killed with SIGKILL. Everything it started is stopped by process id at the end.
# Last line on stdout: {"scans": N, "in_corpus": N, "repeated": 0, "lost": 0, "workers_used": 2, "seconds": S}
# Usage: ./scripts/cluster-demo.sh [--pages N] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
have_services() {
  command -v redis-server >/dev/null 2>&1 &&
    { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
}
if ! have_services || ! .venv/bin/python -c "import dagster_celery, dagster_postgres, moto, s3fs" 2>/dev/null; then
  # The README's test command installs redis-server, postgresql and the project with its test extra.
  echo "cluster-demo: installing what it needs through ./scripts/test.sh --collect-only -q" >&2
  ./scripts/test.sh --collect-only -q >/dev/null
fi
exec .venv/bin/python scripts/cluster_demo.py "$@"
