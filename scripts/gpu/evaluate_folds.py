"""On the GPU box: unseen-book scores of each fold model, vocalised scores, GPU lines/s; JSON to OUT."""

import io
import json
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from PIL import Image

from ocr_assets.data.gt_folder import iter_gt_folder
from ocr_assets.data.validation import validate_lines
from ocr_assets.metrics import _corpus_wer, cer, cer_norm
from ocr_assets.models.compact import CompactRecognizer, prepare_line
from ocr_assets.text import normalize, strip_tashkeel


def scores(rec, images, texts) -> dict:
    hyps = [r.text for r in rec.recognize(images, batch_size=256)]
    return {"lines": len(texts), "cer": cer(texts, hyps), "cer_norm": cer_norm(texts, hyps),
            "wer": _corpus_wer([normalize(t) for t in texts], [normalize(h) for h in hyps]),
            "wer_norm": _corpus_wer([strip_tashkeel(t) for t in texts], [strip_tashkeel(h) for h in hyps])}


def rest_with_conventions(rec, model_dir: Path, blobs: list[bytes], texts: list[str], first: int = 200) -> dict:
    """The book's lines after its first `first`, read as they are and with the conventions `ocr-assets conventions`
    learns from those first lines (`learn_book_conventions`: spacing, digits, marks, ligatures, words) — what a user gets
    from pointing the tool at 200 transcribed lines of the book, without training."""
    from ocr_assets.models.backends import backend_for
    from ocr_assets.models.conventions import with_conventions
    from ocr_assets.training.finetune import learn_book_conventions

    learned = learn_book_conventions(backend_for(model_dir), model_dir, list(zip(blobs[:first], texts[:first])))
    images = [Image.open(io.BytesIO(b)) for b in blobs[first:]]
    return {"plain": scores(rec, images, texts[first:]),
            "with_conventions": scores(with_conventions(rec, learned), images, texts[first:])}


def main() -> None:
    fullres, models, vocalised, real, out = (Path(a) for a in sys.argv[1:6])
    results = {"device": torch.cuda.get_device_name(0), "folds": {}}
    for book_dir in sorted(p for p in fullres.iterdir() if p.is_dir()):
        book = book_dir.name
        if not (models / book).is_dir():
            continue
        rec = CompactRecognizer.load(models / book, device="cuda")
        pairs, _ = validate_lines(iter_gt_folder(book_dir))
        imgs = [Image.open(io.BytesIO(b)) for b in pairs.column("image").to_pylist()]
        full = scores(rec, imgs, pairs.column("text").to_pylist())
        q = pq.read_table(real / f"{book}.parquet")
        q_blobs, q_texts = q.column("image").to_pylist(), q.column("text").to_pylist()
        quant = scores(rec, [Image.open(io.BytesIO(b)) for b in q_blobs], q_texts)
        rest = rest_with_conventions(rec, models / book, q_blobs, q_texts)
        results["folds"][book] = {"fullres_subset": full, "all_lines_48px_8grey": quant,
                                  "after_first_200_48px_8grey": rest}
        print(book, json.dumps(results["folds"][book]), flush=True)
    if not (models / "ALL").is_dir():  # SKIP_ALL: folds only
        (out / "gpu_results.json").write_text(json.dumps(results, indent=1))
        return
    rec = CompactRecognizer.load(models / "ALL", device="cuda")
    v = pq.read_table(vocalised)
    results["vocalised_heldout_font"] = scores(rec, [Image.open(io.BytesIO(b)) for b in v.column("image").to_pylist()], v.column("text").to_pylist())
    print("vocalised", json.dumps(results["vocalised_heldout_font"]), flush=True)
    # Throughput: every real line (48 px), preprocessing excluded / included, batch 1024, bf16 autocast.
    blobs = [b for p in sorted(real.glob("*.parquet")) for b in pq.read_table(p).column("image").to_pylist()]
    t = time.perf_counter()
    arrays = [prepare_line(b, rec.model.config.input_height) for b in blobs]
    prep = time.perf_counter() - t
    many = arrays * 4
    rec.recognize_arrays(many[:2048], 1024)
    torch.cuda.synchronize()
    t = time.perf_counter()
    rec.recognize_arrays(many, 1024)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    results["throughput"] = {"lines": len(many), "batch": 1024, "lines_per_s_model_and_decode": len(many) / dt,
                             "prepare_ms_per_line_one_core": 1000 * prep / len(arrays)}
    print("throughput", json.dumps(results["throughput"]), flush=True)
    (out / "gpu_results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
