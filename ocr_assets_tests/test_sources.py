import io
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ocr_assets.data.gt_folder import SourceError, iter_gt_folder
from ocr_assets.data.hf_source import iter_hf_dataset, iter_imagefolder, iter_parquet
from ocr_assets.data.xml_sources import iter_xml_folder
from ocr_assets_tests.test_images import render_line, to_bytes, write_pair

LINES = ["قال أبو عثمان", "وهذا كتاب الحيوان", "بسم الله الرحمن الرحيم"]


# --- ground-truth folders ------------------------------------------------------------------------------


@pytest.fixture
def gt_root(tmp_path):
    root = tmp_path / "gt"
    write_pair(root, "Jahiz.Hayawan/000001", LINES[0], render_line(LINES[0]))
    write_pair(root, "Jahiz.Hayawan/000002", LINES[1], render_line(LINES[1]), ext=".PNG")
    write_pair(root, "a b/ملف", LINES[2], render_line(LINES[2]), ext=".tif")
    write_pair(root, "a b/sub/x y", LINES[0], render_line(LINES[0], mode="RGB"), ext=".JPEG")
    write_pair(root, "ocropus/010001.bin", None, render_line(LINES[1]))  # OCRopus naming
    write_pair(root, "ocropus/010001", LINES[1], None)
    write_pair(root, "orphan", None, render_line(LINES[2]))
    write_pair(root, "lonely", LINES[2], None)
    (root / "notes.txt").write_text("not ground truth")
    write_pair(root, "._000001", None, b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    return root


def test_gt_folder_pairs_stems_documents_and_orphans(gt_root):
    found = [(r.line_id, r.document, r.image is not None, r.text_bytes is not None) for r in iter_gt_folder(gt_root)]
    assert found == [
        ("Jahiz.Hayawan/000001", "Jahiz.Hayawan", True, True),
        ("Jahiz.Hayawan/000002", "Jahiz.Hayawan", True, True),
        ("a b/sub/x y", "a b", True, True),
        ("a b/ملف", "a b", True, True),
        ("lonely", "gt", False, True),  # files at the top belong to the folder's own name
        ("ocropus/010001", "ocropus", True, True),
        ("orphan", "gt", True, False),
    ]


def test_gt_folder_keeps_bytes_as_found_and_is_deterministic(gt_root):
    first = list(iter_gt_folder(gt_root))
    second = list(iter_gt_folder(gt_root))
    assert [r.to_row() for r in first] == [r.to_row() for r in second]
    line = next(r for r in first if r.line_id == "a b/ملف")
    assert line.text_bytes == LINES[2].encode() and line.origin == "a b/ملف.tif"
    assert line.image == (gt_root / "a b" / "ملف.tif").read_bytes()


def test_gt_folder_pairs_nfd_file_name_with_nfc_text_name(tmp_path):
    name = "إحياء"
    write_pair(tmp_path, unicodedata.normalize("NFD", name), None, render_line(name))
    write_pair(tmp_path, unicodedata.normalize("NFC", name), name, None)
    lines = list(iter_gt_folder(tmp_path))
    assert len(lines) == 1 and lines[0].image is not None and lines[0].text_bytes is not None


def test_missing_gt_folder_raises_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list(iter_gt_folder(tmp_path / "nope"))


# --- Parquet, imagefolder, Hugging Face ----------------------------------------------------------------


def _hf_parquet(path: Path, base: Path):
    """A Parquet file as `datasets` writes it: image struct {bytes, path} plus text."""
    (base / "imgs").mkdir(parents=True, exist_ok=True)
    render_line(LINES[2]).save(base / "imgs" / "third.png")
    images = [
        {"bytes": to_bytes(render_line(LINES[0])), "path": None},
        {"bytes": to_bytes(render_line(LINES[1], mode="RGB"), "JPEG"), "path": "x.jpg"},
        {"bytes": None, "path": "imgs/third.png"},  # by path, relative to the Parquet file
    ]
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array(images, type=struct), "text": LINES, "book": ["b1", "b1", "b2"]})
    pq.write_table(table, path)


def test_parquet_with_hf_image_struct(tmp_path):
    _hf_parquet(tmp_path / "train.parquet", tmp_path)
    lines = list(iter_parquet(tmp_path / "train.parquet", document_column="book"))
    assert [r.line_id for r in lines] == ["train/0000000", "train/0000001", "train/0000002"]
    assert [r.document for r in lines] == ["b1", "b1", "b2"]
    assert [r.text_bytes.decode() for r in lines] == LINES
    assert lines[2].image == (tmp_path / "imgs" / "third.png").read_bytes()
    assert Image.open(io.BytesIO(lines[1].image)).format == "JPEG"


