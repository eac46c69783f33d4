"""Page results as plain text, JSONL, PAGE 2019 and ALTO 4 XML: regions by role, lines and words with
coordinates and confidences, right-to-left reading order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import groupby

from lxml import etree

from ocr_assets.pages.segment import LineBox

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
# Our line roles → PAGE 2019 TextRegion @type.
PAGE_REGION_TYPE = {"header": "header", "page-number": "page-number", "body": "paragraph", "footnote": "footnote"}


@dataclass
class Word:
    text: str
    confidence: float
    box: LineBox  # from the characters' places on the line (CTC), else the word's share of the characters


@dataclass
class PageLine:
    box: LineBox
    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    char_positions: list[float] = field(default_factory=list)  # 0..1 across the line's crop, left to right

    @property
    def role(self) -> str:
        return getattr(self.box, "role", "body")

    def words(self) -> list[Word]:
        """Words in reading order, each with the mean confidence of its characters and a box split from the line's.

        The recognizer reads right to left, so the first word sits at the right edge of the line.
        """
        confs = self.char_confidences if len(self.char_confidences) == len(self.text) else [self.confidence] * len(self.text)
        spans, start = [], None
        for i, ch in enumerate(self.text + " "):
            if ch.isspace() and start is not None:
                spans.append((start, i))
                start = None
            elif not ch.isspace() and start is None:
                start = i
        xs = self._char_x()
        width, total = self.box.x1 - self.box.x0, max(len(self.text), 1)
        out = []
        for a, b in spans:
            if xs is not None:
                half = self._half_step(xs)
                left, right = round(min(xs[a:b]) - half), round(max(xs[a:b]) + half)
            else:
                right = self.box.x1 - round(width * a / total)
                left = self.box.x1 - round(width * b / total)
            left, right = max(self.box.x0, min(left, self.box.x1 - 1)), min(self.box.x1, right)
            box = LineBox(left, self.box.y0, max(right, left + 1), self.box.y1)
            out.append(Word(self.text[a:b], float(sum(confs[a:b]) / (b - a)), box))
        return out

    def _char_x(self) -> list[float] | None:
        """Page x of each character from the recognizer's positions across the crop (box + pad, straightened)."""
        if not self.text or len(self.char_positions) != len(self.text):
            return None
        b = self.box
        crop_w = (b.inner[0] if b.skew and b.inner else b.x1 - b.x0) + 2 * b.pad
        left = (b.x0 + b.x1) / 2 - crop_w / 2
        return [left + p * crop_w for p in self.char_positions]

    @staticmethod
    def _half_step(xs: list[float]) -> float:
        """Half the typical distance between neighbouring characters: how far a word reaches past its outer ones."""
        steps = sorted(abs(x1 - x0) for x0, x1 in zip(xs, xs[1:]))
        return steps[len(steps) // 2] / 2 if steps else 0.0


@dataclass
class PageResult:
    image_name: str
    width: int
    height: int
    lines: list[PageLine] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(line.text for line in self.lines) + ("\n" if self.lines else "")

    def regions(self) -> list[tuple[str, list[tuple[int, PageLine]]]]:
        """Consecutive lines of one role form a region; regions keep the lines' reading order."""
        numbered = list(enumerate(self.lines, 1))
        return [(role, list(group)) for role, group in groupby(numbered, key=lambda item: item[1].role)]

    def records(self, **extra) -> list[dict]:
        """One JSON-ready dict per line: text, role, box, line and word confidences."""
        rows = []
        for i, line in enumerate(self.lines, 1):
            b = line.box
            rows.append({**extra, "page_image": self.image_name, "line": i, "role": line.role,
                         "box": [b.x0, b.y0, b.x1, b.y1], "text": line.text,
                         "confidence": round(line.confidence, 4),
                         "words": [{"text": w.text, "confidence": round(w.confidence, 4)} for w in line.words()]})
        return rows

    def jsonl(self, **extra) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records(**extra))


def _points(b: LineBox) -> str:
    return f"{b.x0},{b.y0} {b.x1},{b.y0} {b.x1},{b.y1} {b.x0},{b.y1}"


def _union(boxes: list[LineBox]) -> LineBox:
    return LineBox(min(b.x0 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes), max(b.y1 for b in boxes))


