"""Build the carry folder `.gpu/` for a pretraining run on a lent GPU box (no internet there).

Holds: libfribidi (Pillow's raqm shaping needs it), the Arabic fonts, wheels missing on the box, and the real
shared lines as Parquet shards (one per book, re-encoded as 48 px tall PNG with 8 grey levels: about 17 MiB
for all 5,296 lines, so the call fits the 64 MiB transfer limit; the model reads lines at 48 px anyway), the same
lines as a folder of PNG + .gt.txt files (`sd48/`, for the GPU speed runs) and 150 original-resolution lines per book
(`fullres/`). A call carries the parts it needs (e.g. whl, lib, fonts, real for training; whl, lib, sd48 for speed).
Usage: .venv/bin/python scripts/gpu_kit.py [--shared ../shared/data] [--out .gpu] [--no-npm-faces]
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr_assets.text import normalize  # noqa: E402

WHEELS = ["rapidfuzz==3.14.6", "jiwer==4.0.0", "quran-text==0.1.0"]
HEIGHT = 48
LEVELS = 8


def shrink(png: bytes) -> bytes:
    im = Image.open(io.BytesIO(png)).convert("L")
    im = im.resize((max(1, round(im.width * HEIGHT / im.height)), HEIGHT), Image.Resampling.LANCZOS)
    step = 256 // LEVELS
    im = im.point(lambda v: min(255, (v // step) * step * 255 // (256 - step)))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def real_lines(shared: Path, out: Path) -> None:
    (out / "real").mkdir(parents=True, exist_ok=True)
    for book in sorted(p for p in (shared / "ocr_gs_print").iterdir() if p.is_dir()):
        rows = {"line_id": [], "document": [], "text": [], "image": []}
        for png in sorted(book.glob("*.png")):
            gt = png.with_suffix("").with_suffix(".gt.txt")
            if not gt.is_file():
                continue
            text = normalize(gt.read_text(encoding="utf-8"))
            if not text:
                continue
            rows["line_id"].append(f"{book.name}/{png.stem}")
            rows["document"].append(book.name)
            rows["text"].append(text)
            rows["image"].append(shrink(png.read_bytes()))
        pq.write_table(pa.table(rows), out / "real" / f"{book.name}.parquet")
        print(book.name, len(rows["text"]))


# Naskh text faces packaged on npm by Fontsource (OFL-1.1), fetched when the kit is built (never committed): their
# Arabic subsets as WOFF. Two book faces this machine's Debian fonts lack.
NPM_FACES = ("@fontsource/markazi-text@5.3.0", "@fontsource/mirza@5.3.0")


def fonts(out: Path, npm_faces: bool = True) -> None:
    import tarfile
    import tempfile

    from ocr_assets.synth.fonts import discover_fonts, inspect_font

    dest = out / "fonts"
    dest.mkdir(parents=True, exist_ok=True)
    for spec in discover_fonts():
        shutil.copy2(spec.path, dest / Path(spec.path).name)
    if not npm_faces:
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["npm", "pack", "--silent", *NPM_FACES], cwd=tmp, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            print(f"gpu_kit: no npm faces ({' '.join(NPM_FACES)}): {detail.strip()[-300:]}; the kit has this machine's "
                  "fonts only (--no-npm-faces says so quietly)", file=sys.stderr)
            return
        for tgz in sorted(Path(tmp).glob("*.tgz")):
            with tarfile.open(tgz) as tar:
                for member in tar.getmembers():
                    name = Path(member.name).name
                    if re.fullmatch(r"[a-z-]+-arabic-(400|700)-normal\.woff", name):
                        (dest / name).write_bytes(tar.extractfile(member).read())
                        if inspect_font(dest / name) is None:
                            (dest / name).unlink()
                            print("skipped (fails the font checks):", name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / ".gpu"))
    ap.add_argument("--no-npm-faces", action="store_true", help="only the fonts this machine has")
    args = ap.parse_args()
    out = Path(args.out)
    (out / "lib").mkdir(parents=True, exist_ok=True)
    fribidi = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    lib = next(line.split("=>")[1].strip() for line in fribidi.splitlines() if "libfribidi.so.0" in line)
    shutil.copy2(Path(lib).resolve(), out / "lib" / "libfribidi.so.0")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux2014_x86_64", "-d", str(out / "whl"), *WHEELS], check=True)
    fonts(out, npm_faces=not args.no_npm_faces)
    real_lines(Path(args.shared), out)
    fullres_subset(Path(args.shared), out)
    line_folder(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB")


def line_folder(out: Path) -> None:
    """The 48 px shared lines again as a folder of PNG + .gt.txt files (`sd48/ocr_gs_print/<book>/`): what the GPU
    speed benchmarks and `ocr-assets recognize` read on the device."""
    for shard in sorted((out / "real").glob("*.parquet")):
        dest = out / "sd48" / "ocr_gs_print" / shard.stem
        dest.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(shard).to_pydict()
        for line_id, text, image in zip(table["line_id"], table["text"], table["image"]):
            stem = line_id.split("/", 1)[1]
            (dest / f"{stem}.png").write_bytes(image)
            (dest / f"{stem}.gt.txt").write_text(text + "\n", encoding="utf-8")


def fullres_subset(shared: Path, out: Path, per_book: int = 150) -> None:
    """Evenly spaced original-resolution lines per book (a GT folder): the unseen-book test set on the GPU box."""
    dest = out / "fullres"
    for book in sorted(p for p in (shared / "ocr_gs_print").iterdir() if p.is_dir()):
        pngs = sorted(book.glob("*.png"))
        step = max(1, len(pngs) // per_book)
        (dest / book.name).mkdir(parents=True, exist_ok=True)
        for png in pngs[::step][:per_book]:
            shutil.copy2(png, dest / book.name / png.name)
            shutil.copy2(png.with_suffix("").with_suffix(".gt.txt"), dest / book.name / f"{png.stem}.gt.txt")


if __name__ == "__main__":
    main()
