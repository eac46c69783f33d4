"""Line preparation on the GPU for batched reading (issue 14): the host only decodes PNG/TIFF bytes to 8-bit grey
(forked worker processes writing whole batches into shared, page-locked buffers: `line_feed`), JPEG lines can be
decoded by nvJPEG on the device; resizing to the model's height and the ink lookup table run on the device for a
whole batch in a few kernels (one gather unpacks the batch's flat buffer), copied on a side stream while the
previous batch computes.

`prepare_batch` reproduces `lines.prepare_line` (Pillow's antialiased BILINEAR resize, horizontal pass then
vertical with 8-bit rounding in between, then the per-line histogram stretch): on the CPU its lines agree with
Pillow's to within a grey level or two, and the readings are the same (ocr_assets_tests/test_onnx_runtime.py).
Runs on any torch device; `read_encoded` is the end-to-end path `benchmarks/speed.py` measures on a GPU.
"""

from __future__ import annotations

import importlib.util

import math
from collections import deque
from typing import Iterator, Sequence

import numpy as np
import torch

from ocr_assets.models.base import Recognition
from ocr_assets.models.compact.labels import BLANK_ID
from ocr_assets.models.compact.lines import MAX_WIDTH_PER_HEIGHT, PAD_MULTIPLE, split_reads

CHUNK = 128  # lines resized at once (bounds the gather's memory: chunk x height x width x taps)


def decode_gray(blob: bytes) -> np.ndarray:
    """Encoded image -> (h, w) uint8 grey, through the guarded decoder (size caps, any mode); no resizing."""
    from ocr_assets.data.images import decode_line_image

    return np.asarray(decode_line_image(blob))


def _taps(in_sizes: torch.Tensor, out_sizes: torch.Tensor, out_max: int, taps: int, in_max: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's antialiased bilinear coefficients per line: (index, weight), each (lines, out_max, taps). `taps` and
    `in_max` come from the host (`_tap_count`), so nothing here waits for the device."""
    scale = in_sizes.double() / out_sizes.double()
    support = scale.clamp(min=1.0)  # the triangle filter (support 1) widened by the reduction
    o = torch.arange(out_max, device=in_sizes.device, dtype=torch.float64)
    center = (o[None, :] + 0.5) * scale[:, None]
    start = torch.floor(center - support[:, None] + 0.5).clamp(min=0)
    index = start[..., None] + torch.arange(taps, device=in_sizes.device, dtype=torch.float64)
    weight = (1.0 - ((index + 0.5 - center[..., None]) / support[:, None, None]).abs()).clamp(min=0.0)
    valid = (index < in_sizes[:, None, None]) & (o[None, :, None] < out_sizes[:, None, None])
    weight = weight * valid
    weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)
    return index.long().clamp(max=in_max - 1), weight.float()


def _tap_count(in_sizes: np.ndarray, out_sizes: np.ndarray) -> int:
    """Taps of the widest filter among these lines (host arithmetic, the same doubles as `_taps`)."""
    support = np.maximum(in_sizes.astype(np.float64) / out_sizes.astype(np.float64), 1.0)
    return int(math.ceil(2 * float(support.max()))) + 2


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255)


def ink_luts(counts: torch.Tensor) -> torch.Tensor:
    """(lines, 256) grey histograms -> (lines, 256) lookup tables, `lines._ink_lut` for a batch."""
    counts = counts.double()
    total = counts.sum(1, keepdim=True)
    cdf_inverted = counts.flip(1).cumsum(1)
    cdf_plain = counts.cumsum(1)
    background_inverted = torch.searchsorted(cdf_inverted, total / 2)
    inverted = background_inverted <= 127
    cdf = torch.where(inverted, cdf_inverted, cdf_plain)
    background = torch.where(inverted, background_inverted, torch.searchsorted(cdf_plain, total / 2))
    ink = torch.searchsorted(cdf, 0.995 * total)
    grey = torch.arange(256, device=counts.device, dtype=torch.float64)[None, :]
    values = torch.where(inverted, 255 - grey, grey)
    spread = (ink - background).double()
    stretched = ((values - background) * 255.0 / spread.clamp(min=1)).clamp(0, 255)
    return torch.where(spread > 25, stretched, values).round().to(torch.uint8)


def prepare_batch(images: Sequence[torch.Tensor], height: int, multiple: int = PAD_MULTIPLE
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, w) uint8 grey lines on one device -> (lines, 1, height, W) uint8 prepared lines and their widths."""
    heights = np.array([int(im.shape[0]) for im in images], dtype=np.int64)
    widths = np.array([int(im.shape[1]) for im in images], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(heights * widths)[:-1]]).astype(np.int64)
    flat = torch.cat([im.reshape(-1) for im in images])
    return prepare_flat(flat, offsets, heights, widths, height, multiple)


