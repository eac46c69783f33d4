"""Do GPU readings change with the attention kernel? The shipped model reads the same prepared lines twice on a CUDA
device: with the backends reading uses (`CompactRecognizer._inference_context`: flash / memory-efficient, no cuDNN)
and with torch's default choice (cuDNN attention where it applies). Prints how many lines read identically, the CER
between the two readings and each one's CER_norm against the ground truth (issue 14); then the same lines from their
PNG bytes through `device_prep.read_encoded` (the GPU line path speed.py measures) against the first reading.

    python benchmarks/gpu_attention_check.py --line-dir DIR [--lines 5000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--line-dir", type=Path, required=True)
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--device", default="cuda", help="cpu only to try the script (no cuDNN there)")
    parser.add_argument("--workers", type=int, default=8, help="read_encoded's decode workers")
    args = parser.parse_args()

    import torch

    from ocr_assets import metrics
    from ocr_assets.models.compact.lines import prepare_line
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.models.resolve import shipped_model_dir
    from ocr_assets.text import normalize

    pngs = sorted(args.line_dir.rglob("*.png"))[: args.lines]
    truth = [normalize(p.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8")) for p in pngs]
    rec = CompactRecognizer.load(shipped_model_dir(), device=args.device)
    arrays = [prepare_line(p.read_bytes(), rec.model.config.input_height) for p in pngs]
    ours = [normalize(r.text) for r in rec.recognize_arrays(arrays, batch_size=256)]
    plain = rec._inference_context
    dtype = torch.bfloat16 if args.device == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    rec._inference_context = lambda: torch.autocast(args.device.split(":")[0], dtype=dtype)  # torch's own choice
    default = [normalize(r.text) for r in rec.recognize_arrays(arrays, batch_size=256)]
    rec._inference_context = plain
    same = sum(a == b for a, b in zip(ours, default))
    between = metrics.cer(default, ours)  # metrics' CER functions need no sacrebleu (not on the GPU image)
    print(f"{torch.cuda.get_device_name(0) if args.device != 'cpu' else 'cpu'}, {len(pngs)} lines of {args.line_dir.name}")
    print(f"identical readings: {same} of {len(pngs)}; CER between the two: {between:.5f}")
    print(f"CER_norm vs ground truth: flash/efficient {metrics.cer_norm(truth, ours):.5f}, "
          f"torch default (cuDNN) {metrics.cer_norm(truth, default):.5f}")
    # The end-to-end path from PNG bytes (`read_encoded`: workers decode, labels found on the device, batches padded
    # to the GPU defaults) against `recognize_arrays` on the same lines.
    from ocr_assets.models.compact.device_prep import read_encoded

    got = dict(read_encoded(rec, [p.read_bytes() for p in pngs], workers=args.workers))
    stream = [normalize(got[i].text) for i in range(len(pngs))]
    print(f"read_encoded from PNG bytes: identical to recognize_arrays on {sum(a == b for a, b in zip(ours, stream))} "
          f"of {len(pngs)}; CER between the two {metrics.cer(ours, stream):.5f}; CER_norm vs ground truth "
          f"{metrics.cer_norm(truth, stream):.5f}")


if __name__ == "__main__":
    main()
