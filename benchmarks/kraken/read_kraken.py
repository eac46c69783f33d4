"""Read line images with a Kraken 7 recognition model on the CPU, as `kraken -I '*.png' ocr -s -m MODEL` does
(one bbox line = the whole image, RecognitionTaskModel.predict, default inference config), in PROCS worker
processes of one thread each (the shape of the Tesseract peer: two at a time). Runs in Kraken's own venv.

Writes JSON {"model", "lines": {png_path: raw_prediction}, "read_s" (wall time of the reading, models loaded),
"load_s" (slowest worker's model load), "procs", "kraken", "torch"}. Display-order handling and scoring are
done by score.py in the project's venv, which is where the project's metrics live.

    .kraken/venv/bin/python benchmarks/kraken/read_kraken.py --model M.safetensors --out P.json IMG.png ...
    .kraken/venv/bin/python benchmarks/kraken/read_kraken.py --model M --out P.json --dir BOOK_DIR [--binarize]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path


def _convert_fp16(model: Path) -> Path:
    """The GPU run brings back fp16 copies (the tool's return limit); widen them to fp32, as trained models are."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if not any(str(t.dtype) == "torch.float16" for t in tensors.values()):
        return model
    out = model.with_name(model.name.replace(".fp16.safetensors", "") + ".fp32.safetensors")
    if not out.exists():
        save_file({k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}, str(out), metadata=meta)
    return out


def _worker(model: str, paths: list[str], start_evt, q, binarize: bool = False) -> None:
    try:
        _work(model, paths, start_evt, q, binarize)
    except BaseException:  # noqa: BLE001 - report, never leave the parent waiting
        import traceback

        q.put(("error", traceback.format_exc()))


def _work(model: str, paths: list[str], start_evt, q, binarize: bool = False) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from PIL import Image

    from kraken.binarization import nlbin
    from kraken.configs import RecognitionInferenceConfig
    from kraken.containers import BBoxLine, Segmentation
    from kraken.tasks import RecognitionTaskModel

    t0 = time.perf_counter()
    net = RecognitionTaskModel.load_model(model)
    config = RecognitionInferenceConfig(device=1, accelerator="cpu", num_line_workers=0, num_threads=1)
    load_s = time.perf_counter() - t0
    q.put(("loaded", load_s))
    start_evt.wait()
    out = {}
    for p in paths:
        im = Image.open(p)
        im.load()
        if binarize:  # Kraken's own binarisation (`kraken binarize`), for models trained on bilevel lines
            im = nlbin(im)
        seg = Segmentation(type="bbox", text_direction=config.text_direction, imagename=p, script_detection=False,
                           lines=[BBoxLine(id="l0", bbox=(0, 0, im.width, im.height))])
        out[p] = "".join(r.prediction for r in net.predict(im=im, segmentation=seg, config=config))
    q.put(("done", out))


def read(model: Path, paths: list[str], procs: int = 2, binarize: bool = False) -> dict:
    model = _convert_fp16(model)
    ctx = mp.get_context("spawn")
    start_evt, q = ctx.Event(), ctx.Queue()
    shards = [paths[i::procs] for i in range(procs)]
    workers = [ctx.Process(target=_worker, args=(str(model), s, start_evt, q, binarize)) for s in shards]
    for w in workers:
        w.start()
    def get():
        kind, value = q.get()
        if kind == "error":
            for w in workers:
                w.terminate()
            raise SystemExit(f"kraken worker failed:\n{value}")
        return value

    loads = [get() for _ in workers]
    t0 = time.perf_counter()
    start_evt.set()
    lines = {}
    for _ in workers:
        lines.update(get())
    read_s = time.perf_counter() - t0
    for w in workers:
        w.join()
    import torch
    from importlib.metadata import version

    from kraken.lib.bidi import get_display

    # Kraken's CTC output is in display order (its trainer reorders the GT with the bidi algorithm); `kraken ocr`
    # reorders back with the paragraph direction guessed from the text. "bidi_R" re-runs Kraken's own bidi
    # implementation with the base direction fixed to right-to-left on what it returned: reversal, mirrored
    # brackets, digit runs kept left-to-right. score.py scores both and says which it reports.
    return {"model": str(model), "lines": {p: lines[p] for p in paths},
            "bidi_R": {p: get_display(lines[p], base_dir="R") for p in paths}, "read_s": read_s, "load_s": max(loads),
            "procs": procs, "binarize": "nlbin" if binarize else None, "kraken": version("kraken"), "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--dir", type=Path, help="read every *.png of this folder")
    ap.add_argument("--limit", type=int, default=0, help="first N lines only (smoke tests)")
    ap.add_argument("--binarize", action="store_true",
                    help="binarise each line with Kraken's nlbin first (a model trained on bilevel lines, greyscale input)")
    ap.add_argument("images", nargs="*")
    args = ap.parse_args()
    paths = sorted(str(p) for p in args.dir.glob("*.png")) if args.dir else list(args.images)
    if args.limit:
        paths = paths[: args.limit]
    res = read(args.model, paths, args.procs, args.binarize)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, ensure_ascii=False))
    print(json.dumps({k: v for k, v in res.items() if k not in ("lines", "bidi_R")} | {"lines": len(paths), "lines_per_s": round(len(paths) / res["read_s"], 2)}))


if __name__ == "__main__":
    main()