def prepare_flat(flat: torch.Tensor, offsets: np.ndarray, heights: np.ndarray, widths: np.ndarray, height: int,
                 multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, torch.Tensor]:
    """Lines stored one after another in `flat` (uint8 on the device; line k: heights[k] x widths[k] pixels from
    offsets[k], sizes on the host) -> (lines, 1, height, W) uint8 prepared lines and their widths on the device.
    Unpacked by one gather per chunk of lines; sizes known on the host, so no step waits for the device."""
    device = flat.device
    n = len(offsets)
    new_w = np.minimum(np.maximum(1, np.round(widths * height / heights)), height * MAX_WIDTH_PER_HEIGHT).astype(np.int64)
    out_w = -(-int(new_w.max()) // multiple) * multiple
    batch = torch.empty((n, 1, height, out_w), dtype=torch.uint8, device=device)
    sizes = torch.from_numpy(np.stack([offsets, heights, widths, new_w]).astype(np.int64)).to(device, non_blocking=True)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        off, hs, ws, nw = sizes[:, lo:hi]
        h_max, w_max, m = int(heights[lo:hi].max()), int(widths[lo:hi].max()), hi - lo
        y = torch.arange(h_max, device=device)
        x = torch.arange(w_max, device=device)
        inside = (y[None, :, None] < hs[:, None, None]) & (x[None, None, :] < ws[:, None, None])
        where = off[:, None, None] + y[None, :, None] * ws[:, None, None] + x[None, None, :]
        raw = (flat[torch.where(inside, where, 0)] * inside).float()  # (m, h_max, w_max), zero outside each line
        rows = torch.arange(m, device=device)
        # Horizontal pass (Pillow does it first), rounded to 8 bits as Pillow's intermediate image is.
        idx, wgt = _taps(ws, nw, out_w, _tap_count(widths[lo:hi], new_w[lo:hi]), w_max)
        wide = _to_uint8(torch.einsum("nhok,nok->nho", raw[rows[:, None, None], :, idx].permute(0, 3, 1, 2), wgt))
        # Vertical pass to the model's height.
        idx, wgt = _taps(hs, torch.full_like(hs, height), height,
                         _tap_count(heights[lo:hi], np.full(m, height)), h_max)
        lines = _to_uint8(torch.einsum("nokw,nok->now", wide[rows[:, None, None], idx, :], wgt)).to(torch.uint8)
        valid = (torch.arange(out_w, device=device)[None, None, :] < nw[:, None, None]).expand_as(lines)
        # Per-line histograms of the prepared pixels (padding left out) without a data-dependent size.
        keys = (lines.long() + 256 * rows[:, None, None]).reshape(-1)
        counts = torch.zeros(256 * m, dtype=torch.long, device=device).scatter_add_(0, keys, valid.reshape(-1).long())
        lut = ink_luts(counts.view(m, 256))
        mapped = torch.gather(lut, 1, lines.long().view(m, -1)).view_as(lines) * valid
        batch[lo:hi, 0] = mapped
    return batch, sizes[3].clone()


# read_encoded pads batches to multiples of these (width in px, lines), so a process meets few distinct shapes; on an
# H200 (48 px lines, batch 1024, docs/NOTES.md session 9) 64 x 256 read 22.3k lines/s once its shapes were met,
# against 18.1k with 8 x 1 (every batch a new shape, each paying cuDNN's plan building).
GPU_WIDTH_MULTIPLE = 64
GPU_ROW_MULTIPLE = 256


# --- greedy CTC on the device ---------------------------------------------------------------------------


def collapse_best(logits: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`lines.decode_best`'s label finding on the device, with no host wait: (best label per frame as int32, which
    frames start a kept label, the label's confidence there (its run's highest probability), each line's confidence).
    The host then only gathers the kept frames (`reads_from_collapsed`); fixed shapes, so it can queue behind the
    model and overlap the next batch."""
    probs, best = logits.float().softmax(-1).max(-1)
    batch, frames = best.shape
    valid = torch.arange(frames, device=best.device)[None, :] < lengths[:, None]
    blank = (best == BLANK_ID) & valid
    blank_count = blank.sum(1)
    blank_conf = torch.where(blank_count == 0, 1.0, (probs * blank).sum(1) / blank_count.clamp(min=1))
    starts = torch.ones_like(valid)
    starts[:, 1:] = ((best[:, 1:] != best[:, :-1]) & valid[:, 1:]) | (~valid[:, 1:] & valid[:, :-1])
    run = starts.reshape(-1).cumsum(0) - 1
    run_max = torch.zeros(batch * frames, device=probs.device, dtype=probs.dtype).scatter_reduce_(
        0, run, probs.reshape(-1), "amax", include_self=False)
    keep = starts & valid & (best != BLANK_ID)
    conf = run_max[run].reshape(batch, frames) * keep
    counts = keep.sum(1)
    line_conf = torch.where(counts > 0, conf.sum(1) / counts.clamp(min=1), blank_conf)
    return best.to(torch.int32), keep, conf, line_conf


def reads_from_collapsed(best: np.ndarray, keep: np.ndarray, conf: np.ndarray, line_conf: np.ndarray,
                         lengths: np.ndarray, details: bool = True) -> list[tuple]:
    """`decode_best`'s per-line result from `collapse_best`'s arrays (on the host); `details`: see `split_reads`."""
    flat = np.flatnonzero(keep)
    frames = keep.shape[1]
    return split_reads(best.ravel()[flat], conf.ravel()[flat].astype(float), flat // frames, flat % frames,
                       line_conf, lengths, details)


# --- end to end: encoded bytes -> text ---------------------------------------------------------------------


_JPEG_UNUSABLE: list = []  # not empty once torchvision, though installed, failed to import in this process


def _device_jpeg():
    """torchvision's batched nvJPEG decoder, or None (no torchvision, or one without CUDA decoding)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # noqa: BLE001 - not installed, or a build that does not import: JPEG lines decode on the host
        return None
    return lambda tensors, device: decode_jpeg(tensors, mode=ImageReadMode.GRAY, device=device)


def _pin(view: np.ndarray) -> bool:
    """Page-lock one of the feed's shared buffers so copies to the GPU run asynchronously from it (False: could not,
    or OCR_ASSETS_PIN_FEED=0; its copies are then synchronous)."""
    import os

    if os.environ.get("OCR_ASSETS_PIN_FEED", "1") == "0" or not view.nbytes:
        return False
    cudart = torch.cuda.cudart()
    if int(cudart.cudaHostRegister(view.ctypes.data, view.nbytes, 0)) == 0:
        return True
    clear = getattr(cudart, "cudaGetLastError", None)  # a failed call must not surface in a later kernel check
    if clear is not None:
        clear()
    return False


def _unpin(view: np.ndarray) -> None:
    torch.cuda.synchronize()  # no copy may still read it
    torch.cuda.cudart().cudaHostUnregister(view.ctypes.data)


def _decode_jpegs_on_device(jpeg, items: list[tuple[int, bytes]], device) -> tuple[list[torch.Tensor], list[str | None]]:
    """nvJPEG for a batch's JPEG lines; a batch the device decoder refuses is decoded on the host instead."""
    tensors = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for _, blob in items]
    try:
        return [im[0] for im in jpeg(tensors, device)], [None] * len(items)
    except Exception:  # noqa: BLE001 - e.g. a JPEG variant nvJPEG does not take: Pillow, one by one
        out, errors = [], []
        for _, blob in items:
            try:
                out.append(torch.from_numpy(decode_gray(blob)).to(device))
                errors.append(None)
            except Exception as exc:  # noqa: BLE001
                out.append(None)
                errors.append(f"{type(exc).__name__}: {exc}")
        return out, errors


