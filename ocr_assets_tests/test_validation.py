import io
import json
import unicodedata

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ocr_assets.data.gt_folder import iter_gt_folder
from ocr_assets.data.quality import pair_metadata, run_expectations, run_pair_expectations
from ocr_assets.data.records import PAIR_SCHEMA, QUARANTINE_SCHEMA, RawLine
from ocr_assets.data.validation import ValidationConfig, judge, reason_kind, validate_gt_dir, validate_lines
from ocr_assets_tests.test_images import SAMPLE, png_header_only, render_line, to_bytes, write_pair

TEXT = "قال أبو عثمان وهذا كتاب الحيوان"


def raw(text: bytes | None = TEXT.encode(), image: bytes | None = None, line_id="b/1", source="gt_folder") -> RawLine:
    if image is None and text is not None:
        image = to_bytes(render_line(TEXT))
    return RawLine(line_id, "b", source, f"{line_id}.png", image, text)


# --- awkward but valid ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stored",
    [
        unicodedata.normalize("NFD", TEXT).encode(),  # decomposed, as the shared books store it
        b"\xef\xbb\xbf" + TEXT.encode(),  # UTF-8 BOM
        ("\u200f" + TEXT + "\u200e").encode(),  # bidi marks
        (TEXT.replace(" ", "  ") + "\r\n").encode(),  # CRLF and doubled spaces
    ],
    ids=["nfd", "bom", "bidi", "crlf"],
)
def test_awkward_text_is_accepted_and_normalized(stored):
    row, reason = judge(raw(stored))
    assert reason is None
    assert row["text"] == TEXT and unicodedata.is_normalized("NFC", row["text"])


def test_accepted_row_is_an_8bit_gray_png_with_its_size():
    row, reason = judge(raw(image=to_bytes(render_line(TEXT, mode="RGB"), "JPEG")))
    img = Image.open(io.BytesIO(row["image"]))
    assert reason is None and img.format == "PNG" and img.mode == "L"
    assert (row["width"], row["height"]) == img.size


def test_digit_only_lines_are_accepted():
    # Page numbers are real print lines; they have no letters, so there is no script to judge.
    row, reason = judge(raw(b"184", image=to_bytes(render_line("184"))))
    assert reason is None and row["text"] == "184"


# --- quarantined ---------------------------------------------------------------------------------------


def test_cp1256_text_is_quarantined_naming_the_byte():
    data = TEXT.encode("cp1256")
    row, reason = judge(raw(data))
    offset = next(i for i, b in enumerate(data) if b >= 0x80)
    assert row is None
    assert reason.startswith(f"text is not valid UTF-8 (byte 0x{data[offset]:02x} at offset {offset})")
    assert "Windows-1256" in reason and reason.endswith("re-save the file as UTF-8")


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"", "text is empty"),
        (" \u200f\r\n".encode(), "text is empty"),
        (b"The quick brown fox", "text is not Arabic script: 0% of its 16 letters"),
        (("ب" * 501).encode(), "text is too long: 501 characters, more than the 500"),
        ("قال\x07".encode(), "text contains control character U+0007"),
        ("قال \ufffd".encode(), "text contains U+FFFD"),
    ],
    ids=["empty", "bidi-only", "latin", "too-long", "control", "replacement"],
)
def test_bad_text_is_quarantined_with_reason(text, expected):
    row, reason = judge(raw(text, image=to_bytes(render_line(TEXT))))
    assert row is None and reason.startswith(expected), reason


