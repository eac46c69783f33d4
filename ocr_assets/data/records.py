"""The line-record schema shared by every source, the validator, splits, training and evaluation.

A source yields `RawLine`s (what it found, problems included, nothing judged yet). Validation turns each one
into an accepted `LinePair` (8-bit grayscale PNG, normalized text) or a quarantine row with a reason.
Tables are Arrow/Parquet with exactly the columns below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa


@dataclass
class RawLine:
    line_id: str  # unique within the dataset; for GT folders the stem relative to the folder ("book/000001")
    document: str  # book / page-set id; splits group by it so no book leaks across splits
    source: str  # gt_folder | huggingface | parquet | imagefolder | alto | page | synthetic
    origin: str  # where it came from (relative path, URI, dataset row), for people reading the quarantine
    image: bytes | None  # encoded image bytes exactly as found (None: text without image)
    text_bytes: bytes | None  # transcription bytes exactly as found (None: image without text)

    def to_row(self) -> dict:
        return asdict(self)


RAW_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("document", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
        ("image", pa.binary()),
        ("text_bytes", pa.binary()),
    ]
)

# Accepted pairs: image re-encoded as 8-bit grayscale PNG, text normalized by ocr_assets.text.normalize.
PAIR_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("document", pa.string()),
        ("source", pa.string()),
        ("image", pa.binary()),
        ("text", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("document", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
        ("reason", pa.string()),
    ]
)
