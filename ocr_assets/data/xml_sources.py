"""ALTO (v2-4) and PAGE (2013/2019) XML with their page images, as eScriptorium and Transkribus export them.

Each TextLine becomes one RawLine: the page image cropped to the line polygon's bounding box, outside the
polygon painted white. line_id is "<xml path without .xml>/<line ID>"; document is the XML path without
`.xml` relative to the folder (the XML's stem when it sits at the top).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from lxml import etree
from PIL import Image, ImageDraw

from ocr_assets.data.gt_folder import IMAGE_EXTENSIONS, SourceError
from ocr_assets.data.images import ImageRejected, decode_line_image, encode_png
from ocr_assets.data.records import RawLine

# Untrusted XML: no entity expansion, no network, no huge trees.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _local(tag) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _children(el, name: str):
    return [c for c in el if _local(c.tag) == name]


def _descendants(el, name: str):
    return [c for c in el.iter() if _local(c.tag) == name]


def parse_points(points: str) -> list[tuple[float, float]]:
    """Points from PAGE "x,y x,y" or ALTO "x y x y" / "x,y x,y" notation."""
    numbers = [float(n) for n in _NUMBER.findall(points or "")]
    return list(zip(numbers[0::2], numbers[1::2]))


def _page_lines(root) -> tuple[str | None, list[tuple[str, list, str | None]]]:
    page = next(iter(_descendants(root, "Page")), None)
    image_ref = page.get("imageFilename") if page is not None else None
    lines = []
    for number, line in enumerate(_descendants(root, "TextLine"), 1):
        coords = next(iter(_children(line, "Coords")), None)
        points = []
        if coords is not None:
            points = parse_points(coords.get("points", ""))
            if not points:  # PAGE 2010 style <Point x= y=/> children
                points = [(float(p.get("x", 0)), float(p.get("y", 0))) for p in _children(coords, "Point")]
        lines.append((line.get("id") or f"l{number}", points, _page_text(line)))
    return image_ref, lines


def _unicode_of(equiv) -> str | None:
    uni = next(iter(_children(equiv, "Unicode")), None)
    return uni.text or "" if uni is not None else None


def _page_text(line) -> str | None:
    equivs = _children(line, "TextEquiv")
    if equivs:
        # Several readings: the lowest @index is the preferred one.
        equivs.sort(key=lambda e: int(e.get("index", "0")) if e.get("index", "0").lstrip("-").isdigit() else 0)
        return _unicode_of(equivs[0])
    words = [_unicode_of(e) for w in _children(line, "Word") for e in _children(w, "TextEquiv")[:1]]
    words = [w for w in words if w]
    return " ".join(words) if words else None


def _alto_lines(root) -> tuple[str | None, list[tuple[str, list, str | None]], str]:
    name = next(iter(_descendants(root, "fileName")), None)
    unit = next(iter(_descendants(root, "MeasurementUnit")), None)
    lines = []
    for number, line in enumerate(_descendants(root, "TextLine"), 1):
        # The line's own Shape (Strings may carry shapes of their own further down).
        polygon = next((p for shape in _children(line, "Shape") for p in _children(shape, "Polygon")), None)
        points = parse_points(polygon.get("POINTS", "")) if polygon is not None else []
        if len(points) < 2:
            box = [line.get(k) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")]
            if all(v is not None for v in box):
                x, y, w, h = (float(v) for v in box)
                points = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        lines.append((line.get("ID") or f"l{number}", points, _alto_text(line)))
    return (name.text.strip() if name is not None and name.text else None), lines, (
        unit.text.strip() if unit is not None and unit.text else "pixel"
    )


def _alto_text(line) -> str | None:
    parts: list[str] = []
    for child in line:
        kind = _local(child.tag)
        if kind == "String":
            if parts and parts[-1] != " ":
                parts.append(" ")  # producers often omit SP between words
            parts.append(child.get("CONTENT", ""))
        elif kind == "SP":
            parts.append(" ")
        elif kind == "HYP":
            parts.append(child.get("CONTENT", ""))
    return "".join(parts) if parts else None


def find_page_image(xml_path: Path, ref: str | None) -> Path | None:
    """The page image an XML names: relative to the XML, else by base name or the XML's stem nearby."""
    folders = [xml_path.parent, xml_path.parent.parent]  # Transkribus keeps XML in page/ below images
    candidates: list[Path] = []
    if ref:
        ref = ref.removeprefix("file://")
        candidates.append(xml_path.parent / ref)
        base = re.split(r"[\\/]", ref)[-1]
        candidates += [folder / base for folder in folders]
    stem = xml_path.name.split(".")[0]
    candidates += [folder / (stem + ext) for folder in folders for ext in IMAGE_EXTENSIONS]
    candidates += [folder / (stem + ext.upper()) for folder in folders for ext in IMAGE_EXTENSIONS]
    return next((c for c in candidates if c.is_file()), None)


