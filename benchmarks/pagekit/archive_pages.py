"""Archive-resolution bilevel page scans for the speed benchmark: the project's page renderer (`render_page`) at
600 dpi, scaled up to an archive scan's size (default 3,400 px wide, like the 3408 x 5452 periodical scans of
issue 14), thresholded to 1 bit and saved as TIFF with CCITT Group 4 compression, with the page's ground truth
(`<stem>.gt.txt`: the lines in reading order, one per line).

    from benchmarks.pagekit.archive_pages import write_archive_pages
    write_archive_pages(out_dir, 12, seed=0)
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ocr_assets.synth.pages import render_page


def archive_page(seed: int, width: int = 3400, threshold: int = 128) -> tuple[Image.Image, list[str]]:
    """A 1-bit page about `width` px wide and its lines' texts in reading order."""
    page = render_page(seed, dpi=600)
    scale = width / page.image.width
    size = (width, round(page.image.height * scale))
    # Scaled in grey and thresholded once: strokes keep smooth edges, as a scanner's own bilevel output has.
    big = page.image.resize(size, Image.BILINEAR).point(lambda v: 255 if v >= threshold else 0).convert("1")
    return big, [line.text for line in page.lines]


def write_archive_pages(out_dir: str | Path, n: int, seed: int = 0, width: int = 3400) -> list[Path]:
    """Pages seed .. seed+n-1 as `archive-<seed>.tif` (1-bit, G4) with `archive-<seed>.gt.txt`; returns the TIFFs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(seed, seed + n):
        image, texts = archive_page(index, width)
        path = out / f"archive-{index:04d}.tif"
        image.save(path, format="TIFF", compression="group4", dpi=(600, 600))
        (out / f"archive-{index:04d}.gt.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
