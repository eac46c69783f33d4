#!/usr/bin/env bash
# Try the Unsloth backend on a lent GPU box with carried wheels (.gpu/unsloth: unsloth without its web UI,
# unsloth_zoo, trl, datasets and their small deps; no bitsandbytes/diffusers). Records what happens.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/us .gpu/unsloth/*.whl
export PYTHONPATH=/tmp/us:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 - <<'PY'
import time, traceback
t = time.time()
try:
    import unsloth
    print("import unsloth OK", unsloth.__version__, f"{time.time() - t:.1f}s")
    from unsloth import FastVisionModel
    print("FastVisionModel", FastVisionModel)
except Exception:
    traceback.print_exc()
from ocr_assets.models.deepseek.ocr1_unsloth import UnslothDeepseekOcrRecognizer
try:
    UnslothDeepseekOcrRecognizer.from_pretrained("unsloth/DeepSeek-OCR", trust_remote_code=True)
except Exception as exc:
    print("from_pretrained:", type(exc).__name__, str(exc)[:600])
PY
