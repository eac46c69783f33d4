"""Issue 14's speed table: CPU lines, CPU pages, GPU lines, GPU pages (GPU rows when torch sees CUDA) — ours and
Tesseract 5 in the same run on the same inputs, ratios, the command of each row, the machine and its load.

    .venv/bin/python benchmarks/speed.py [--lines 1000] [--pages 12] [--gpu-lines 50000] [--json OUT]

CPU lines: evenly spaced real lines of shared/data/ocr_gs_print (the shipped model trained on these five books, so
their CER is not an unseen-book figure; the speed is what counts here). Start-up (`ocr-assets --help`, a 1-line
`recognize`), per-line cost (lines/s with the model already loaded) and whole process (`ocr-assets recognize` on
all lines) are measured separately, per runtime. Tesseract: `--psm 13`, one process per line, two at a time,
OMP_THREAD_LIMIT=1. CPU pages: synthetic archive scans (3,400 px wide, 1-bit G4 TIFF, `pagekit/archive_pages.py`)
read by `ocr-assets pages`, Tesseract `--psm 3`, two processes; page CER on both. GPU lines: PNG bytes -> text
(`device_prep.read_encoded`: host decode in workers, resize on the GPU); GPU pages: the same archive pages,
segmentation in host worker processes, lines read on the GPU.

--cli "CMD" measures another build's command for the whole-process rows (e.g. a checkout of older code:
--cli "env PYTHONSAFEPATH=1 PYTHONPATH=OLD_CHECKOUT .venv/bin/python -m ocr_assets.cli" --runtimes default;
without PYTHONSAFEPATH=1, `-m` puts the working directory first on sys.path and this checkout's code runs instead).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import tesseract_many, tesseract_version  # noqa: E402

from ocr_assets import metrics  # noqa: E402
from ocr_assets.settings import shared_data_dir  # noqa: E402
from ocr_assets.text import normalize  # noqa: E402

ROWS: list[dict] = []


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    try:
        peer = tesseract_version()
    except OSError:  # a GPU box without Tesseract: run it with --skip-tesseract
        peer = "no tesseract"
    return {"cpu": model, "cores": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "tesseract": peer}


def row(section: str, system: str, seconds: float | None, items: int | None, unit: str, command: str, **extra) -> dict:
    rate = items / seconds if seconds and items else None
    entry = {"section": section, "system": system, "seconds": None if seconds is None else round(seconds, 2),
             "items": items, "rate": None if rate is None else round(rate, 2), "unit": unit, "command": command, **extra}
    ROWS.append(entry)
    print(json.dumps(entry, ensure_ascii=False), file=sys.stderr, flush=True)
    return entry


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{shlex.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def jsonl_texts(path: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {r["image"]: r["text"] for r in rows}


# --- CPU lines ---------------------------------------------------------------------------------------------


def cpu_lines(args, tmp: Path, cli: list[str]) -> tuple[float, int]:
    pngs = sorted((shared_data_dir() / "ocr_gs_print").glob("*/*.png"))
    pngs = pngs[:: max(1, len(pngs) // args.lines)][: args.lines]
    folder, one = tmp / "lines", tmp / "one"
    folder.mkdir()
    one.mkdir()
    refs = {}
    for p in pngs:
        name = f"{p.parent.name}__{p.name}"
        shutil.copy2(p, folder / name)
        refs[name] = normalize(p.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8"))
    shutil.copy2(pngs[0], one / "line.png")
    names = sorted(refs)
    n = len(names)
    runtimes = [r for r in args.runtimes.split(",") if r]

    def flags(runtime: str) -> list[str]:
        return [] if runtime == "default" else ["--runtime", runtime]

    # Start-up: the help text, then a 1-line run (after one untimed run that builds the ONNX graph cache).
    help_s = statistics.median(timed([*cli, "--help"]) for _ in range(3))
    row("start-up", "ocr-assets --help", help_s, None, "s", f"{shlex.join(cli)} --help")
    for runtime in runtimes:
        cmd = [*cli, "recognize", str(one), "--out", str(tmp / "one.jsonl"), "--model", "default", "--device", "cpu",
               *flags(runtime)]
        timed(cmd)
        row("start-up", f"ocr-assets recognize, 1 line, runtime {runtime}", statistics.median(timed(cmd) for _ in range(3)),
            None, "s", shlex.join(cmd).replace(str(tmp), "TMP"))
    # Whole process on all lines.
    for runtime in runtimes:
        out = tmp / f"ours-{runtime}.jsonl"
        cmd = [*cli, "recognize", str(folder), "--out", str(out), "--model", "default", "--device", "cpu", *flags(runtime)]
        seconds = timed(cmd)
        texts = jsonl_texts(out)
        score = metrics.score([refs[k] for k in names], [texts.get(k, "") for k in names])
        row("CPU lines, whole process", f"ours, runtime {runtime}", seconds, n, "lines/s",
            shlex.join(cmd).replace(str(tmp), "TMP"), cer_norm=round(score.cer_norm, 4))
    tess, tess_s = ([], 0.0) if args.skip_tesseract else tesseract_many([folder / k for k in names], psm=13)
    if tess:
        score = metrics.score([refs[k] for k in names], tess)
        row("CPU lines, whole process", "Tesseract --psm 13, 2 processes", tess_s, n, "lines/s",
            "tesseract LINE stdout --psm 13 -l ara (2 at a time, OMP_THREAD_LIMIT=1)", cer_norm=round(score.cer_norm, 4))
    if not args.cli:
        per_line(folder, names, refs)
    return tess_s, n


def per_line(folder: Path, names: list[str], refs: dict) -> None:
    """Lines/s with the model loaded (decode + prepare + model + decode of the CTC output), per runtime."""
    from ocr_assets.data.images import decode_line_image
    from ocr_assets.models.compact.onnx_reader import OnnxRecognizer
    from ocr_assets.models.compact.recognizer import CompactRecognizer
    from ocr_assets.models.resolve import shipped_model_dir

    blobs = [(folder / k).read_bytes() for k in names]
    readers = {"onnx int8": lambda: OnnxRecognizer.load(shipped_model_dir(), precision="int8"),
               "onnx fp32": lambda: OnnxRecognizer.load(shipped_model_dir(), precision="fp32"),
               "torch (auto precision)": lambda: CompactRecognizer.load(shipped_model_dir(), device="cpu")}
    for name, load in readers.items():
        reader = load()
        reader.recognize([decode_line_image(b) for b in blobs[:64]], batch_size=32)  # warm-up
        best, texts = float("inf"), []
        for _ in range(2):
            start = time.perf_counter()
            texts = [r.text for r in reader.recognize([decode_line_image(b) for b in blobs], batch_size=32)]
            best = min(best, time.perf_counter() - start)
        score = metrics.score([refs[k] for k in names], texts)
        precision = getattr(reader, "cpu_precision", getattr(reader, "precision", ""))
        row("CPU lines, per line (model loaded)", f"ours, {name} ({precision})", best, len(blobs), "lines/s",
            "in process: decode_line_image + recognizer.recognize, batch 32", cer_norm=round(score.cer_norm, 4))


# --- CPU pages ---------------------------------------------------------------------------------------------


def page_refs(folder: Path) -> dict[str, str]:
    return {p.name[: -len(".gt.txt")]: normalize(" ".join(p.read_text(encoding="utf-8").split("\n")))
            for p in sorted(folder.glob("*.gt.txt"))}


def page_score(refs: dict[str, str], texts: dict[str, str]) -> float:
    names = sorted(refs)
    return metrics.score([refs[k] for k in names], [normalize(" ".join(texts.get(k, "").split("\n"))) for k in names]).cer_norm


def make_pages(args, tmp: Path) -> Path:
    from pagekit.archive_pages import write_archive_pages

    folder = tmp / "pages"
    write_archive_pages(folder, args.pages, seed=args.page_seed, width=args.page_width)
    return folder


def cpu_pages(args, tmp: Path, cli: list[str], folder: Path) -> None:
    refs = page_refs(folder)
    tiffs = sorted(folder.glob("*.tif"))
    variants = [("one process per core (default)", [])] + ([] if args.cli else [("in one process (--workers 0)", ["--workers", "0"])])
    for label, extra in variants:
        out = tmp / f"pages-out-{len(extra)}"
        cmd = [*cli, "pages", str(folder), "--out", str(out), "--model", "default", "--device", "cpu", *extra]
        seconds = timed(cmd)
        texts = {p.name[: -len(".txt")]: p.read_text(encoding="utf-8") for p in out.glob("*.txt")}
        row("CPU pages, whole process", f"ours, {label}", seconds, len(tiffs), "pages/s",
            shlex.join(cmd).replace(str(tmp), "TMP"), s_per_page=round(seconds / len(tiffs), 3),
            cer_norm=round(page_score(refs, texts), 4))
    if not args.skip_tesseract:
        tess, tess_s = tesseract_many(tiffs, psm=3)
        row("CPU pages, whole process", "Tesseract --psm 3, 2 processes", tess_s, len(tiffs), "pages/s",
            "tesseract PAGE stdout --psm 3 -l ara (2 at a time, OMP_THREAD_LIMIT=1)",
            s_per_page=round(tess_s / len(tiffs), 3),
            cer_norm=round(page_score(refs, {p.stem: t for p, t in zip(tiffs, tess)}), 4))


# --- GPU ---------------------------------------------------------------------------------------------------


def cuda_card() -> str | None:
    if not glob.glob("/dev/nvidia[0-9]*"):
        return None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def line_sets(args) -> list[tuple[str, list[bytes]]]:
    """(label, PNG bytes) per line folder: --line-dirs (folders of */*.png lines), default the shared books' lines."""
    dirs = [Path(d) for d in args.line_dirs.split(",") if d] if args.line_dirs else [shared_data_dir() / "ocr_gs_print"]
    out = []
    for d in dirs:
        pngs = sorted(d.glob("*/*.png")) or sorted(d.glob("*.png"))
        blobs = [p.read_bytes() for p in pngs]
        sizes = [int.from_bytes(b[16:20], "big") * int.from_bytes(b[20:24], "big") for b in blobs[:200]]
        heights = sorted(int.from_bytes(b[20:24], "big") for b in blobs[:200])
        out.append((f"{d.parent.name}/{d.name} ({len(blobs)} PNG lines, median height {heights[len(heights) // 2]} px, "
                    f"{statistics.mean(sizes) / 1e3:.0f} kpx)", blobs))
    return out


def host_feed_rows(args, sets) -> None:
    """Decode + pack on the host alone (`line_feed.LineFeed`, no model): lines/s in this process (one core) and with
    worker processes, per decoder; what the host could feed a GPU."""
    from ocr_assets.models.compact.line_feed import LineFeed, decoder_name

    def rate(blobs, workers, decoder):
        best = float("inf")
        for _ in range(2):
            start, count = time.perf_counter(), 0
            with LineFeed(blobs, 48, args.gpu_batch[0], workers=workers, slots=workers // 2 + 6, decoder=decoder) as feed:
                for batch in feed:
                    count += len(batch.indices)
                    feed.release(batch.slot)
            best = min(best, time.perf_counter() - start)
        return best, count

    worker_counts = sorted({int(w) for w in args.feed_workers.split(",") if w})
    for label, base in sets:
        blobs = (base * (args.feed_lines // len(base) + 1))[: args.feed_lines]
        for decoder in dict.fromkeys(("pillow", decoder_name("auto"))):
            for workers in worker_counts:
                seconds, count = rate(blobs, workers, decoder)
                row("host feed (decode + pack, no model)",
                    f"{label}: {decoder}, {'in process' if workers == 0 else f'{workers} workers'}", seconds, count,
                    "lines/s", f"python benchmarks/speed.py --feed-lines {args.feed_lines} --feed-workers {args.feed_workers}",
                    per_core=round(count / seconds / max(workers, 1), 1))


def gpu_rows(args, card: str, folder: Path, sets) -> None:
    import io

    import torch
    from PIL import Image

    from ocr_assets.models.compact.device_prep import read_encoded
    from ocr_assets.models.compact.line_feed import FeedPool, default_workers
    from ocr_assets.models.compact.lines import prepare_line
    from ocr_assets.models.compact.recognizer import CompactRecognizer, collate_lines
    from ocr_assets.models.resolve import shipped_model_dir
    from ocr_assets.pages.ocr import ocr_page_files

    workers = args.gpu_workers or default_workers()
    rec = CompactRecognizer.load(shipped_model_dir(), device="cuda")

    def jpeg(blob: bytes) -> bytes:
        buf = io.BytesIO()
        Image.open(io.BytesIO(blob)).convert("L").save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    base = sets[0][1]
    batch_sizes = args.gpu_batch
    for label, lines in sets:
        encodings = [("PNG", lines)] + ([("JPEG q90", [jpeg(b) for b in lines])] if args.gpu_jpeg else [])
        for kind, encoded in encodings:
            blobs = (encoded * (args.gpu_lines // len(encoded) + 1))[: args.gpu_lines]
            for batch_size in batch_sizes:
                # First call: its own pool (forks its workers, page-locks its buffers) and batch shapes the process
                # has mostly not met (after a 4,096-line warm-up). Then the same lines on a pool kept from a full
                # pass over them: what a service or a library read pays per line once under way.
                with FeedPool(workers) as kept:
                    for pool in (None, kept):
                        warm = blobs[:4096] if pool is None else blobs
                        list(read_encoded(rec, warm, batch_size=batch_size, workers=workers, pool=pool))
                        torch.cuda.synchronize()
                        stats: dict = {}
                        start = time.perf_counter()
                        count = sum(1 for _ in read_encoded(rec, blobs, batch_size=batch_size, workers=workers,
                                                            stats=stats, pool=pool))
                        torch.cuda.synchronize()
                        row("GPU lines", f"ours, {label} as {kind} bytes -> text, {workers} decode workers "
                            f"({stats['decoder']}{', nvJPEG' if stats['device_jpeg'] else ''}), resize on the "
                            f"{'host' if stats['prepared_on'] == 'host' else 'GPU'}, {stats['in_flight']} in flight, "
                            f"batch {batch_size}, " + ("steady state: pool kept, shapes met in a pass before" if pool
                                                       else "first call: own pool, shapes mostly new") + f" ({card})",
                            time.perf_counter() - start, count, "lines/s",
                            f"python benchmarks/speed.py --gpu-lines {args.gpu_lines} --gpu-batch {','.join(map(str, batch_sizes))}")
    # The model (+ CTC decode) alone on prepared lines: what the GPU could do if the host kept up.
    arrays = [prepare_line(b, rec.model.config.input_height) for b in base[:2048]]
    arrays = sorted(arrays, key=lambda a: a.shape[1])
    runner = rec._inference_model()
    batches = [collate_lines(arrays[i : i + batch_sizes[0]]) for i in range(0, len(arrays), batch_sizes[0])]
    batches = [(p.cuda(), w.cuda()) for p, w in batches]
    with torch.inference_mode(), rec._inference_context():
        for p, w in batches:
            runner(p, w)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            for p, w in batches:
                runner(p, w).logits.argmax(-1)
        torch.cuda.synchronize()
    row("GPU lines", f"ours, model forward + arg-max alone, prepared lines on the GPU ({card})",
        time.perf_counter() - start, 5 * len(arrays), "lines/s", "same run")
    if not args.gpu_page_repeat:
        return
    tiffs = sorted(folder.glob("*.tif")) * args.gpu_page_repeat
    list(ocr_page_files(rec, tiffs[:2], workers=workers))
    start = time.perf_counter()
    done = sum(1 for _ in ocr_page_files(rec, tiffs, workers=workers, pages_per_read=16, batch_size=512))
    seconds = time.perf_counter() - start
    row("GPU pages", f"ours, archive pages, {workers} segmentation workers, lines read on the GPU ({card})",
        seconds, done, "pages/s", f"python benchmarks/speed.py --gpu-page-repeat {args.gpu_page_repeat}",
        s_per_page=round(seconds / done, 3))


def gpu_cli_rows(args, card: str, sets, cli: list[str], tmp: Path) -> None:
    """`ocr-assets recognize --device cuda` as a user runs it, whole process, over --gpu-cli-copies copies of the
    first line set written as PNG files (the CLI's batched GPU path: `reading.recognize_dir` streaming). With
    --gpu-cli-profile, the same command under cProfile (main thread) and its top functions printed."""
    label, lines = sets[0]
    root = tmp / "cli_lines"
    for k in range(args.gpu_cli_copies):
        folder = root / f"copy{k:02d}"
        folder.mkdir(parents=True)
        for i, blob in enumerate(lines):
            (folder / f"{i:06d}.png").write_bytes(blob)
    n = len(lines) * args.gpu_cli_copies
    runs = [("", cli)]
    if args.gpu_cli_profile:
        # `python -m cProfile` writes nothing: the CLI leaves through os._exit. main() under a profiler instead
        # (imports not profiled).
        snippet = ("import cProfile, sys\nfrom ocr_assets import cli\nsys.argv = ['ocr-assets', *sys.argv[2:]]\n"
                   "profile, code = cProfile.Profile(), 1\ntry:\n    code = profile.runcall(cli.main)\n"
                   f"finally:\n    profile.dump_stats({str(args.gpu_cli_profile)!r})\nsys.exit(code)\n")
        runs.append((" under cProfile", [sys.executable, "-c", snippet, "x"]))
    for note, command in runs:
        cmd = [*command, "recognize", str(root), "--out", str(tmp / "cli.jsonl"), "--model", "default", "--device", "cuda"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{shlex.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
        progress = [p for p in done.stderr.replace("\r", "\n").splitlines() if p.startswith("recognize")]
        row("GPU lines", f"ours, `recognize --device cuda`, whole process{note}, {n} PNG files ({label} x "
            f"{args.gpu_cli_copies}) ({card})", seconds, n, "lines/s",
            shlex.join(cmd).replace(str(tmp), "TMP"), progress=" | ".join(progress[-5:]))
    if args.gpu_dir_chunks:
        # The library call under the CLI with the model already loaded: `recognize_dir` over the same folder, per
        # chunk size ("auto": `reading.gpu_chunks`, cut by bytes); each call forks its own pool. The first run also
        # builds the process's cuDNN plans, so "auto" runs first and last.
        from ocr_assets.models.resolve import load_recognizer
        from ocr_assets.reading import find_images, gpu_chunks, recognize_dir

        rec = load_recognizer("default", device="cuda")
        paths = find_images(root)
        sizes = ["auto", *args.gpu_dir_chunks.split(","), "auto"]
        for k, size in enumerate(sizes):
            chunk = None if size == "auto" else int(size)
            what = f"{len(gpu_chunks(paths))} chunk(s) cut by bytes" if chunk is None else f"chunks of {chunk} files"
            start = time.perf_counter()
            rows = sum(1 for _ in recognize_dir(rec, root, chunk_size=chunk, paths=paths))
            row("GPU lines", f"ours, `reading.recognize_dir` in-process (model loaded{', first in the process' if k == 0 else ''}), "
                f"{n} PNG files, {what} ({card})", time.perf_counter() - start, rows, "lines/s",
                f"python benchmarks/speed.py --gpu-cli-copies {args.gpu_cli_copies} --gpu-dir-chunks {args.gpu_dir_chunks}")
    if args.gpu_cli_profile:
        import pstats

        for key in ("tottime", "cumulative"):
            pstats.Stats(str(args.gpu_cli_profile)).sort_stats(key).print_stats(35)


# --- the table ---------------------------------------------------------------------------------------------


def table(info: dict, tess_lines_s: float, n_lines: int) -> str:
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores; load (1 min) {info['load_1min']} at start, "
             f"{info.get('load_end')} at end; {info['tesseract']}; {info.get('gpu') or 'no CUDA device'}", "",
             "| section | system | seconds | items | rate | vs Tesseract | CER_norm | command |", "|---|---|---|---|---|---|---|---|"]
    tess = {r["section"]: r for r in ROWS if r["system"].startswith("Tesseract")}
    for r in ROWS:
        peer = tess.get(r["section"]) or (tess.get("CPU lines, whole process") if r["section"].startswith(("GPU lines", "CPU lines, per"))
                                           else tess.get("CPU pages, whole process") if r["section"] == "GPU pages" else None)
        ratio = ""
        if peer and r is not peer and r["rate"] and peer["rate"]:
            ratio = f"{r['rate'] / peer['rate']:.2f}x"
        rate = f"{r['rate']:,} {r['unit']}" if r["rate"] else f"{r['seconds']} s"
        if r.get("s_per_page"):
            rate += f" ({r['s_per_page']} s/page)"
        cer = "" if r.get("cer_norm") is None else f"{r['cer_norm']:.4f}"
        lines.append(f"| {r['section']} | {r['system']} | {r['seconds']} | {r['items'] or ''} | {rate} | {ratio} | {cer} "
                     f"| `{r['command']}` |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--pages", type=int, default=12)
    ap.add_argument("--page-seed", type=int, default=0)
    ap.add_argument("--page-width", type=int, default=3400)
    ap.add_argument("--runtimes", default="auto,onnx-fp32,torch", help="comma list for the whole-process rows; "
                    "'default' passes no --runtime flag (older builds)")
    ap.add_argument("--cli", default=None, help="the ocr-assets command to measure (default: this venv's)")
    ap.add_argument("--skip-tesseract", action="store_true")
    ap.add_argument("--skip-pages", action="store_true")
    ap.add_argument("--skip-lines", action="store_true")
    ap.add_argument("--gpu-lines", type=int, default=50000)
    ap.add_argument("--gpu-batch", default=[1024], type=lambda text: [int(b) for b in text.split(",") if b],
                    help="lines per GPU batch; a comma list tries each for the GPU line rows (the others use the first)")
    ap.add_argument("--gpu-workers", type=int, default=None, help="host decode / segmentation processes (default: cores - 1)")
    ap.add_argument("--gpu-page-repeat", type=int, default=10)
    ap.add_argument("--gpu-cli-copies", type=int, default=0, help="also time `recognize --device cuda` over this "
                    "many copies of the first line set as files (on a machine without the console script: "
                    "--cli 'python -m ocr_assets.cli')")
    ap.add_argument("--gpu-cli-profile", type=Path, default=None, help="with --gpu-cli-copies: run it again under "
                    "cProfile, write the profile here and print its top functions")
    ap.add_argument("--gpu-dir-chunks", default="", help="with --gpu-cli-copies: also time `reading.recognize_dir` "
                    "in-process over that folder with these chunk sizes (comma list; 'auto' runs first and last)")
    ap.add_argument("--gpu-jpeg", action="store_true", help="also the same lines as JPEG (nvJPEG when torchvision is there)")
    ap.add_argument("--line-dirs", default=None, help="comma list of folders of */*.png lines for the GPU and host-feed "
                    "rows (default: the shared ocr_gs_print)")
    ap.add_argument("--feed-lines", type=int, default=0, help="host-feed rows: decode + pack this many lines, no model")
    ap.add_argument("--feed-workers", default="0,1", help="comma list of worker counts for the host-feed rows")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if shared_data_dir() is None and not (args.skip_lines and args.skip_pages and args.line_dirs):
        raise SystemExit("needs ../shared/data (ocr_gs_print) for the real lines")
    cli = shlex.split(args.cli) if args.cli else [os.path.relpath(Path(sys.executable).with_name("ocr-assets"))]
    info = machine()
    tess_s, n = 0.0, 0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if not args.skip_lines:
            tess_s, n = cpu_lines(args, tmp, cli)
        folder = make_pages(args, tmp) if not args.skip_pages or (cuda_card() and args.gpu_page_repeat) else None
        if not args.skip_pages:
            cpu_pages(args, tmp, cli, folder)
        card = cuda_card()
        info["gpu"] = card
        sets = line_sets(args) if card or args.feed_lines else []
        if args.feed_lines:
            host_feed_rows(args, sets)
        if card:
            gpu_rows(args, card, folder, sets)
            if args.gpu_cli_copies:
                gpu_cli_rows(args, card, sets, cli, tmp)
    info["load_end"] = round(os.getloadavg()[0], 2)
    print(table(info, tess_s, n))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": ROWS}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
