#!/usr/bin/env bash
# The README's test command: install what the tests need, then run the whole test suite.
#  1. Debian packages the tests use (Arabic book fonts, Tesseract for the peer tests, fontconfig, venv support,
#     Redis and PostgreSQL for the cluster tests),
#     when some are missing and apt-get can run (as root, or sudo without a password); quiet and skipped when
#     everything is installed already, so repeated runs start at once.
#  2. The project with its test extra into .venv/.
#  3. pytest (arguments are passed on, e.g. ./scripts/test.sh ocr_assets_tests/test_cli.py -x).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3.11 || command -v python3)

SYSTEM_PACKAGES=(fonts-hosny-amiri fonts-noto-core fonts-sil-scheherazade fonts-sil-lateef fonts-kacst
  fonts-arabeyes fonts-hosny-thabit tesseract-ocr tesseract-ocr-ara fontconfig
  chromium chromium-driver  # the review page is tested in headless Chromium (Selenium + chromedriver)
  redis-server postgresql)  # the cluster tests start their own Redis and PostgreSQL on 127.0.0.1
if [ ! -x .venv/bin/python ] && ! "$PY" -c "import ensurepip" 2>/dev/null; then
  # Debian's Python makes no venv without its -venv package.
  SYSTEM_PACKAGES+=("python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv")
fi
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: not installed: ${missing[*]} (no apt-get here); tests that need them will fail or skip" >&2
  else
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="no"; fi
    fi
    if [ "$SUDO" = no ]; then
      echo "test.sh: not installed: ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
    else
      echo "test.sh: installing ${missing[*]}" >&2
      if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
             $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
               "${missing[@]}" >/dev/null; }; then
        echo "test.sh: apt-get could not install ${missing[*]}; tests that need them will fail or skip" >&2
      fi
    fi
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
exec .venv/bin/pytest -q -ra --timeout=1800 "$@"
