"""Line preparation on the GPU for batched reading (issue 14): the host only decodes PNG/JPEG/TIFF bytes to 8-bit
grey (worker processes); resizing to the model's height and the ink lookup table run on the device for a whole
batch in a few kernels, from one pinned host buffer copied on a side stream while the previous batch computes.

`prepare_batch` reproduces `lines.prepare_line` (Pillow's antialiased BILINEAR resize, horizontal pass then
vertical with 8-bit rounding in between, then the per-line histogram stretch): on the CPU its lines agree with
Pillow's to within a grey level or two, and the readings are the same (ocr_assets_tests/test_onnx_runtime.py).
Runs on any torch device; `read_encoded` is the end-to-end path `benchmarks/speed.py` measures on a GPU.
"""

from __future__ import annotations

import io
import math
from typing import Iterator, Sequence

import numpy as np
import torch

from ocr_assets.models.base import Recognition
from ocr_assets.models.compact.lines import MAX_WIDTH_PER_HEIGHT, PAD_MULTIPLE, width_batches

CHUNK = 128  # lines resized at once (bounds the gather's memory: chunk x height x width x taps)


def decode_gray(blob: bytes) -> np.ndarray:
    """Encoded image -> (h, w) uint8 grey, through the guarded decoder (size caps, any mode); no resizing."""
    from ocr_assets.data.images import decode_line_image

    return np.asarray(decode_line_image(blob))


def target_width(w: int, h: int, height: int) -> int:
    """The prepared width, exactly as `prepare_line` computes it."""
    return min(max(1, round(w * height / h)), height * MAX_WIDTH_PER_HEIGHT)


def _taps(in_sizes: torch.Tensor, out_sizes: torch.Tensor, out_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's antialiased bilinear coefficients per line: (index, weight), each (lines, out_max, taps)."""
    scale = in_sizes.double() / out_sizes.double()
    support = scale.clamp(min=1.0)  # the triangle filter (support 1) widened by the reduction
    taps = int(math.ceil(2 * float(support.max()))) + 2
    o = torch.arange(out_max, device=in_sizes.device, dtype=torch.float64)
    center = (o[None, :] + 0.5) * scale[:, None]
    start = torch.floor(center - support[:, None] + 0.5).clamp(min=0)
    index = start[..., None] + torch.arange(taps, device=in_sizes.device, dtype=torch.float64)
    weight = (1.0 - ((index + 0.5 - center[..., None]) / support[:, None, None]).abs()).clamp(min=0.0)
    valid = (index < in_sizes[:, None, None]) & (o[None, :, None] < out_sizes[:, None, None])
    weight = weight * valid
    weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)
    return index.long().clamp(max=int(in_sizes.max()) - 1), weight.float()


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
    device = images[0].device
    sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
    widths = [target_width(w, h, height) for h, w in sizes]
    out_w = -(-max(widths) // multiple) * multiple
    batch = torch.zeros((len(images), 1, height, out_w), dtype=torch.uint8, device=device)
    for lo in range(0, len(images), CHUNK):
        part = images[lo : lo + CHUNK]
        hs = torch.tensor([s[0] for s in sizes[lo : lo + CHUNK]], device=device)
        ws = torch.tensor([s[1] for s in sizes[lo : lo + CHUNK]], device=device)
        nw = torch.tensor(widths[lo : lo + CHUNK], device=device)
        h_max, w_max, n = int(hs.max()), int(ws.max()), len(part)
        raw = torch.zeros((n, h_max, w_max), dtype=torch.float32, device=device)
        for i, im in enumerate(part):
            raw[i, : im.shape[0], : im.shape[1]] = im
        rows = torch.arange(n, device=device)
        # Horizontal pass (Pillow does it first), rounded to 8 bits as Pillow's intermediate image is.
        idx, wgt = _taps(ws, nw, out_w)
        wide = _to_uint8(torch.einsum("nhok,nok->nho", raw[rows[:, None, None], :, idx].permute(0, 3, 1, 2), wgt))
        # Vertical pass to the model's height.
        idx, wgt = _taps(hs, torch.full_like(hs, height), height)
        lines = _to_uint8(torch.einsum("nokw,nok->now", wide[rows[:, None, None], idx, :], wgt)).to(torch.uint8)
        valid = torch.arange(out_w, device=device)[None, None, :] < nw[:, None, None]
        flat = (lines.long() + 256 * rows[:, None, None]).masked_select(valid.expand_as(lines))
        counts = torch.bincount(flat, minlength=256 * n).view(n, 256)
        lut = ink_luts(counts)
        mapped = torch.gather(lut, 1, lines.long().view(n, -1)).view_as(lines) * valid
        batch[lo : lo + n, 0] = mapped
    return batch, torch.tensor(widths, dtype=torch.long, device=device)


# --- end to end: encoded bytes -> text ---------------------------------------------------------------------


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, blobs: Sequence[bytes]):
        self.blobs = blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int):
        try:
            return i, decode_gray(self.blobs[i]), None
        except Exception as exc:  # noqa: BLE001 - one bad image gives an error row
            return i, None, f"{type(exc).__name__}: {exc}"


