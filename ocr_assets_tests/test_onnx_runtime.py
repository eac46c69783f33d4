"""The lean CPU reader (issue 14): the compact model's ONNX graph under ONNX Runtime reads what torch reads, for the
shipped model and for a freshly fine-tuned and merged one; the graph is cached by weights hash and a damaged cache
file is rebuilt with a one-line message; a cached graph reads without importing torch or transformers.
Real models, real fonts; no timings here (speed is benchmarks/speed.py's business)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ocr_assets import metrics
from ocr_assets.errors import ConfigError
from ocr_assets.models.compact.lines import decode_best, prepare_line, width_batches
from ocr_assets.models.compact.onnx_reader import OnnxRecognizer, cached_onnx
from ocr_assets.models.resolve import load_recognizer, shipped_model_dir
from ocr_assets.synth.fonts import book_faces
from ocr_assets_tests.test_compact_model import render_line

WORDS = ("قال أبو عثمان الجاحظ في كتاب الحيوان وذكر أهل العلم بالأخبار أن الخليفة كتب إلى عامله "
         "بالبصرة يأمره بجمع ما عندهم من الكتب حدثنا محمد بن عبد الله عن أبيه في سنة ثلاث ومائتين").split()
BIN = Path(sys.executable).with_name("ocr-assets")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, request):
    """One graph cache for the module (each export costs seconds), never the user's own."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    saved = os.environ.get("OCR_ASSETS_CACHE_DIR")
    os.environ["OCR_ASSETS_CACHE_DIR"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("OCR_ASSETS_CACHE_DIR", None)
    else:
        os.environ["OCR_ASSETS_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def book_lines():
    """60 classical lines in up to three real Arabic book faces, with their texts."""
    faces = book_faces()
    # Amiri first when present (the face the shipped model reads best), then two other book faces.
    fonts = (sorted(faces, key=lambda f: (not f.name.startswith("Amiri"), f.name))[:3]) or [None]
    rng = random.Random(14)
    out = []
    for i in range(60):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 9)))
        font = fonts[i % len(fonts)]
        out.append((render_line(text, size=34, font_path=font.path if font else None), text))
    return out


def read(recognizer, lines):
    return recognizer.recognize([im for im, _ in lines], batch_size=16)


def test_onnx_reads_what_torch_reads_with_the_shipped_model(cache, book_lines):
    refs = [t for _, t in book_lines]
    from ocr_assets.models.compact.recognizer import CompactRecognizer

    torch_fp32 = read(CompactRecognizer.load(shipped_model_dir(), device="cpu", cpu_precision="fp32"), book_lines)
    fp32 = read(OnnxRecognizer.load(shipped_model_dir(), precision="fp32"), book_lines)
    int8 = read(OnnxRecognizer.load(shipped_model_dir(), precision="int8"), book_lines)
    assert [r.text for r in fp32] == [r.text for r in torch_fp32]
    assert max(abs(a.confidence - b.confidence) for a, b in zip(fp32, torch_fp32)) < 1e-3
    assert all(len(r.char_positions) == len(r.text) for r in fp32)
    base = metrics.score(refs, [r.text for r in torch_fp32])
    quantized = metrics.score(refs, [r.text for r in int8])
    assert base.cer_norm < 0.1, base  # the lines are readable, so the comparison means something
    assert abs(quantized.cer_norm - base.cer_norm) <= 0.001, (quantized, base)


def test_the_default_cpu_reader_is_onnx_and_runtime_torch_keeps_torch(cache):
    from ocr_assets.models.compact.recognizer import CompactRecognizer

    assert isinstance(load_recognizer("default", device="cpu"), OnnxRecognizer)
    from ocr_assets.models.compact.runtime import using

    with using("torch"):
        assert isinstance(load_recognizer("default", device="cpu"), CompactRecognizer)
    with pytest.raises(ConfigError, match="not one of"):
        with using("tensorrt"):
            pass


def test_a_freshly_finetuned_and_merged_model_gets_its_own_graph(cache, book_lines, tmp_path):
    from ocr_assets.data.images import encode_png
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.settings import FinetuneSettings
    from ocr_assets.training.finetune import lora_finetune, merge_adapters

    pairs = book_lines[:16]
    train = pa.table({"image": [encode_png(im) for im, _ in pairs], "text": [t for _, t in pairs]})
    settings = FinetuneSettings(epochs=1, batch_size=8, rank=2, alpha=4, device="cpu", learning_rate=5e-3)
    lora_finetune(shipped_model_dir(), train, None, settings, tmp_path / "adapters")
    merged = merge_adapters(shipped_model_dir(), tmp_path / "adapters", tmp_path / "merged")
    reader = load_recognizer(merged, device="cpu", trust_remote_code=False)
    onnx_reader = getattr(reader, "inner", reader)
    assert isinstance(onnx_reader, OnnxRecognizer)
    assert onnx_reader.onnx_path != cached_onnx(shipped_model_dir(), "int8", cache)  # its own weights, its own graph
    torch_reader = CompactRecognizer.load(merged, device="cpu", cpu_precision="fp32")
    fp32 = OnnxRecognizer.load(merged, precision="fp32")
    lines = book_lines[16:40]
    assert [r.text for r in read(fp32, lines)] == [r.text for r in read(torch_reader, lines)]


