"""Ground-truth folders: line images with a same-stem `.gt.txt` beside them, in any sub-folders.

`line_id` is the path relative to the folder without its extension(s), "/"-separated ("book/000001").
`document` is the first-level sub-folder; a file directly in the folder belongs to a document named after
the folder itself, so pointing at one book's folder gives that book's name rather than ".".
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from ocr_assets.data.records import RawLine
from ocr_assets.errors import SourceError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TEXT_SUFFIX = ".gt.txt"
# OCRopus/Kraken write `NAME.bin.png` / `NAME.nrm.png` beside `NAME.gt.txt`.
_VARIANT_SUFFIXES = (".bin", ".nrm")


def _classify(name: str) -> tuple[str, str] | None:
    """('image'|'text', stem) for a file name we use, None for anything else."""
    lower = name.lower()
    if name.startswith("."):
        return None  # hidden files, e.g. macOS `._NAME.png` resource forks that only look like images
    if lower.endswith(TEXT_SUFFIX):
        return "text", name[: -len(TEXT_SUFFIX)]
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return "image", name[: -len(ext)]
    return None


def _key(stem: str) -> str:
    # macOS writes NFD file names; pair an NFD image name with an NFC text name all the same.
    return unicodedata.normalize("NFC", stem)


def scan_gt_folder(root: str | os.PathLike) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Images (stem key -> relative paths, sorted) and texts (stem key -> relative path) under root."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(
            f"ground-truth folder {str(root)!r} does not exist or is not a folder; "
            "pass a folder of NAME.png + NAME.gt.txt files"
        )
    images: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for name in sorted(filenames):
            kind = _classify(name)
            if kind is None:
                continue
            rel = prefix + name
            stem = prefix + kind[1]
            if kind[0] == "text":
                texts[_key(stem)] = rel
            else:
                images.setdefault(_key(stem), []).append(rel)
    # `NAME.bin.png` pairs with `NAME.gt.txt` when nothing else claims that text.
    for key in list(images):
        for suffix in _VARIANT_SUFFIXES:
            short = key[: -len(suffix)] if key.endswith(suffix) else None
            if short and key not in texts and short in texts and short not in images:
                images[short] = images.pop(key)
                break
    return images, texts


def _document(stem: str, root_name: str) -> str:
    return stem.split("/", 1)[0] if "/" in stem else root_name


def _stem_of(rel: str) -> str:
    kind = _classify(rel.rsplit("/", 1)[-1])
    prefix = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
    return prefix + kind[1] if kind else rel


def iter_gt_folder(root: str | os.PathLike) -> Iterator[RawLine]:
    """Yield one RawLine per stem (orphans included), sorted by line_id."""
    root = Path(root)
    images, texts = scan_gt_folder(root)
    root_name = root.resolve().name or "."
    for key in sorted(set(images) | set(texts)):
        text_rel = texts.get(key)
        text_bytes = (root / text_rel).read_bytes() if text_rel else None
        image_rels = images.get(key) or [None]
        for image_rel in image_rels:
            # Several images on one stem each yield a line with the same id; validation quarantines them.
            line_id = _stem_of(text_rel) if text_rel else _stem_of(image_rel)
            yield RawLine(
                line_id=line_id,
                document=_document(line_id, root_name),
                source="gt_folder",
                origin=image_rel or text_rel,
                image=(root / image_rel).read_bytes() if image_rel else None,
                text_bytes=text_bytes,
            )