def read_encoded(recognizer, blobs: Sequence[bytes], batch_size: int = 1024, workers: int = 8,
                 prefetch: int = 4, decoder: str = "auto", device_jpeg: bool | None = None,
                 stats: dict | None = None, in_flight: int | None = None, prepare_on: str = "auto",
                 pool=None, width_multiple: int | None = None, row_multiple: int | None = None,
                 details: bool = True) -> Iterator[tuple[int, Recognition]]:
    """(index, Recognition) for every encoded line image (PNG, JPEG, TIFF, ...), in batch order (errors first), with
    a torch CompactRecognizer on any device.

    `line_feed.LineFeed` reads the headers, groups lines of similar prepared widths into batches and has `workers`
    forked processes decode them into shared buffers (page-locked on CUDA); the device copies a batch on a side
    stream, unpacks and prepares it (`prepare_flat`), reads it, finds the kept CTC labels (`collapse_best`) and sends
    back only fixed-size arrays of them, while the host already launches the next batch and turns the previous one
    into text.
    `in_flight`: batches queued on the device ahead of the one being turned into text (default: 2 when the host
    prepares, else 1 — the faster of each on an H200). `prepare_on="host"`: the feed's workers also resize
    (`lines.prepare_line`'s own Pillow steps, so the CPU path's pixels) and the device only reads; "device": the
    workers only decode and `prepare_flat` resizes on the device; "auto" (default): host for lines near the model's
    height (`line_feed.AUTO_PREPARE_MAX_HEIGHT`) unless most are JPEG for nvJPEG, device otherwise.
    JPEG lines are decoded on the GPU by nvJPEG when torchvision is there (`device_jpeg`, default: on CUDA) —
    within a grey level or two of Pillow's decoder; everything else is Pillow's (or OpenCV's, identical) pixels.
    `stats`, when given, receives the feed's decoder and timings. `pool`: a `line_feed.FeedPool` kept by the caller
    across calls (its workers forked and its buffers page-locked once; `workers` and `decoder` are then the pool's);
    without one each call starts and stops its own. `width_multiple` / `row_multiple` (default on CUDA `GPU_WIDTH_MULTIPLE`,
    `GPU_ROW_MULTIPLE`, elsewhere none): batches are padded to these, so that a process meets few distinct shapes (cuDNN builds
    an execution plan, ~2.6 ms of host time per convolution, for each new one); padding rows read nothing and
    are dropped. `details=False`: Recognitions without per-character confidences and positions (text and line
    confidence only; the host's per-line work, which bounds the read once the GPU is fed, drops by about a third)."""
    from ocr_assets.models.compact.line_feed import JPEG, LineFeed

    device = torch.device(recognizer.device)
    height = recognizer.model.config.input_height
    cuda = device.type == "cuda"
    # nvJPEG through torchvision, imported only when JPEG lines are there to decode on the device: importing it
    # pulls in much of torch (seconds of a CLI's start-up) for folders of PNGs that never use it.
    jpeg_possible = (cuda and device_jpeg is not False and not _JPEG_UNUSABLE
                     and importlib.util.find_spec("torchvision") is not None)
    if prepare_on not in ("device", "host", "auto"):
        raise ValueError(f"prepare_on must be 'device', 'host' or 'auto'; got {prepare_on!r}")
    prepare = {"device": False, "host": True, "auto": "auto"}[prepare_on]
    width_multiple = max(PAD_MULTIPLE, int(width_multiple or (GPU_WIDTH_MULTIPLE if cuda else PAD_MULTIPLE)))
    if width_multiple % PAD_MULTIPLE:
        raise ValueError(f"width_multiple must be a multiple of {PAD_MULTIPLE}; got {width_multiple}")
    row_multiple = min(max(1, int(row_multiple or (GPU_ROW_MULTIPLE if cuda else 1))), max(1, batch_size))
    runner = recognizer._inference_model()  # before the feed: nothing may fail between its creation and `with`
    copy_stream = torch.cuda.Stream(device) if cuda else None
    feed = LineFeed(blobs, height, batch_size, workers=workers, slots=prefetch + max(1, in_flight or 2) + 1,
                    device_kinds=(JPEG,) if jpeg_possible else (), decoder=decoder, prepare=prepare, pool=pool,
                    width_multiple=width_multiple)
    jpeg = None
    if feed.device_kinds and bool(np.isin(feed.kinds, feed.device_kinds).any()):
        jpeg = _device_jpeg()
        if jpeg is None:  # installed but it does not import: these lines, and later calls', decode on the host
            feed.close()
            _JPEG_UNUSABLE.append(True)
            yield from read_encoded(recognizer, blobs, batch_size=batch_size, workers=workers, prefetch=prefetch,
                                    decoder=decoder, device_jpeg=False, stats=stats, in_flight=in_flight,
                                    prepare_on=prepare_on, pool=pool, width_multiple=width_multiple,
                                    row_multiple=row_multiple, details=details)
            return
    in_flight = max(1, int(in_flight)) if in_flight is not None else (2 if feed.prepare else 1)
    if stats is not None:
        stats.update(decoder=feed.decoder, device_jpeg=bool(jpeg), batches=len(feed.batches), workers=feed.workers,
                     prepared_on="host" if feed.prepare else "device", in_flight=in_flight)
    with feed:
        if cuda:
            feed.feed_pool.pin(_pin, _unpin)
        try:
            for i, message in feed.errors:
                yield i, Recognition(text="", confidence=0.0, error=message)
            launched: deque = deque()
            with torch.inference_mode(), recognizer._inference_context():
                for batch in feed:
                    for i, message in batch.errors:
                        yield i, Recognition(text="", confidence=0.0, error=message)
                    launched.append(_launch(recognizer, runner, batch, height, device, copy_stream, jpeg,
                                            width_multiple, row_multiple, batch_size))
                    while len(launched) > in_flight:
                        yield from _finish(recognizer, feed, launched.popleft(), details)
                while launched:
                    yield from _finish(recognizer, feed, launched.popleft(), details)
        finally:
            if cuda:
                torch.cuda.synchronize(device)