def test_a_damaged_cached_graph_is_rebuilt_with_one_line(tmp_path):
    folder = tmp_path / "lines"
    folder.mkdir()
    render_line("قال أبو عثمان في كتاب الحيوان", size=34).save(folder / "a.png")
    env = {**os.environ, "OCR_ASSETS_CACHE_DIR": str(tmp_path / "cache"), "OCR_ASSETS_DATA_ROOT": str(tmp_path / "var")}
    env.pop("OCR_ASSETS_RUNTIME", None)
    first = subprocess.run([str(BIN), "recognize", str(folder), "--out", str(tmp_path / "a.jsonl"), "--device", "cpu"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    graph = cached_onnx(shipped_model_dir(), "int8", tmp_path / "cache")
    assert graph.is_file()
    graph.write_bytes(b"not a protobuf" * 100)
    again = subprocess.run([str(BIN), "recognize", str(folder), "--out", str(tmp_path / "b.jsonl"), "--device", "cpu"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    notes = [line for line in again.stderr.splitlines() if "ONNX" in line]
    assert len(notes) == 1 and "damaged" in notes[0] and "rebuilding" in notes[0], again.stderr
    assert "Traceback" not in again.stderr
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["text"] == json.loads((tmp_path / "a.jsonl").read_text(encoding="utf-8"))["text"]
    assert graph.stat().st_size > 1_000_000  # a real graph again


def test_a_cached_graph_reads_without_torch_or_transformers(cache, tmp_path):
    OnnxRecognizer.load(shipped_model_dir())  # cached by now or here
    folder = tmp_path / "lines"
    folder.mkdir()
    render_line("حدثنا محمد بن عبد الله", size=34).save(folder / "a.png")
    done, heavy = recognize_in_a_new_process(tmp_path, folder)
    assert done.returncode == 0, done.stderr
    assert heavy == "[]", done.stdout


def recognize_in_a_new_process(tmp_path, folder, *flags: str) -> tuple[subprocess.CompletedProcess, str]:
    """`ocr-assets recognize FOLDER --out tmp_path/o.jsonl --model default FLAGS` in a new interpreter: the finished
    process and which of torch and transformers it had imported (its last stdout line)."""
    code = ("import sys; from ocr_assets.cli import main; code = main(['recognize', sys.argv[1], '--out', sys.argv[2], "
            "'--model', 'default', *sys.argv[3:]]); print(sorted(m for m in ('torch', 'transformers') if m in "
            "sys.modules)); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "o.jsonl"), *flags],
                          capture_output=True, text=True, env={**os.environ, "OCR_ASSETS_DATA_ROOT": str(tmp_path / "var")},
                          timeout=300)
    return done, (done.stdout.strip().splitlines() or [""])[-1]


def test_width_batches_hold_every_line_once_with_little_padding():
    rng = random.Random(0)
    widths = [rng.randint(40, 2400) for _ in range(500)]
    batches = width_batches(widths, 32)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) <= 32 for b in batches)
    padded = sum(-(-max(widths[i] for i in b) // 8) * 8 * len(b) for b in batches)
    assert padded <= 1.1 * sum(widths)


def test_numpy_decode_matches_the_torch_decode():
    import torch

    from ocr_assets.models.compact.recognizer import greedy_decode

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 30, 12, generator=gen) * 3
    logits[:, ::3, 0] += 6  # plenty of blanks, as in real output
    lengths = torch.tensor([30, 17, 1, 24])
    prob, best = logits.softmax(-1).max(-1)
    ours = decode_best(best.numpy(), prob.numpy(), lengths.numpy())
    theirs = greedy_decode(logits, lengths, positions=True)
    for (a_ids, a_conf, a_line, a_pos), (b_ids, b_conf, b_line, b_pos) in zip(ours, theirs):
        assert a_ids == b_ids and a_pos == b_pos
        assert np.allclose(a_conf, b_conf) and abs(a_line - b_line) < 1e-6


def test_an_archive_resolution_bilevel_scan_is_segmented_small_and_read_in_worker_processes(cache, tmp_path):
    """A 600-dpi page as a 1-bit G4 TIFF (segmented at half scale, cut at full scale) and a broken file, through
    worker processes: results in order, the broken page reported, the big page read as well as its ground truth."""
    from ocr_assets.pages.ocr import ocr_page_files
    from ocr_assets.pages.segment import segment_lines
    from ocr_assets.synth.pages import render_page

    page = render_page(8, dpi=600, skew=0.0, degrade=False)
    bilevel = page.image.point(lambda v: 255 if v >= 128 else 0).convert("1")
    assert bilevel.width > 2000
    big = tmp_path / "a-big.tif"
    bilevel.save(big, compression="group4")
    broken = tmp_path / "b-broken.tif"
    broken.write_bytes(b"II*\x00 not really a tiff")
    boxes = segment_lines(bilevel.convert("L"))  # at half scale
    full = segment_lines(bilevel.convert("L"), max_width=None)
    assert len(boxes) == len(full) == len(page.lines)
    for small, large in zip(boxes, full):  # the same lines, to within the reduction's own rounding
        assert max(abs(a - b) for a, b in zip((small.x0, small.y0, small.x1, small.y1),
                                                (large.x0, large.y0, large.x1, large.y1))) <= 6, (small, large)
    results = list(ocr_page_files(OnnxRecognizer.load(shipped_model_dir()), [big, broken], workers=2))
    assert [p for p, _ in results] == [big, broken]
    assert isinstance(results[1][1], str) and results[1][1]
    read = results[0][1]
    score = metrics.score([" ".join(line.text for line in page.lines)], [" ".join(line.text for line in read.lines)])
    assert score.cer_norm < 0.05, score


def test_device_preparation_matches_pillow_and_reads_the_same(book_lines):
    """The GPU path's batched resize + ink table (run here on the CPU) gives Pillow's lines to within a grey level
    or two, and `read_encoded` (decode workers, batched preparation on the device) reads what `recognize` reads."""
    import torch

    from ocr_assets.data.images import encode_png
    from ocr_assets.models.compact.device_prep import decode_gray, prepare_batch, read_encoded
    from ocr_assets.models.compact.recognizer import CompactRecognizer

    blobs = [encode_png(im) for im, _ in book_lines[:24]]
    pixels, widths = prepare_batch([torch.from_numpy(np.array(decode_gray(b))) for b in blobs], 48)
    for i, blob in enumerate(blobs):
        expected = prepare_line(blob, 48)
        assert int(widths[i]) == expected.shape[1]
        got = pixels[i, 0, :, : expected.shape[1]].numpy().astype(int)
        assert np.abs(got - expected.astype(int)).max() <= 2
        assert not pixels[i, 0, :, expected.shape[1]:].any()  # padding stays background
    reader = CompactRecognizer.load(shipped_model_dir(), device="cpu", cpu_precision="fp32")
    texts = [None] * len(blobs)
    for i, r in read_encoded(reader, blobs + [b"not an image"], batch_size=8, workers=0):
        if i < len(blobs):
            texts[i] = r.text
        else:
            assert r.error and not r.text
    assert texts == [r.text for r in reader.recognize(blobs)]


def _encodings(image):
    """One line image in the encodings the feed tells apart: plain grey PNG (fast path), RGB PNG, grey PNG with
    transparency, 16-bit PNG, grey and colour JPEG, a JPEG rotated by EXIF, a TIFF."""
    import io

    from PIL import Image

    def save(im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        return buf.getvalue()

    rgb = Image.merge("RGB", (image, image.point(lambda v: min(255, v + 20)), image))
    grey_alpha = image.copy()
    grey_alpha.info["transparency"] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the decoded image is taller than wide
    return [save(image, "PNG"), save(rgb, "PNG"), save(grey_alpha, "PNG", transparency=255),
            save(Image.fromarray(np.asarray(image).astype(np.uint16) * 257), "PNG"), save(image, "JPEG", quality=92),
            save(rgb, "JPEG", quality=92), save(image, "JPEG", quality=92, exif=exif.tobytes()),
            save(image, "TIFF")]


def _drain(feed):
    """Every batch of an open feed, released as read: ({line: decoded pixels}, {line: error}, lines left encoded
    for the device)."""
    seen, errors, device = {}, dict(feed.errors), []
    for batch in feed:
        errors.update(batch.errors)
        device += batch.device
        for k, i in enumerate(batch.indices.tolist()):
            h, w, off = int(batch.heights[k]), int(batch.widths[k]), int(batch.offsets[k])
            seen[i] = batch.pixels[off : off + h * w].reshape(h, w).copy()
        feed.release(batch.slot)
    return seen, errors, device


def test_line_feed_decodes_whole_batches_into_shared_buffers_as_the_guarded_decoder_does(book_lines):
    """Forked workers decode chunks of each batch straight into its shared buffer: every line's pixels equal
    `decode_line_image`'s (any encoding, EXIF rotation included), bad files give the guarded decoder's message,
    and every line comes back exactly once."""
    from ocr_assets.data.images import decode_line_image
    from ocr_assets.errors import ImageRejected
    from ocr_assets.models.compact.line_feed import OTHER, PLAIN_PNG, LineFeed, decoder_name, probe

    blobs = [b for im, _ in book_lines[:6] for b in _encodings(im)]
    bad = [b"", b"not an image", blobs[0][:60], _encodings(book_lines[0][0].resize((40, 4)))[0]]
    assert probe(blobs[0])[2] == PLAIN_PNG and probe(blobs[2])[2] == OTHER and probe(blobs[6])[2] == OTHER
    for decoder in dict.fromkeys(("pillow", decoder_name("auto"))):
        for workers in (0, 2):
            with LineFeed(blobs + bad, 48, batch_size=7, workers=workers, slots=3, decoder=decoder,
                          task_lines=3) as feed:
                seen, errors, device = _drain(feed)
            assert not device
            assert sorted(seen) == list(range(len(blobs))), (decoder, workers)
            for i, blob in enumerate(blobs):
                assert np.array_equal(seen[i], np.asarray(decode_line_image(blob))), (decoder, workers, i)
            assert sorted(errors) == list(range(len(blobs), len(blobs) + len(bad)))
            for i, blob in enumerate(bad):
                with pytest.raises(ImageRejected) as caught:
                    decode_line_image(blob)
                assert errors[len(blobs) + i] == f"ImageRejected: {caught.value}"
    # prepare=True: the workers also prepare every line, exactly as `prepare_line` does, into zero-padded rows.
    prepared = {}
    with LineFeed(blobs + bad, 48, batch_size=7, workers=2, slots=3, task_lines=3, prepare=True) as feed:
        errors = dict(feed.errors)
        for batch in feed:
            errors.update(batch.errors)
            rows = batch.pixels.reshape(-1, 48, batch.width)
            for k, i in enumerate(batch.indices.tolist()):
                row, w = rows[int(batch.offsets[k]) // (48 * batch.width)], int(batch.widths[k])
                assert int(batch.heights[k]) == 48 and not row[:, w:].any()
                prepared[i] = row[:, :w].copy()
            feed.release(batch.slot)
    assert sorted(prepared) == list(range(len(blobs))) and sorted(errors) == list(range(len(blobs), len(blobs) + len(bad)))
    for i, blob in enumerate(blobs):
        assert np.array_equal(prepared[i], prepare_line(decode_line_image(blob), 48)), i


def test_read_encoded_reads_any_encoding_on_the_cpu_and_jpeg_falls_back_to_the_host_without_torchvision(book_lines):
    """`read_encoded` with forked decode workers reads what `recognize` reads, for every encoding; JPEG lines go to
    the host decoder when no device decoder is there (no torchvision, or a CPU device)."""
    import importlib.util

    from ocr_assets.data.images import decode_line_image
    from ocr_assets.models.compact.device_prep import _device_jpeg, read_encoded
    from ocr_assets.models.compact.recognizer import CompactRecognizer

    if importlib.util.find_spec("torchvision") is None:
        assert _device_jpeg() is None
    blobs = [b for im, _ in book_lines[24:28] for b in _encodings(im)]
    reader = CompactRecognizer.load(shipped_model_dir(), device="cpu", cpu_precision="fp32")
    stats: dict = {}
    got = dict(read_encoded(reader, blobs + [b"\x89PNG\r\n\x1a\n broken"], batch_size=6, workers=2, stats=stats))
    assert stats["device_jpeg"] is False and stats["workers"] == 2
    assert sorted(got) == list(range(len(blobs) + 1))
    assert got[len(blobs)].error and not got[len(blobs)].text
    # What the guarded decoder gives (EXIF rotation applied; `recognize` on raw bytes does not rotate).
    expected = reader.recognize([decode_line_image(b) for b in blobs])
    assert [got[i].text for i in range(len(blobs))] == [r.text for r in expected]
    assert all(abs(got[i].confidence - r.confidence) < 0.01 for i, r in enumerate(expected))  # pixels within 2 levels
    # Prepared by the workers (Pillow, as the CPU path): the same pixels, so the same confidences too.
    host = dict(read_encoded(reader, blobs + [b"broken"], batch_size=6, workers=2, prepare_on="host"))
    assert host[len(blobs)].error and [host[i].text for i in range(len(blobs))] == [r.text for r in expected]
    assert all(abs(host[i].confidence - r.confidence) < 1e-4 for i, r in enumerate(expected))
    # Batches padded to coarser shapes (fewer cuDNN plans on a GPU): padding rows and columns change no reading.
    padded = dict(read_encoded(reader, blobs, batch_size=5, workers=0, prepare_on="host", width_multiple=64,
                               row_multiple=4))
    assert [padded[i].text for i in range(len(blobs))] == [host[i].text for i in range(len(blobs))]
    assert all(abs(padded[i].confidence - host[i].confidence) < 1e-3 for i in range(len(blobs)))
    # The same through the device resize path (`prepare_flat` pads to the width multiple).
    padded = dict(read_encoded(reader, blobs, batch_size=5, workers=0, prepare_on="device", width_multiple=64,
                               row_multiple=4))
    assert [padded[i].text for i in range(len(blobs))] == [got[i].text for i in range(len(blobs))]
    # Without the per-character details (what `recognize_dir` asks for): the same texts and line confidences.
    plain = dict(read_encoded(reader, blobs, batch_size=6, workers=0, prepare_on="host", details=False))
    assert [(plain[i].text, plain[i].confidence) for i in range(len(blobs))] == [
        (host[i].text, host[i].confidence) for i in range(len(blobs))]
    assert all(len(host[i].char_positions) == len(host[i].char_confidences) == len(host[i].text)
               for i in range(len(blobs))) and sum(bool(host[i].text) for i in range(len(blobs))) >= len(blobs) - 4
    assert not any(plain[i].char_confidences or plain[i].char_positions for i in range(len(blobs)))
    with pytest.raises(ValueError, match="prepare_on"):
        next(read_encoded(reader, blobs, prepare_on="gpu"))
    with pytest.raises(ValueError, match="width_multiple"):
        next(read_encoded(reader, blobs, width_multiple=20))


def test_collapse_on_the_device_reads_what_decode_best_reads():
    """The GPU path finds the kept labels on the device (`collapse_best`) and only gathers them on the host: the same
    ids, confidences, line confidences and positions as the host's `decode_best`, for lines of any length,
    lines that read nothing and runs that cross the end of a line."""
    import torch

    from ocr_assets.models.compact.device_prep import collapse_best, reads_from_collapsed
    from ocr_assets.models.compact.lines import decode_best

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(48, 70, 30, generator=generator) * 3
    logits[:, :, 0] += 1.5  # blanks common, as in a trained model
    logits[5, :, 0] += 50  # a line that reads nothing: its confidence is the mean blank probability
    logits[6, :, 7] += 50  # one label over every frame, past the line's end too
    lengths = torch.randint(1, 71, (48,), generator=generator)
    lengths[:3] = torch.tensor([70, 1, 2])
    lengths[6] = 30
    probs, best = logits.softmax(-1).max(-1)
    expected = decode_best(best.numpy(), probs.numpy(), lengths.numpy())
    got = reads_from_collapsed(*[t.numpy() for t in collapse_best(logits, lengths)], lengths.numpy())
    assert sum(len(e[0]) for e in expected) > 500 and expected[5][0] == [] and expected[6][0] == [7]
    for (ids, confs, line, where), (ids2, confs2, line2, where2) in zip(expected, got, strict=True):
        assert ids2 == ids and where2 == where
        assert np.allclose(confs2, confs, atol=1e-6) and abs(line2 - line) < 1e-5


def test_a_feed_pool_outlives_its_feeds_reads_headers_in_its_workers_and_pins_once(book_lines, monkeypatch):
    """A `FeedPool` kept across feeds: its workers (forked once) read the headers of a large input in parallel and
    map buffers made after they started; buffers are reused while they fit, grown when not, and a consumer's
    pin runs once per buffer and its unpin before the buffer is dropped."""
    from ocr_assets.data.images import decode_line_image
    from ocr_assets.models.compact import line_feed
    from ocr_assets.models.compact.line_feed import FeedPool, LineFeed

    monkeypatch.setattr(line_feed, "PROBE_LINES", 4)  # headers of any input over 8 lines go to the workers
    blobs = [b for im, _ in book_lines[:3] for b in _encodings(im)] + [b"", b"not an image"]
    pinned, unpinned = [], []

    def read(feed_pool, lines, batch_size):
        with LineFeed(lines, 48, batch_size=batch_size, slots=3, task_lines=3, pool=feed_pool) as feed:
            seen, errors, _ = _drain(feed)
            keys = [b.key for b in feed.shared]
        return seen, errors, keys

    with FeedPool(workers=2) as feed_pool:
        probing = LineFeed(blobs, 48, batch_size=5, slots=3, pool=feed_pool)  # > 2 x PROBE_LINES: workers read headers
        assert feed_pool.pool is not None and len(probing.errors) == 2
        with pytest.raises(RuntimeError, match="one at a time"):
            LineFeed(blobs, 48, pool=feed_pool)
        probing.close()
        workers = {p.pid for p in feed_pool.pool._pool}
        seen, errors, keys = read(feed_pool, blobs, 5)
        failed = feed_pool.pin(lambda view: pinned.append(view.nbytes) or True, lambda view: unpinned.append(view.nbytes))
        assert not failed and len(pinned) == 3
        assert sorted(errors) == [len(blobs) - 2, len(blobs) - 1] and "ImageRejected" in errors[len(blobs) - 1]
        for i in range(len(blobs) - 2):
            assert np.array_equal(seen[i], np.asarray(decode_line_image(blobs[i]))), i
        again, errors_again, keys_again = read(feed_pool, blobs[::-1], 5)  # the same buffers, the same workers
        assert keys_again == keys and {p.pid for p in feed_pool.pool._pool} == workers
        assert all(np.array_equal(again[len(blobs) - 1 - i], seen[i]) for i in seen)
        feed_pool.pin(lambda view: pinned.append(view.nbytes) or True, lambda view: unpinned.append(view.nbytes))
        assert len(pinned) == 3 and not unpinned  # kept buffers are pinned once
        big, _, keys_big = read(feed_pool, blobs * 6, 64)  # batches of 64: larger buffers, the old ones unpinned first
        assert keys_big[0] not in keys and len(unpinned) == 3 and len(big) == 6 * (len(blobs) - 2)
    assert feed_pool.pool is None and not feed_pool.slots


def test_a_feed_left_early_never_writes_into_the_next_feeds_buffers(monkeypatch):
    """A consumer that stops after one batch (an exception on the GPU, a closed generator) leaves decode tasks
    queued; closing the feed waits for them, so the next feed on the same pool gets only its own pixels. One line of
    the first feed decodes slowly (a delay around the real decoder) so that its stale write would land late."""
    import io
    import time

    from PIL import Image

    from ocr_assets.data.images import decode_line_image
    from ocr_assets.models.compact import line_feed
    from ocr_assets.models.compact.line_feed import FeedPool, LineFeed

    def png(width: int, value: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((48, width), value, dtype=np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    real = line_feed.decode_into

    def slow(blob, kind, out, decoder="pillow"):  # a slow decode writes its pixels at its end
        if line_feed.probe(blob)[0] == 333:
            time.sleep(1.0)
        return real(blob, kind, out, decoder)

    monkeypatch.setattr(line_feed, "decode_into", slow)  # before the fork: the workers have it
    first = [png(100, 0) for _ in range(4)] + [png(333, 0)] + [png(340, 0) for _ in range(40)]
    second = [png(100 + 8 * (i % 40), 200) for i in range(400)]
    with FeedPool(workers=2) as feed_pool:
        with LineFeed(first, 48, batch_size=4, slots=6, task_lines=1, pool=feed_pool) as feed:
            for _ in feed:
                break
        wrong = 0
        with LineFeed(second, 48, batch_size=8, slots=6, task_lines=2, pool=feed_pool) as feed:
            for batch in feed:
                time.sleep(0.02)  # the GPU's turn
                for k, i in enumerate(batch.indices.tolist()):
                    h, w, off = int(batch.heights[k]), int(batch.widths[k]), int(batch.offsets[k])
                    wrong += not np.array_equal(batch.pixels[off : off + h * w].reshape(h, w),
                                                np.asarray(decode_line_image(second[i])))
                feed.release(batch.slot)
    assert wrong == 0


def test_a_feed_never_closed_leaks_no_descriptor_or_memory(book_lines):
    """The encoded lines and buffers live in memfds; a feed dropped without close() releases them with the object."""
    import gc

    from ocr_assets.models.compact import line_feed
    from ocr_assets.models.compact.line_feed import LineFeed

    blobs = [b for im, _ in book_lines[:4] for b in _encodings(im)[:1]]
    gc.collect()
    fds, own = len(os.listdir("/proc/self/fd")), len(line_feed._OWN)
    for _ in range(5):
        feed = LineFeed(blobs, 48, batch_size=2, slots=2)
        assert len(line_feed._OWN) > own
        del feed
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds and len(line_feed._OWN) == own


def _deaf_to_sigterm(marker: str) -> None:
    import signal
    import time

    signal.signal(signal.SIGTERM, lambda *_: None)
    Path(marker).write_text(str(os.getpid()))
    time.sleep(3600)


def test_closing_a_feed_pool_stops_a_worker_that_would_outlive_sigterm(tmp_path):
    """A worker that survives SIGTERM (what a Python SIGTERM handler copied from the parent made of a SIGTERM that
    landed before the worker reset it: the suite once hung in `Pool.terminate`) is still stopped by `close`, here
    one busy in a task that ignores SIGTERM."""
    import signal
    import threading
    import time

    from ocr_assets.models.compact.line_feed import FeedPool

    marker = tmp_path / "pid"
    pool = FeedPool(1)
    pool.start()
    workers = list(pool.pool._pool)
    pool.submit(_deaf_to_sigterm, (str(marker),))
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the worker never ran the task"
    closer = threading.Thread(target=pool.close, daemon=True)
    closer.start()
    closer.join(60)
    hung = closer.is_alive()
    if hung:  # clean up for the tests after this one, then fail
        for worker in workers:
            worker.kill()
        closer.join(60)
    assert not hung, "FeedPool.close waited for a worker that ignores SIGTERM"
    assert [str(w.pid) for w in workers] == [marker.read_text()] and workers[0].exitcode == -signal.SIGKILL


def test_without_memfds_the_feed_decodes_in_its_own_process(book_lines, monkeypatch):
    """Where workers cannot map later buffers (no memfd or /proc: not Linux), a feed asked for workers decodes in
    its own process from anonymous mappings, with the same pixels."""
    from ocr_assets.data.images import decode_line_image
    from ocr_assets.models.compact import line_feed
    from ocr_assets.models.compact.line_feed import LineFeed

    monkeypatch.setattr(line_feed, "SHARED_BY_PATH", False)
    blobs = [b for im, _ in book_lines[:3] for b in _encodings(im)[:2]]
    with LineFeed(blobs, 48, batch_size=4, workers=2) as feed:
        assert feed.workers == 0 and feed.store.key[0] is None
        for batch in feed:
            for k, i in enumerate(batch.indices.tolist()):
                h, w, off = int(batch.heights[k]), int(batch.widths[k]), int(batch.offsets[k])
                assert np.array_equal(batch.pixels[off : off + h * w].reshape(h, w), np.asarray(decode_line_image(blobs[i])))
            feed.release(batch.slot)


def test_a_feed_of_files_reads_them_in_its_workers_as_a_feed_of_their_bytes(book_lines, tmp_path, monkeypatch):
    """`EncodedFiles`: the workers read the files into the feed's shared copy (no bytes through this process) —
    the same pixels and the same errors as the same bytes given in memory; a file gone since it was listed and
    one that grew say so as their line's error."""
    from ocr_assets.models.compact import line_feed
    from ocr_assets.models.compact.line_feed import EncodedFiles, LineFeed

    monkeypatch.setattr(line_feed, "PROBE_LINES", 4)  # headers and files read by the workers in parts
    blobs = [b for im, _ in book_lines[:6] for b in _encodings(im)] + [b"not an image"]
    paths = [tmp_path / f"l{i:02d}.img" for i in range(len(blobs))]
    for path, blob in zip(paths, blobs):
        path.write_bytes(blob)
    gone, grew = tmp_path / "gone.png", tmp_path / "grew.png"
    gone.write_bytes(blobs[0])
    grew.write_bytes(blobs[1])
    files = EncodedFiles(paths + [gone, grew])  # sizes taken now
    gone.unlink()
    grew.write_bytes(blobs[1] + b"more")

    def run(source, workers):
        with LineFeed(source, 48, batch_size=5, workers=workers, slots=3, task_lines=3) as feed:
            seen, errors, _ = _drain(feed)
        return seen, errors

    expected, expected_errors = run(blobs, 0)
    n = len(blobs)
    assert sorted(expected) == list(range(n - 1)) and list(expected_errors) == [n - 1]
    for workers in (0, 2):
        seen, errors = run(files, workers)
        assert sorted(seen) == sorted(expected), workers
        assert all(np.array_equal(seen[i], expected[i]) for i in expected), workers
        assert sorted(errors) == [n - 1, n, n + 1] and errors[n - 1] == expected_errors[n - 1]
        assert "No such file" in errors[n] and "changed while being read" in errors[n + 1], errors
    assert files[0] == blobs[0] and files.read(0) == (blobs[0], None)
    assert files.read(n)[0] is None and "No such file" in files.read(n)[1]


def test_recognize_dir_through_the_gpu_line_path_writes_the_same_rows(book_lines, tmp_path):
    """`recognize_dir` on the batched GPU line path (forced here on the CPU; on CUDA it is the default): the same
    rows in the same order as the per-chunk path — texts, confidences, an error row for a broken file — over
    several chunks sharing one decode pool, and a book's conventions applied on that path too."""
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.models.conventions import Conventions, with_conventions
    from ocr_assets.reading import find_images, recognize_dir, streams_on_gpu

    for k, (image, _) in enumerate(book_lines[30:41]):
        folder = tmp_path / "lines" / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"l{k:02d}.png")
    (tmp_path / "lines" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a line")
    reader = CompactRecognizer.load(shipped_model_dir(), device="cpu", cpu_precision="fp32")
    assert not streams_on_gpu(reader)  # a CPU device: the per-chunk path unless asked
    plain = list(recognize_dir(reader, tmp_path / "lines", batch_size=4))
    streamed = list(recognize_dir(reader, tmp_path / "lines", batch_size=4, chunk_size=5, gpu_stream=True))
    assert [r["image"] for r in streamed] == [r["image"] for r in plain] and len(plain) == 12
    assert [r["text"] for r in streamed] == [r["text"] for r in plain]
    by_bytes = list(recognize_dir(reader, tmp_path / "lines", batch_size=4, gpu_stream=True))  # `gpu_chunks`: one
    assert [(r["image"], r["text"], bool(r.get("error"))) for r in by_bytes] == [
        (r["image"], r["text"], bool(r.get("error"))) for r in streamed]
    assert all(abs(a["confidence"] - b["confidence"]) < 0.01 for a, b in zip(streamed, plain))
    assert [bool(r.get("error")) for r in streamed] == [r["image"] == "b/broken.png" for r in plain]
    # A pool the caller forked before (the CLI forks it while the model loads): used, and still open afterwards.
    from ocr_assets.models.compact.line_feed import FeedPool

    with FeedPool(2) as given:
        given.start()
        for _ in range(2):
            rows = list(recognize_dir(reader, tmp_path / "lines", batch_size=4, chunk_size=5, gpu_stream=True,
                                      feed_pool=given))
            assert [(r["image"], r["text"]) for r in rows] == [(r["image"], r["text"]) for r in streamed]
        assert given.pool is not None and given.feeds == 6  # 12 files in chunks of 5: three feeds a call
    assert all(bool(r.get("error")) == (r["image"] == "b/broken.png") for r in plain)
    raw = [r["text"] for r in plain]
    book = with_conventions(reader, Conventions(spacing={"ل": {"before": True}}))  # an odd habit, plainly visible
    plain = list(recognize_dir(book, tmp_path / "lines", batch_size=4))
    streamed = list(recognize_dir(book, tmp_path / "lines", batch_size=4, chunk_size=5, gpu_stream=True))
    assert [r["text"] for r in streamed] == [r["text"] for r in plain]
    assert sum(a != b for a, b in zip(raw, (r["text"] for r in plain))) >= 5

    def fails(*args, **kwargs):  # e.g. the GPU out of memory on a wide batch
        raise RuntimeError("CUDA out of memory (injected)")
        yield

    reader.recognize_encoded = fails  # the chunk is read the per-chunk way instead: no row lost
    fallback = list(recognize_dir(reader, tmp_path / "lines", batch_size=4, chunk_size=5, gpu_stream=True))
    assert [r["text"] for r in fallback] == raw
    assert [bool(r.get("error")) for r in fallback] == [r["image"] == "b/broken.png" for r in fallback]
    del reader.recognize_encoded
    # A file listed and then removed before it is read: an error row on both paths, the others read. One that
    # changed after the listing but before its chunk is read reads as it is then (sizes are taken at reading).
    paths = find_images(tmp_path / "lines")
    paths[3].unlink()
    paths[7].write_bytes(paths[7].read_bytes() + b"\0" * 16)  # still the same PNG to a decoder
    for stream in (False, True):
        rows = list(recognize_dir(reader, tmp_path / "lines", batch_size=4, chunk_size=5, gpu_stream=stream, paths=paths))
        assert [r["image"] for r in rows] == [r["image"] for r in plain]
        assert "No such file" in rows[3]["error"] and [r["text"] for k, r in enumerate(rows) if k != 3] == [
            t for k, t in enumerate(raw) if k != 3]


def test_the_gpu_path_reads_each_chunk_ahead_on_the_pools_thread_and_a_failed_read_ahead_loses_no_row(
        book_lines, tmp_path, monkeypatch):
    """On the GPU line path each chunk's files are read into shared memory and probed ahead (the first while the CLI
    loads the model, each next one while the one before is read) on the pool's read-ahead thread, never on the
    thread that drives the reader: the same rows as the per-chunk path. A read-ahead that fails costs no row (that
    chunk is read image by image), and closing a pool waits for what it was reading ahead."""
    import threading

    from ocr_assets import reading
    from ocr_assets.models.compact.line_feed import FeedPool, FileIndex
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.reading import find_images, recognize_dir

    root = tmp_path / "lines"
    for k, (image, _) in enumerate(book_lines[10:21]):
        (root / ("a" if k % 2 else "b")).mkdir(parents=True, exist_ok=True)
        image.save(root / ("a" if k % 2 else "b") / f"l{k:02d}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a line")
    monkeypatch.setattr(reading, "GPU_CHUNK_MAX", 4)
    built: list[str] = []
    original = FileIndex.__init__

    def recording(self, *args, **kwargs):
        built.append(threading.current_thread().name)
        original(self, *args, **kwargs)

    monkeypatch.setattr(FileIndex, "__init__", recording)
    reader = CompactRecognizer.load(shipped_model_dir(), device="cpu", cpu_precision="fp32")
    plain = [(r["image"], r["text"], bool(r.get("error"))) for r in recognize_dir(reader, root, batch_size=4)]
    assert len(plain) == 12 and sum(error for *_, error in plain) == 1
    paths = find_images(root)
    with FeedPool(2) as pool:
        files = reading.gpu_files(paths)
        assert [len(f) for f in files] == [4, 4, 4] and [p for f in files for p in f.paths] == list(map(str, paths))
        files[0].read_ahead(pool)  # as the CLI does before it loads the model
        rows = list(recognize_dir(reader, root, batch_size=4, gpu_stream=True, paths=paths, feed_pool=pool,
                                  files=files))
        assert [(r["image"], r["text"], bool(r.get("error"))) for r in rows] == plain
        assert built == ["ocr-assets-read-ahead"] * 3, built
        # The chunks are read on a thread of their own, one ahead of the rows; leaving early stops it.
        readers: list[str] = []
        inner = reader.recognize_encoded

        def recording_reader(*args, **kwargs):
            readers.append(threading.current_thread().name)
            return inner(*args, **kwargs)

        monkeypatch.setattr(reader, "recognize_encoded", recording_reader, raising=False)
        rows = recognize_dir(reader, root, batch_size=4, gpu_stream=True, paths=paths, feed_pool=pool)
        assert next(rows)["image"] == plain[0][0]
        rows.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("ocr-assets-gpu-reader")]
        assert readers and all(r.startswith("ocr-assets-gpu-reader") for r in readers) and len(readers) <= 2, readers
        monkeypatch.setattr(reader, "recognize_encoded", inner, raising=False)

        def out_of_memory(*args, **kwargs):  # fails before any feed takes the chunk's read-ahead
            raise RuntimeError("CUDA out of memory (injected)")

        monkeypatch.setattr(reader, "recognize_encoded", out_of_memory, raising=False)
        files = reading.gpu_files(paths)
        files[0].read_ahead(pool)
        rows = list(recognize_dir(reader, root, batch_size=4, gpu_stream=True, paths=paths, feed_pool=pool,
                                  files=files))
        assert [(r["image"], r["text"], bool(r.get("error"))) for r in rows] == plain
        assert all(f._ahead is None for f in files)  # each chunk's shared copy dropped when it was read another way
        monkeypatch.setattr(reader, "recognize_encoded", inner, raising=False)
        with pytest.raises(ValueError, match="images but paths"):  # chunks cut from another list
            next(recognize_dir(reader, root, gpu_stream=True, paths=paths, feed_pool=pool, files=files[:1]))

        def fails(self, files):
            raise OSError("injected: the disk went away")

        monkeypatch.setattr(FileIndex, "_read_all", fails)
        again = list(recognize_dir(reader, root, batch_size=4, gpu_stream=True, paths=paths, feed_pool=pool))
        assert [(r["image"], r["text"], bool(r.get("error"))) for r in again] == plain
    monkeypatch.undo()
    pool = FeedPool(2)
    (files,) = reading.gpu_files(paths)  # one chunk now
    files.read_ahead(pool)
    pool.close()  # returns once the read-ahead is done: its tasks ran on the workers before they went
    index = files.take_index()
    assert index.headers.shape == (12, 3) and (index.headers[:, 2] >= 0).sum() == 11 and len(index.errors) == 1
    index.store.close()


def test_gpu_chunks_are_cut_by_bytes_and_count_in_listing_order(tmp_path, monkeypatch):
    from ocr_assets import reading

    paths = []
    for i, size in enumerate([10, 10, 30, 5, 5, 5, 40, 1]):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(b"x" * size)
    paths.insert(2, tmp_path / "missing.png")  # counts as empty; its chunk reports it
    monkeypatch.setattr(reading, "GPU_CHUNK_BYTES", 30)
    monkeypatch.setattr(reading, "GPU_CHUNK_MAX", 3)
    chunks = reading.gpu_chunks(paths)
    assert [p for c in chunks for p in c] == paths
    assert [[p.name for p in c] for c in chunks] == [
        ["0.png", "1.png", "missing.png"], ["2.png"], ["3.png", "4.png", "5.png"], ["6.png"], ["7.png"]]
    assert reading.gpu_chunks([]) == []


def test_find_images_walks_once_in_path_order_like_rglob(tmp_path):
    """The scandir walk lists what `sorted(root.rglob("*"))` filtered to image files listed — same files, same
    order (by path parts: "a/x" before "a-c/x", which a plain string sort reverses), upper-case suffixes, links to
    files kept, broken links, other files and linked folders left out — also for a relative root."""

    from ocr_assets.reading import find_images

    root = tmp_path / "scans"
    for name in ["a/x.png", "a-c/x.png", "a/b/y.TIF", "a.png", "z/q.jpeg", "z/notes.txt", "z/img.png.bak", "B/k.jpg",
                 "..png", "z/.hidden.png", "z/png"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "z" / "link.png").symlink_to(root / "a.png")
    (root / "z" / "dead.png").symlink_to(root / "missing.png")
    (root / "linked").symlink_to(root / "a", target_is_directory=True)

    def reference(folder):
        from ocr_assets.data.gt_folder import IMAGE_EXTENSIONS

        return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    found = find_images(root)
    assert found == reference(root)
    assert [p.relative_to(root).as_posix() for p in found] == [
        "..png", "B/k.jpg", "a/b/y.TIF", "a/x.png", "a-c/x.png", "a.png", "z/.hidden.png", "z/link.png", "z/q.jpeg"]
    here = os.getcwd()
    try:
        os.chdir(root)
        assert find_images(Path(".")) == reference(Path(".")) and find_images(Path("a")) == [Path("a/b/y.TIF"), Path("a/x.png")]
    finally:
        os.chdir(here)
    assert find_images(tmp_path / "nowhere") == []


def test_load_recognizer_takes_the_runtime_and_refuses_it_for_other_backends(tmp_path):
    from ocr_assets.errors import ConfigError
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets_tests.test_images import render_line
    from ocr_assets_tests.tiny_models import tiny_ocr2

    line = render_line("قال أبو عثمان")
    torch_reader = load_recognizer(None, device="cpu", runtime="torch")
    onnx_reader = load_recognizer(None, device="cpu", runtime="onnx-fp32")
    assert type(torch_reader).__name__ == "CompactRecognizer" and type(onnx_reader).__name__ == "OnnxRecognizer"
    assert onnx_reader.recognize([line])[0].text == torch_reader.recognize([line])[0].text
    with pytest.raises(ConfigError, match="compact models only"):
        load_recognizer(tiny_ocr2(["قال"]).save(tmp_path / "ocr2"), device="cpu", runtime="onnx")