def _pack(items):
    """Worker side: one flat uint8 buffer (pinned by the loader) and the lines' shapes."""
    good = [(i, a) for i, a, _ in items if a is not None]
    flat = torch.from_numpy(np.concatenate([a.ravel() for _, a in good])) if good else torch.zeros(0, dtype=torch.uint8)
    shapes = [a.shape for _, a in good]
    return [i for i, _ in good], flat, shapes, [(i, e) for i, _, e in items if e is not None]


def _header_width(blob: bytes, height: int) -> int:
    from PIL import Image

    try:
        w, h = Image.open(io.BytesIO(blob)).size
        return target_width(w, h, height)
    except Exception:  # noqa: BLE001 - decoded (and reported) by a worker later
        return 1


def read_encoded(recognizer, blobs: Sequence[bytes], batch_size: int = 1024, workers: int = 8,
                 prefetch: int = 4) -> Iterator[tuple[int, Recognition]]:
    """(index, Recognition) for every encoded line image, in batch order, with a torch CompactRecognizer on any
    device: worker processes decode, the device prepares and reads; batches group similar prepared widths (from
    the image headers), the next batch's copy runs on a side stream while the current one computes."""
    from ocr_assets.models.compact.recognizer import greedy_decode

    device = torch.device(recognizer.device)
    height = recognizer.model.config.input_height
    widths = [_header_width(b, height) for b in blobs]
    batches = width_batches(widths, batch_size, waste=0.15)
    loader = torch.utils.data.DataLoader(
        _Decoded(blobs), batch_sampler=batches, num_workers=workers, collate_fn=_pack,
        pin_memory=device.type == "cuda", prefetch_factor=prefetch if workers else None)
    runner = recognizer._inference_model()
    copy_stream = torch.cuda.Stream() if device.type == "cuda" else None

    def upload(item):
        idx, flat, shapes, errors = item
        if copy_stream is None:
            return idx, flat.to(device), shapes, errors
        with torch.cuda.stream(copy_stream):
            on_device = flat.to(device, non_blocking=True)
        return idx, on_device, shapes, errors

    loaded = iter(loader)
    nxt = next(loaded, None)
    nxt = upload(nxt) if nxt is not None else None
    with torch.inference_mode(), recognizer._autocast():
        while nxt is not None:
            idx, flat, shapes, errors = nxt
            if copy_stream is not None:
                torch.cuda.current_stream().wait_stream(copy_stream)
                flat.record_stream(torch.cuda.current_stream())  # copied on the side stream, read on this one
            following = next(loaded, None)
            nxt = upload(following) if following is not None else None  # overlaps with the work below
            for i, message in errors:
                yield i, Recognition(text="", confidence=0.0, error=message)
            if not idx:
                continue
            offsets = np.cumsum([0] + [h * w for h, w in shapes])
            images = [flat[offsets[k] : offsets[k + 1]].view(h, w) for k, (h, w) in enumerate(shapes)]
            with torch.autocast(device.type, enabled=False):  # the resize sums 8-bit values: full precision
                pixels, lengths = prepare_batch(images, height)
            out = runner(pixels, lengths)
            for i, (ids, confs, line, where) in zip(idx, greedy_decode(out.logits, out.output_lengths, positions=True)):
                yield i, Recognition(text=recognizer.codec.decode(ids), confidence=line, char_confidences=confs,
                                     char_positions=where)
