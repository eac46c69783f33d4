"""Hugging Face style sources: hub datasets (through `datasets`), local Parquet files and imagefolders."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ocr_assets.data.gt_folder import IMAGE_EXTENSIONS, SourceError
from ocr_assets.data.records import RawLine

DEFAULT_DATASET = "mssqpi/Arabic-OCR-Dataset"
# Preferred names, best first, when a table has several candidate columns.
IMAGE_NAMES = ("image", "img", "line_image", "png", "jpg")
TEXT_NAMES = ("text", "transcription", "ground_truth", "gt", "label", "sentence", "caption")
# String columns that are never the transcription.
NOT_TEXT = {"file_name", "path", "id", "document", "book", "split", "source", "url", "filename"}
METADATA_NAMES = ("metadata.jsonl", "metadata.csv")


def pick_columns(
    kinds: dict[str, str], image_column: str | None, text_column: str | None, where: str
) -> tuple[str, str]:
    """Choose the image and text columns from {name: 'image'|'binary'|'string'|'other'}."""
    for given in (image_column, text_column):
        if given is not None and given not in kinds:
            raise SourceError(f"column {given!r} is not in {where}; its columns are {sorted(kinds)}")
    image = image_column or _pick(
        [c for c, k in kinds.items() if k == "image"] or [c for c, k in kinds.items() if k == "binary"],
        IMAGE_NAMES,
        "image",
        where,
        kinds,
    )
    text = text_column or _pick(
        [c for c, k in kinds.items() if k == "string" and c != image and c.lower() not in NOT_TEXT],
        TEXT_NAMES,
        "text",
        where,
        kinds,
    )
    return image, text


def _pick(candidates: list[str], preferred: tuple[str, ...], role: str, where: str, kinds: dict) -> str:
    if len(candidates) == 1:
        return candidates[0]
    for name in preferred:
        if name in candidates:
            return name
    found = "none" if not candidates else f"several ({', '.join(candidates)})"
    raise SourceError(
        f"cannot tell which column of {where} holds the {role}: {found} fit, columns are {sorted(kinds)}; "
        f"pass {role}_column=NAME"
    )


def _image_bytes(value, base: Path) -> tuple[bytes | None, str]:
    """Image bytes from a cell (bytes, {'bytes','path'} struct, path string or PIL image) and a note."""
    if value is None:
        return None, ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), ""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"]), ""
        value = value.get("path")
        if value is None:
            return None, ""
    if isinstance(value, (str, os.PathLike)):
        path = Path(value) if Path(value).is_absolute() else base / value
        try:
            return path.read_bytes(), ""
        except OSError as err:
            return None, f" (image file {str(value)!r} unreadable: {err.strerror or err})"
    if hasattr(value, "save"):  # a decoded PIL image
        from ocr_assets.data.images import encode_png

        return encode_png(value), ""
    return None, f" (image cell of type {type(value).__name__} not understood)"


def _text_bytes(value) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")


def iter_hf_dataset(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    image_column: str | None = None,
    text_column: str | None = None,
    limit: int | None = None,
    document_column: str | None = None,
    cache_dir: str | None = None,
) -> Iterator[RawLine]:
    """Yield RawLines from a hub dataset (or a local dataset folder) loaded with `datasets.load_dataset`."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split, cache_dir=cache_dir)
    except Exception as err:  # the hub client raises many types; all mean "could not load"
        raise SourceError(
            f"could not load Hugging Face dataset {name!r} (split {split!r}): {type(err).__name__}: {err}. "
            "If the hub is unreachable from here: with a copy in the local cache, set HF_HUB_OFFLINE=1; "
            f"otherwise download it where the hub is reachable (huggingface-cli download --repo-type dataset "
            f"{name} --local-dir DIR) and read the local copy (iter_hf_dataset(name=DIR), iter_parquet(DIR) "
            "or iter_imagefolder(DIR))"
        ) from err
    kinds = {col: _hf_kind(feature) for col, feature in ds.features.items()}
    image_col, text_col = pick_columns(kinds, image_column, text_column, f"dataset {name!r}")
    if isinstance(ds.features[image_col], datasets.Image):
        ds = ds.cast_column(image_col, datasets.Image(decode=False))  # keep the bytes exactly as stored
    label = Path(name).name if Path(name).exists() else name
    for index, row in enumerate(ds):
        if limit is not None and index >= limit:
            break
        image, note = _image_bytes(row[image_col], Path(name) if Path(name).is_dir() else Path.cwd())
        yield RawLine(
            line_id=f"{label}/{split}/{index:07d}",
            document=str(row[document_column]) if document_column else label,
            source="huggingface",
            origin=f"{name}[{split}][{index}]{note}",
            image=image,
            text_bytes=_text_bytes(row[text_col]),
        )


def _hf_kind(feature) -> str:
    import datasets

    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, dict) and "bytes" in feature:
        return "image"
    if isinstance(feature, datasets.Value):
        if feature.dtype in ("string", "large_string"):
            return "string"
        if feature.dtype in ("binary", "large_binary"):
            return "binary"
    return "other"


