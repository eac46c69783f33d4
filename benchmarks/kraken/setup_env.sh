#!/usr/bin/env bash
# Kraken 7 in its own venv (.kraken/venv, git-ignored): a benchmark dependency, never a runtime one.
#
# Kraken 7.1.1 pins torch>=2.9,<=2.14 (i.e. <=2.14.0) and needs torchvision. On this x86_64 CPU machine the only
# torch/torchvision pair that loads together from the local disk is torch 2.14.1 + torchvision 0.29.1 (a CUDA
# build that runs on the CPU; docs: python.md). PyPI's torchvision does not load against the CPU-only
# torch 2.13.0 file. So: install that pair first, then Kraken's other requirements with Kraken's own pins, then
# Kraken itself with --no-deps (its torch<=2.14 ceiling is the only requirement left unmet: 2.14.1 vs 2.14.0).
#
#   bash benchmarks/kraken/setup_env.sh            # -> .kraken/venv/bin/{ketos,kraken,python}
set -euo pipefail
cd "$(dirname "$0")/../.."
KRAKEN_VERSION="${KRAKEN_VERSION:-7.1.1}"
VENV=.kraken/venv
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
$PIP install -q 'torch==2.14.1' 'torchvision==0.29.1'
# Kraken 7.1.1's requirements (its METADATA), torch/torchvision excluded (installed above).
$PIP install -q 'click>=8.1,<8.3' 'coremltools~=9.0' 'htrmopo~=0.6' iso639-lang 'jinja2~=3.1.6' jsonschema \
  'lightning==2.6.1' lxml numpy packaging 'pillow>=9.2.0' platformdirs 'protobuf>=3.0.0' pyarrow regex requests \
  'rich<14.1.0' 'safetensors~=0.7.0' 'scikit-image~=0.25.2' 'scikit-learn~=1.7.2' 'scipy~=1.15.3' 'shapely~=2.1.2' \
  'threadpoolctl~=3.6.0' 'torchmetrics>=1.1.0' 'torch==2.14.1' 'torchvision==0.29.1'
$PIP install -q --no-deps "kraken==${KRAKEN_VERSION}"
# Scoring uses the project's own metrics (rapidfuzz, jiwer, sacrebleu) from the project's venv, not from here.
"$VENV/bin/python" -c "import kraken, torch, torchvision; from importlib.metadata import version as v; print('kraken', v('kraken'), 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