def test_parquet_detects_columns_and_refuses_ambiguity(tmp_path):
    png = to_bytes(render_line())
    pq.write_table(pa.table({"blob": [png], "transcript": [LINES[0]]}), tmp_path / "one.parquet")
    (line,) = iter_parquet(tmp_path / "one.parquet")
    assert line.image == png and line.text_bytes == LINES[0].encode() and line.document == "one"
    pq.write_table(pa.table({"blob": [png], "left": ["a"], "right": ["b"]}), tmp_path / "two.parquet")
    with pytest.raises(SourceError, match=r"which column .* holds the text: several \(left, right\).*text_column=NAME"):
        list(iter_parquet(tmp_path / "two.parquet"))
    (line,) = iter_parquet(tmp_path / "two.parquet", text_column="right")
    assert line.text_bytes == b"b"
    with pytest.raises(SourceError, match=r"column 'nope' is not in"):
        list(iter_parquet(tmp_path / "two.parquet", text_column="nope"))


def test_imagefolder_with_jsonl_and_csv_metadata(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    render_line(LINES[0]).save(train / "a.png")
    render_line(LINES[1]).save(train / "stray.png")  # no metadata row
    rows = [{"file_name": "a.png", "text": LINES[0]}, {"file_name": "gone.png", "text": LINES[1]}]
    (train / "metadata.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    render_line(LINES[2]).save(other / "sub" / "c d.png")
    csv_text = f"file_name,transcription,document\nsub/c d.png,{LINES[2]},Kitab\n"
    (other / "metadata.csv").write_text(csv_text, encoding="utf-8-sig")
    lines = {r.line_id: r for r in iter_imagefolder(tmp_path)}
    assert set(lines) == {"train/a", "train/gone", "train/stray", "other/sub/c d"}
    assert lines["train/a"].text_bytes == LINES[0].encode() and lines["train/a"].image is not None
    assert lines["train/gone"].image is None and "missing" in lines["train/gone"].origin
    assert lines["train/stray"].text_bytes is None
    assert lines["other/sub/c d"].document == "Kitab" and lines["other/sub/c d"].text_bytes == LINES[2].encode()


def test_imagefolder_without_metadata_is_an_error(tmp_path):
    render_line().save(tmp_path / "a.png")
    with pytest.raises(SourceError, match="no metadata.jsonl or metadata.csv"):
        list(iter_imagefolder(tmp_path))


def test_hf_dataset_loads_a_local_copy_through_datasets(tmp_path):
    data = tmp_path / "Arabic-OCR-local"
    data.mkdir()
    _hf_parquet(data / "train.parquet", data)
    lines = list(iter_hf_dataset(str(data), split="train", limit=2, cache_dir=str(tmp_path / "cache")))
    assert [r.line_id for r in lines] == ["Arabic-OCR-local/train/0000000", "Arabic-OCR-local/train/0000001"]
    assert [r.text_bytes.decode() for r in lines] == LINES[:2]
    assert all(Image.open(io.BytesIO(r.image)).width > 50 for r in lines)


def test_hf_hub_offline_gives_a_clear_source_error(tmp_path):
    code = (
        "from ocr_assets.data.hf_source import iter_hf_dataset, SourceError\n"
        "try:\n    next(iter_hf_dataset())\nexcept SourceError as err:\n    print('SOURCE-ERROR', err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "SOURCE-ERROR" in out.stdout, out.stderr[-2000:]
    assert "'mssqpi/Arabic-OCR-Dataset'" in out.stdout and "HF_HUB_OFFLINE=1" in out.stdout
    assert "iter_parquet(DIR)" in out.stdout


# --- ALTO / PAGE XML -----------------------------------------------------------------------------------

ALTO = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#">
  <Description><MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation><fileName>{image}</fileName></sourceImageInformation></Description>
  <Layout><Page ID="p1" WIDTH="{w}" HEIGHT="{h}" PHYSICAL_IMG_NR="1"><PrintSpace><TextBlock ID="b1">
{lines}
  </TextBlock></PrintSpace></Page></Layout>
</alto>"""

PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/{version}">
  <Metadata><Creator>test</Creator><Created>2024-01-01T00:00:00</Created>
    <LastChange>2024-01-01T00:00:00</LastChange></Metadata>
  <Page imageFilename="{image}" imageWidth="{w}" imageHeight="{h}">
    <TextRegion id="r1"><Coords points="0,0 {w},0 {w},{h} 0,{h}"/>
{lines}
      <TextEquiv><Unicode>region text, not a line</Unicode></TextEquiv>
    </TextRegion>
  </Page>
</PcGts>"""


def _page(tmp_path) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A rendered page of three lines and their boxes (x0, y0, x1, y1 inclusive)."""
    page = Image.new("L", (700, 260), 255)
    boxes = []
    for i, text in enumerate(LINES):
        line = render_line(text, size=30)
        x, y = 650 - line.width, 20 + 80 * i
        page.paste(line, (x, y))
        boxes.append((x, y, x + line.width - 1, y + line.height - 1))
    return page, boxes


def _rect(box, sep=","):
    x0, y0, x1, y1 = box
    return " ".join(f"{x}{sep}{y}" for x, y in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def test_alto_lines_are_cropped_by_polygon_or_box(tmp_path):
    page, boxes = _page(tmp_path)
    page.save(tmp_path / "scan 1.png")
    (x0, y0, x1, y1) = boxes[0]
    strings = "".join(f'<String CONTENT="{w}"/><SP/>' for w in LINES[0].split())
    lines = (
        f'<TextLine ID="tl_1"><Shape><Polygon POINTS="{_rect(boxes[0], " ")}"/></Shape>{strings}</TextLine>\n'
        # No Shape: the HPOS/VPOS/WIDTH/HEIGHT box is the fallback; Strings without SP still get spaces.
        f'<TextLine ID="tl_2" HPOS="{boxes[1][0]}" VPOS="{boxes[1][1]}" WIDTH="{boxes[1][2] - boxes[1][0]}" '
        f'HEIGHT="{boxes[1][3] - boxes[1][1]}">'
        + "".join(f'<String CONTENT="{w}"/>' for w in LINES[1].split())
        + "</TextLine>"
    )
    (tmp_path / "scan 1.xml").write_text(ALTO.format(image="scan 1.png", w=700, h=260, lines=lines), encoding="utf-8")
    (tmp_path / "mets.xml").write_text('<mets xmlns="http://www.loc.gov/METS/"/>')  # not ALTO/PAGE: ignored
    got = list(iter_xml_folder(tmp_path))
    assert [(r.line_id, r.document, r.source) for r in got] == [
        ("scan 1/tl_1", "scan 1", "alto"),
        ("scan 1/tl_2", "scan 1", "alto"),
    ]
    assert [r.text_bytes.decode().strip() for r in got] == LINES[:2]
    crop = np.asarray(Image.open(io.BytesIO(got[0].image)))
    assert np.array_equal(crop, np.asarray(page.crop((x0, y0, x1 + 1, y1 + 1))))
    assert Image.open(io.BytesIO(got[1].image)).size == (boxes[1][2] - boxes[1][0] + 1, boxes[1][3] - boxes[1][1] + 1)


@pytest.mark.parametrize("version", ["2013-07-15", "2019-07-15"])
def test_page_xml_masks_outside_the_polygon_white(tmp_path, version):
    page, boxes = _page(tmp_path)
    x0, y0, x1, y1 = boxes[2]
    page.paste(0, (x0, y0, x0 + 12, y0 + 12))  # ink in the top-left corner, which the polygon cuts off
    export = tmp_path / "export"
    (export / "page").mkdir(parents=True)
    page.save(export / "0001.jpg", quality=95)  # Transkribus: images beside page/, XML inside it
    cut = f"{x0 + 20},{y0} {x1},{y0} {x1},{y1} {x0},{y1} {x0},{y0 + 20}"
    lines = (
        f'<TextLine id="line_a"><Coords points="{_rect(boxes[0])}"/>'
        '<TextEquiv index="1"><Unicode>second reading</Unicode></TextEquiv>'
        f"<TextEquiv index=\"0\"><Unicode>{LINES[0]}</Unicode></TextEquiv></TextLine>\n"
        f'<TextLine id="line_c"><Coords points="{cut}"/><Baseline points="{x0},{y1 - 5} {x1},{y1 - 5}"/>'
        f"<TextEquiv><Unicode>{LINES[2]}</Unicode></TextEquiv></TextLine>"
    )
    (export / "page" / "0001.xml").write_text(
        PAGE.format(version=version, image="0001.jpg", w=700, h=260, lines=lines), encoding="utf-8"
    )
    got = list(iter_xml_folder(export))
    assert [(r.line_id, r.document, r.source) for r in got] == [
        ("page/0001/line_a", "page/0001", "page"),
        ("page/0001/line_c", "page/0001", "page"),
    ]
    assert [r.text_bytes.decode() for r in got] == [LINES[0], LINES[2]]
    crop = np.asarray(Image.open(io.BytesIO(got[1].image)))
    assert crop.shape == (y1 - y0 + 1, x1 - x0 + 1)
    scanned = np.asarray(Image.open(export / "0001.jpg").convert("L").crop((x0, y0, x1 + 1, y1 + 1)))
    assert scanned[2, 2] < 60 and crop[2, 2] == 255  # outside the polygon: white although the page had ink
    inside = (slice(20, None), slice(None))  # below the cut corner everything is inside the polygon
    assert np.array_equal(crop[inside], scanned[inside]) and crop[inside].min() < 60


def test_xml_problems_become_lines_with_a_reason(tmp_path):
    lines = (
        '<TextLine id="l1"><Coords points="0,0 50,0 50,20 0,20"/>'
        f"<TextEquiv><Unicode>{LINES[0]}</Unicode></TextEquiv></TextLine>"
    )
    (tmp_path / "lost.xml").write_text(PAGE.format(version="2019-07-15", image="lost.png", w=700, h=260, lines=lines))
    (tmp_path / "broken.xml").write_text("<PcGts><Page>")
    got = {r.line_id: r for r in iter_xml_folder(tmp_path)}
    assert got["lost/l1"].image is None and "page image 'lost.png' not found" in got["lost/l1"].origin
    assert got["broken"].image is None and got["broken"].text_bytes is None
    assert "not well-formed XML" in got["broken"].origin