def _arrow_kind(field: pa.Field) -> str:
    t = field.type
    if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
        return "image"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return "other"


def _files(path: Path, pattern: str) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob(pattern) if p.is_file())
    raise SourceError(f"{str(path)!r} does not exist; pass a {pattern} file or a folder holding some")


def iter_parquet(
    path_or_dir: str | os.PathLike,
    image_column: str | None = None,
    text_column: str | None = None,
    document_column: str | None = None,
) -> Iterator[RawLine]:
    """Yield RawLines from Parquet files; columns are detected when not given ("image"/"text" preferred)."""
    root = Path(path_or_dir)
    files = _files(root, "*.parquet")
    if not files:
        raise SourceError(f"no *.parquet files under {str(root)!r}")
    for file in files:
        rel = file.name if root.is_file() else file.relative_to(root).as_posix()
        try:
            pf = pq.ParquetFile(file)
        except (pa.ArrowException, OSError) as err:
            raise SourceError(f"{str(file)!r} is not a readable Parquet file ({err})") from err
        kinds = {f.name: _arrow_kind(f) for f in pf.schema_arrow}
        image_col, text_col = pick_columns(kinds, image_column, text_column, f"Parquet file {rel!r}")
        if document_column and document_column not in kinds:
            raise SourceError(f"document column {document_column!r} is not in {rel!r}; columns are {sorted(kinds)}")
        columns = [image_col, text_col] + ([document_column] if document_column else [])
        stem = rel[: -len(".parquet")] if rel.endswith(".parquet") else rel
        index = 0
        for batch in pf.iter_batches(batch_size=256, columns=columns):
            for row in batch.to_pylist():
                image, note = _image_bytes(row[image_col], file.parent)
                yield RawLine(
                    line_id=f"{stem}/{index:07d}",
                    document=str(row[document_column]) if document_column else stem,
                    source="parquet",
                    origin=f"{rel}#row={index}{note}",
                    image=image,
                    text_bytes=_text_bytes(row[text_col]),
                )
                index += 1


def _read_metadata(path: Path) -> list[dict]:
    try:
        if path.name.endswith(".csv"):
            with path.open(encoding="utf-8-sig", newline="") as fh:
                return list(csv.DictReader(fh))
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise SourceError(f"{str(path)!r} line {number} is not JSON ({err}); fix that line") from err
        return rows
    except UnicodeDecodeError as err:
        raise SourceError(f"{str(path)!r} is not UTF-8 ({err}); re-save it as UTF-8") from err


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def iter_imagefolder(
    root: str | os.PathLike, text_column: str | None = None, document_column: str | None = None
) -> Iterator[RawLine]:
    """Yield RawLines from an HF imagefolder: images plus metadata.jsonl/.csv with file_name and text.

    line_id is the image path relative to root without extension; document is `document_column` (or a
    "document"/"book" column) when present, else the image's first-level folder, else the root's name.
    Images no metadata row names are yielded without text, rows naming a missing file without image.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"imagefolder {str(root)!r} does not exist or is not a folder")
    metas = sorted(p for p in root.rglob("metadata.*") if p.name in METADATA_NAMES)
    if not metas:
        raise SourceError(
            f"no metadata.jsonl or metadata.csv under {str(root)!r}; an imagefolder needs one with "
            "file_name and text columns"
        )
    seen: set[str] = set()
    for meta in metas:
        rows = _read_metadata(meta)
        yield from _metadata_lines(root, meta, rows, text_column, document_column, seen)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and _is_image(p)):
        rel = path.relative_to(root).as_posix()
        if rel not in seen:
            yield _imagefolder_line(root, rel, path.read_bytes(), None, None, f"{rel} (no metadata row)")


def _metadata_lines(root, meta, rows, text_column, document_column, seen) -> Iterable[RawLine]:
    where = f"{meta.relative_to(root).as_posix()!r}"
    if not rows:
        return
    columns = list(rows[0])
    if "file_name" not in columns:
        raise SourceError(f"{where} has no file_name column (columns {columns}); add one naming each image")
    kinds = {c: "string" for c in columns}
    kinds["file_name"] = "image"
    _, text_col = pick_columns(kinds, "file_name", text_column, where)
    doc_col = document_column or next((c for c in ("document", "book") if c in columns), None)
    for number, row in enumerate(rows, 1):
        file_name = str(row.get("file_name") or "")
        path = meta.parent / file_name
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else file_name
        seen.add(rel)
        try:
            image, note = path.read_bytes(), ""
        except OSError as err:
            image, note = None, f" (image {file_name!r} missing: {err.strerror or err})"
        document = str(row[doc_col]) if doc_col and row.get(doc_col) is not None else None
        origin = f"{where} row {number}{note}"
        yield _imagefolder_line(root, rel, image, _text_bytes(row.get(text_col)), document, origin)


def _imagefolder_line(root, rel, image, text_bytes, document, origin) -> RawLine:
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    if document is None:
        document = stem.split("/", 1)[0] if "/" in stem else root.resolve().name
    return RawLine(stem, document, "imagefolder", origin, image, text_bytes)
