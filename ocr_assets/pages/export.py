"""Page results as plain text, PAGE 2019 and ALTO 4 XML (lines with coordinates and confidences, RTL text)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from lxml import etree

from ocr_assets.pages.segment import LineBox

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"


@dataclass
class PageLine:
    box: LineBox
    text: str
    confidence: float


@dataclass
class PageResult:
    image_name: str
    width: int
    height: int
    lines: list[PageLine] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(line.text for line in self.lines) + ("\n" if self.lines else "")


def _points(b: LineBox) -> str:
    return f"{b.x0},{b.y0} {b.x1},{b.y0} {b.x1},{b.y1} {b.x0},{b.y1}"


def page_xml(result: PageResult) -> bytes:
    root = etree.Element(f"{{{PAGE_NS}}}PcGts", nsmap={None: PAGE_NS})
    meta = etree.SubElement(root, f"{{{PAGE_NS}}}Metadata")
    etree.SubElement(meta, f"{{{PAGE_NS}}}Creator").text = "ocr_assets"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    etree.SubElement(meta, f"{{{PAGE_NS}}}Created").text = now
    etree.SubElement(meta, f"{{{PAGE_NS}}}LastChange").text = now
    page = etree.SubElement(root, f"{{{PAGE_NS}}}Page", imageFilename=result.image_name,
                            imageWidth=str(result.width), imageHeight=str(result.height))
    if result.lines:
        order = etree.SubElement(page, f"{{{PAGE_NS}}}ReadingOrder")
        group = etree.SubElement(order, f"{{{PAGE_NS}}}OrderedGroup", id="ro1")
        etree.SubElement(group, f"{{{PAGE_NS}}}RegionRefIndexed", index="0", regionRef="r1")
        x0 = min(line.box.x0 for line in result.lines)
        y0 = min(line.box.y0 for line in result.lines)
        x1 = max(line.box.x1 for line in result.lines)
        y1 = max(line.box.y1 for line in result.lines)
        region = etree.SubElement(page, f"{{{PAGE_NS}}}TextRegion", id="r1", readingDirection="right-to-left")
        etree.SubElement(region, f"{{{PAGE_NS}}}Coords", points=_points(LineBox(x0, y0, x1, y1)))
        for i, line in enumerate(result.lines, 1):
            tl = etree.SubElement(region, f"{{{PAGE_NS}}}TextLine", id=f"l{i}", readingDirection="right-to-left")
            etree.SubElement(tl, f"{{{PAGE_NS}}}Coords", points=_points(line.box))
            equiv = etree.SubElement(tl, f"{{{PAGE_NS}}}TextEquiv", conf=f"{line.confidence:.4f}")
            etree.SubElement(equiv, f"{{{PAGE_NS}}}Unicode").text = line.text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def alto_xml(result: PageResult) -> bytes:
    root = etree.Element(f"{{{ALTO_NS}}}alto", nsmap={None: ALTO_NS})
    desc = etree.SubElement(root, f"{{{ALTO_NS}}}Description")
    etree.SubElement(desc, f"{{{ALTO_NS}}}MeasurementUnit").text = "pixel"
    source = etree.SubElement(desc, f"{{{ALTO_NS}}}sourceImageInformation")
    etree.SubElement(source, f"{{{ALTO_NS}}}fileName").text = result.image_name
    layout = etree.SubElement(root, f"{{{ALTO_NS}}}Layout")
    page = etree.SubElement(layout, f"{{{ALTO_NS}}}Page", ID="p1", PHYSICAL_IMG_NR="1",
                            WIDTH=str(result.width), HEIGHT=str(result.height))
    space = etree.SubElement(page, f"{{{ALTO_NS}}}PrintSpace")
    block = etree.SubElement(space, f"{{{ALTO_NS}}}TextBlock", ID="b1")
    for i, line in enumerate(result.lines, 1):
        b = line.box
        geom = dict(HPOS=str(b.x0), VPOS=str(b.y0), WIDTH=str(b.x1 - b.x0), HEIGHT=str(b.y1 - b.y0))
        tl = etree.SubElement(block, f"{{{ALTO_NS}}}TextLine", ID=f"l{i}", **geom)
        etree.SubElement(tl, f"{{{ALTO_NS}}}String", ID=f"l{i}s", CONTENT=line.text, WC=f"{line.confidence:.4f}", **geom)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