def _launch(recognizer, runner, batch, height: int, device, copy_stream, jpeg, width_multiple: int = PAD_MULTIPLE,
            row_multiple: int = 1, batch_size: int = 0):
    """Queue a batch's copy, preparation and reading on the device; nothing here waits for it."""
    if copy_stream is not None:
        with torch.cuda.stream(copy_stream):
            flat = torch.from_numpy(batch.pixels).to(device, non_blocking=True)
        torch.cuda.current_stream(device).wait_stream(copy_stream)
        flat.record_stream(torch.cuda.current_stream(device))
    else:
        flat = torch.from_numpy(batch.pixels).to(device)
    errors: dict[int, str] = {}
    keep = np.ones(len(batch.indices), dtype=bool)
    if batch.device:  # JPEG lines: nvJPEG, appended after the host lines in the order of their offsets
        decoded, messages = _decode_jpegs_on_device(jpeg, batch.device, device)
        parts = [flat]
        for (k, _), im, message in zip(batch.device, decoded, messages):
            size = int(batch.heights[k] * batch.widths[k])
            if message is not None or im.numel() != size:  # keeps its place (offsets), read as blank, reported
                errors[int(batch.indices[k])] = message or "ImageRejected: decoded size differs from the header"
                keep[k] = False
                im = torch.zeros(size, dtype=torch.uint8, device=device)
            parts.append(im.reshape(-1))
        flat = torch.cat(parts)
    if batch.width:  # prepared by the feed's workers: (lines, height, width) rows, failed lines' rows left out
        rows = flat.view(-1, height, batch.width)
        if len(batch.indices) != rows.shape[0]:
            rows = rows[torch.from_numpy(batch.offsets // (height * batch.width)).to(device)]
        pixels = rows.unsqueeze(1)
        lengths = torch.from_numpy(batch.widths).to(device, non_blocking=True)
    else:
        with torch.autocast(device.type, enabled=False):  # the resize sums 8-bit values: full precision
            pixels, lengths = prepare_flat(flat, batch.offsets, batch.heights, batch.widths, height, width_multiple)
    n = pixels.shape[0]
    padded = min(-(-n // row_multiple) * row_multiple, max(n, batch_size))  # never past a full batch
    if padded > n:  # blank rows up to the next multiple: a shape the process has likely met already
        extra = padded - n
        pixels = torch.cat([pixels, pixels.new_zeros((extra, *pixels.shape[1:]))])
        lengths = torch.cat([lengths, lengths.new_ones(extra)])
    out = runner(pixels, lengths)
    host, done = [t[:n] for t in (*collapse_best(out.logits, out.output_lengths), out.output_lengths)], None
    if copy_stream is not None:  # into page-locked memory, so the copies queue behind the batch without waiting
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True) for t in host]
        done = torch.cuda.Event()
        done.record()
    return batch, host, done, errors, keep


def _finish(recognizer, feed, launched, details: bool = True) -> Iterator[tuple[int, Recognition]]:
    """Wait for a launched batch, give its buffer back to the feed and turn its labels into text."""
    batch, collapsed, done, errors, keep = launched
    if done is not None:
        done.synchronize()
    feed.release(batch.slot)
    decode = recognizer.codec.decode
    reads = reads_from_collapsed(*[t.numpy() for t in collapsed], details=details)
    for i, ok, (ids, confs, line, where) in zip(batch.indices.tolist(), keep.tolist(), reads):
        if not ok:
            yield i, Recognition(text="", confidence=0.0, error=errors[i])
        else:
            yield i, Recognition(text=decode(ids), confidence=line, char_confidences=confs, char_positions=where)