def page_xml(result: PageResult) -> bytes:
    def sub(parent, tag, **attrs):
        return etree.SubElement(parent, f"{{{PAGE_NS}}}{tag}", **attrs)

    root = etree.Element(f"{{{PAGE_NS}}}PcGts", nsmap={None: PAGE_NS})
    meta = sub(root, "Metadata")
    sub(meta, "Creator").text = "ocr_assets"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    sub(meta, "Created").text = now
    sub(meta, "LastChange").text = now
    page = sub(root, "Page", imageFilename=result.image_name, imageWidth=str(result.width),
               imageHeight=str(result.height), readingDirection="right-to-left", primaryScript="Arab - Arabic")
    regions = result.regions()
    if regions:
        group = sub(sub(page, "ReadingOrder"), "OrderedGroup", id="ro1")
        for index in range(len(regions)):
            sub(group, "RegionRefIndexed", index=str(index), regionRef=f"r{index + 1}")
    for r, (role, lines) in enumerate(regions, 1):
        region = sub(page, "TextRegion", id=f"r{r}", type=PAGE_REGION_TYPE.get(role, "other"),
                     readingDirection="right-to-left", textLineOrder="top-to-bottom", primaryScript="Arab - Arabic")
        sub(region, "Coords", points=_points(_union([line.box for _, line in lines])))
        for i, line in lines:
            tl = sub(region, "TextLine", id=f"l{i}", readingDirection="right-to-left")
            sub(tl, "Coords", points=_points(line.box))
            for w, word in enumerate(line.words(), 1):
                we = sub(tl, "Word", id=f"l{i}w{w}", readingDirection="right-to-left")
                sub(we, "Coords", points=_points(word.box))
                sub(sub(we, "TextEquiv", conf=f"{word.confidence:.4f}"), "Unicode").text = word.text
            sub(sub(tl, "TextEquiv", conf=f"{line.confidence:.4f}"), "Unicode").text = line.text
        text = "\n".join(line.text for _, line in lines)
        sub(sub(region, "TextEquiv"), "Unicode").text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def alto_xml(result: PageResult) -> bytes:
    """ALTO 4: running headers / page numbers above the body go to TopMargin, those below to BottomMargin,
    body and footnotes to PrintSpace; each block carries a LayoutTag naming its role; Strings in reading order."""

    def sub(parent, tag, **attrs):
        return etree.SubElement(parent, f"{{{ALTO_NS}}}{tag}", **attrs)

    def geom(b: LineBox) -> dict:
        return dict(HPOS=str(b.x0), VPOS=str(b.y0), WIDTH=str(max(b.x1 - b.x0, 1)), HEIGHT=str(max(b.y1 - b.y0, 1)))

    root = etree.Element(f"{{{ALTO_NS}}}alto", nsmap={None: ALTO_NS})
    desc = sub(root, "Description")
    sub(desc, "MeasurementUnit").text = "pixel"
    sub(sub(desc, "sourceImageInformation"), "fileName").text = result.image_name
    regions = result.regions()
    roles = sorted({role for role, _ in regions})
    if roles:
        tags = sub(root, "Tags")
        for role in roles:
            sub(tags, "LayoutTag", ID=f"tag_{role}", LABEL=role)
    layout = sub(root, "Layout")
    page = sub(layout, "Page", ID="p1", PHYSICAL_IMG_NR="1", WIDTH=str(result.width), HEIGHT=str(result.height))
    body_top = min((line.box.y0 for _, ls in regions if _ == "body" for _, line in ls), default=result.height)
    areas = {"TopMargin": [], "BottomMargin": [], "PrintSpace": []}
    for r, (role, lines) in enumerate(regions, 1):
        box = _union([line.box for _, line in lines])
        if role in ("header", "page-number"):
            areas["TopMargin" if box.y1 <= body_top else "BottomMargin"].append((r, role, lines, box))
        else:
            areas["PrintSpace"].append((r, role, lines, box))
    for area in ("TopMargin", "BottomMargin", "PrintSpace"):
        if not areas[area] and area != "PrintSpace":
            continue
        holder = sub(page, area, ID=f"p1_{area}")
        for r, role, lines, box in areas[area]:
            block = sub(holder, "TextBlock", ID=f"b{r}", TAGREFS=f"tag_{role}", LANG="ar", **geom(box))
            for i, line in lines:
                tl = sub(block, "TextLine", ID=f"l{i}", **geom(line.box))
                for w, word in enumerate(line.words(), 1):
                    if w > 1:
                        sub(tl, "SP")
                    sub(tl, "String", ID=f"l{i}w{w}", CONTENT=word.text, WC=f"{word.confidence:.4f}", **geom(word.box))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
