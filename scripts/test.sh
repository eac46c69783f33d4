#!/usr/bin/env bash
# Install the project with its test extra into .venv/ and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
exec .venv/bin/pytest -q -ra --timeout=1800 "$@"