def crop_polygon(page: Image.Image, points: list[tuple[float, float]]) -> Image.Image | None:
    """The polygon's bounding box cut from the page, outside the polygon white; None if it misses the page."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    left, top = max(0, int(min(xs))), max(0, int(min(ys)))
    right, bottom = min(page.width, int(round(max(xs))) + 1), min(page.height, int(round(max(ys))) + 1)
    if right <= left or bottom <= top:
        return None
    crop = page.crop((left, top, right, bottom))
    if len(points) < 3:
        return crop
    mask = Image.new("L", crop.size, 0)
    ImageDraw.Draw(mask).polygon([(x - left, y - top) for x, y in points], fill=255, outline=255)
    return Image.composite(crop, Image.new("L", crop.size, 255), mask)


def _unit_scale(unit: str, page: Image.Image) -> float:
    dpi = float((page.info.get("dpi") or (300, 300))[0] or 300)
    return {"mm10": dpi / 254.0, "inch1200": dpi / 1200.0}.get(unit, 1.0)


def iter_xml_file(xml_path: Path, root: Path) -> Iterator[RawLine]:
    """RawLines of one ALTO or PAGE file (nothing for other XML such as METS)."""
    rel = xml_path.relative_to(root).as_posix()
    document = rel[: -len(".xml")] if rel.lower().endswith(".xml") else rel
    try:
        tree = etree.parse(str(xml_path), _PARSER).getroot()
    except (etree.XMLSyntaxError, OSError) as err:
        yield RawLine(document, document, "xml", f"{rel}: not well-formed XML ({err}); fix or re-export it", None, None)
        return
    kind = _local(tree.tag)
    if kind == "alto":
        source, (ref, lines, unit) = "alto", _alto_lines(tree)
    elif kind == "PcGts":
        source, (ref, lines), unit = "page", _page_lines(tree), "pixel"
    else:
        return
    image_path = find_page_image(xml_path, ref)
    page, problem = None, ""
    if image_path is None:
        problem = f" (page image {ref or xml_path.stem!r} not found beside the XML)"
    else:
        try:
            page = decode_line_image(image_path.read_bytes())
        except ImageRejected as err:
            problem = f" (page image {image_path.name!r} rejected: {err.reason})"
    scale = _unit_scale(unit, page) if page is not None else 1.0
    for line_id, points, text in lines:
        image, note = None, problem
        if page is not None:
            if len(points) < 2:
                note = " (line has no coordinates)"
            else:
                crop = crop_polygon(page, [(x * scale, y * scale) for x, y in points])
                if crop is None:
                    note = " (line coordinates lie outside the page image)"
                else:
                    image = encode_png(crop)
        yield RawLine(
            line_id=f"{document}/{line_id}",
            document=document,
            source=source,
            origin=f"{rel}#{line_id}{note}",
            image=image,
            text_bytes=text.encode("utf-8") if text is not None else None,
        )


def iter_xml_folder(root: str | os.PathLike) -> Iterator[RawLine]:
    """Yield RawLines from every ALTO / PAGE XML file under root, in path order."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"XML folder {str(root)!r} does not exist or is not a folder; pass an export folder")
    for xml_path in sorted(p for p in root.rglob("*") if p.suffix.lower() == ".xml" and p.is_file()):
        yield from iter_xml_file(xml_path, root)