@pytest.mark.parametrize(
    "image, expected",
    [
        (b"", "image file is empty"),
        (b"this is a text file", "not an image"),
        (None, "truncated or corrupt"),
        (png_header_only(10_000, 5_000), "above the 40 MP limit"),
        (to_bytes(Image.new("L", (300, 6), 0)), "too small"),
        (to_bytes(Image.new("L", (600, 60), 255)), "image is blank (every pixel is 255)"),
        (to_bytes(Image.new("L", (60, 60), 0)), "image is blank (every pixel is 0)"),
    ],
    ids=["zero-byte", "non-image", "truncated", "bomb", "tiny", "white", "black"],
)
def test_bad_image_is_quarantined_with_reason(image, expected):
    if image is None:
        full = to_bytes(render_line(TEXT))
        image = full[: len(full) * 2 // 3]
    row, reason = judge(raw(image=image))
    assert row is None and expected in reason, reason


def test_image_shape_implausible_for_text_is_quarantined():
    square = to_bytes(render_line("ب", size=40))  # one glyph's image for a long transcription
    row, reason = judge(raw(("كتاب الحيوان " * 20).encode(), image=square))
    assert row is None and reason.startswith("image shape") and "is the text for this image?" in reason
    lenient = ValidationConfig(check_aspect=False)
    row, reason = judge(raw(("كتاب الحيوان " * 20).encode(), image=square), lenient)
    assert reason is None


def test_orphans_are_quarantined_naming_the_missing_file():
    _, reason = judge(RawLine("b/7", "b", "gt_folder", "b/7.png", to_bytes(render_line()), None))
    assert reason == "image has no transcription (expected 7.gt.txt beside it)"
    _, reason = judge(RawLine("b/7", "b", "gt_folder", "b/7.gt.txt", None, TEXT.encode()))
    assert reason == "transcription has no image (expected 7.png, .jpg or .tif beside it)"


def test_judge_never_raises_on_malformed_input():
    row, reason = judge(RawLine("x", "b", "parquet", "x", 12345, TEXT.encode()))  # not bytes at all
    assert row is None and reason.startswith("could not judge this line")


def test_validate_lines_quarantines_every_line_of_a_repeated_id_and_keeps_schemas():
    lines = [raw(line_id="b/1"), raw(line_id="b/2"), raw(line_id="b/1"), raw(b"latin only", line_id="b/3")]
    lines[2] = RawLine("b/1", "b", "gt_folder", "b/1.jpg", lines[2].image, lines[2].text_bytes)
    pairs, quarantine = validate_lines(lines)
    assert pairs.schema.equals(PAIR_SCHEMA) and quarantine.schema.equals(QUARANTINE_SCHEMA)
    assert pairs.column("line_id").to_pylist() == ["b/2"]  # the same rule as `ocr-assets validate`: neither b/1
    rows = quarantine.to_pylist()
    assert [(r["line_id"], reason_kind(r["reason"])) for r in rows] == [("b/1", "duplicate"), ("b/1", "duplicate"), ("b/3", "not_arabic")]
    assert "also used by b/1.jpg" in rows[0]["reason"] and "also used by b/1.png" in rows[1]["reason"]


# --- the `ocr-assets validate` contract ----------------------------------------------------------------


def test_validate_gt_dir_reports_every_stem(tmp_path):
    root = tmp_path / "gt"
    write_pair(root, "book one/000001", TEXT, render_line(TEXT))
    write_pair(root, "book one/000002", unicodedata.normalize("NFD", SAMPLE), render_line(SAMPLE).convert("RGBA"))
    write_pair(root, "كتاب/سطر 1", "\ufeff" + SAMPLE + "\r\n", render_line(SAMPLE, mode="CMYK"), ext=".jpg")
    g4 = to_bytes(render_line(SAMPLE).convert("1"), "TIFF", compression="group4")
    write_pair(root, "كتاب/g4", SAMPLE, g4, ext=".tif")
    deep = Image.fromarray(np.asarray(render_line(SAMPLE), dtype=np.uint16) * 257)  # 16-bit gray
    write_pair(root, "كتاب/deep", SAMPLE, to_bytes(deep), ext=".png")
    write_pair(root, "bad/cp1256", SAMPLE.encode("cp1256"), render_line(SAMPLE))
    write_pair(root, "bad/latin", "Lorem ipsum dolor", render_line(SAMPLE))
    write_pair(root, "bad/zero", SAMPLE, b"")
    write_pair(root, "bad/orphan-image", None, render_line(SAMPLE))
    write_pair(root, "bad/orphan-text", SAMPLE, None)
    write_pair(root, "bad/twice", SAMPLE, render_line(SAMPLE))
    write_pair(root, "bad/twice", None, render_line(SAMPLE), ext=".jpg")
    report = validate_gt_dir(root)
    assert json.loads(json.dumps(report, ensure_ascii=False)) == report
    assert report["accepted"] == [
        "book one/000001",
        "book one/000002",
        "كتاب/deep",
        "كتاب/g4",
        "كتاب/سطر 1",
    ]
    q = report["quarantined"]
    assert sorted(q) == ["bad/cp1256", "bad/latin", "bad/orphan-image", "bad/orphan-text", "bad/twice", "bad/zero"]
    assert q["bad/orphan-image"] == "image has no transcription (expected orphan-image.gt.txt beside it)"
    assert q["bad/orphan-text"].startswith("transcription has no image")
    assert q["bad/zero"].startswith("image file is empty") and "UTF-8" in q["bad/cp1256"]
    assert q["bad/twice"].startswith("duplicate line_id") and "also used by bad/twice." in q["bad/twice"]


# --- Great Expectations suite over pair metadata -------------------------------------------------------


def test_gx_suite_passes_on_real_pairs_and_reports_json(tmp_path):
    write_pair(tmp_path, "b/1", TEXT, render_line(TEXT))
    write_pair(tmp_path, "b/2", SAMPLE, render_line(SAMPLE))
    write_pair(tmp_path, "c/1", "١٨٤", render_line("١٨٤"))  # digits only: no script ratio to judge
    pairs, quarantine = validate_lines(iter_gt_folder(tmp_path))
    assert pairs.num_rows == 3 and quarantine.num_rows == 0
    meta = pair_metadata(pairs)
    assert list(meta["text_length"]) == [len(TEXT), len(SAMPLE), 3] and np.isnan(meta["arabic_ratio"][2])
    report = run_pair_expectations(pairs)
    assert report.success and report.evaluated == report.successful >= 10
    assert json.loads(json.dumps(report.to_dict()))["success"] is True


def test_gx_suite_fails_on_bad_metadata():
    bad = pd.DataFrame(
        {
            "line_id": ["a", "a", "c"],
            "document": ["d", None, "d"],
            "source": ["gt_folder"] * 3,
            "width": [900, 4, 600],
            "height": [60, 4, 60],
            "text_length": [40, 40, 900],
            "arabic_ratio": [1.0, 0.1, 1.0],
            "charset_ok": [True, True, False],
        }
    )
    bad["aspect"] = bad["width"] / bad["height"]
    bad["aspect_per_char"] = bad["aspect"] / bad["text_length"]
    report = run_expectations(bad)
    failed = {(e["expectation"], e["column"]) for e in report.failures()}
    assert not report.success
    assert {
        ("expect_column_values_to_be_unique", "line_id"),
        ("expect_column_values_to_not_be_null", "document"),
        ("expect_column_values_to_be_between", "height"),
        ("expect_column_values_to_be_between", "text_length"),
        ("expect_column_values_to_be_between", "arabic_ratio"),
        ("expect_column_values_to_be_in_set", "charset_ok"),
    } <= failed
    assert "**no**" in report.to_markdown()
    as_json = json.loads(json.dumps(report.to_dict()))  # the asset check's metadata must survive JSON
    assert as_json["success"] is False and len(as_json["expectations"]) == report.evaluated
