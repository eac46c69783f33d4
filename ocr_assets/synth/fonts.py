"""Arabic fonts for synthetic lines: found on disk and in font packages, verified before use.

Sources, in order: $OCR_ASSETS_FONT_DIRS (os.pathsep list), the system font folders, and the fonts that
Python font packages install (`fontpkg-amiri` ships Amiri, so a machine without system fonts still has
one). A font is kept only if its cmap covers the Arabic letters, tashkeel and the space, and Pillow's raqm
layout draws ink with it. Faces are classed `naskh` (book faces), `other` (plain text faces) or `display`
(Kufi, Nastaliq, monospace, decorative, Qurʾān-only); `discover_fonts` leaves display faces out by default.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from ocr_assets.errors import FontError

ENV_FONT_DIRS = "OCR_ASSETS_FONT_DIRS"
SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".woff")  # WOFF 1: FreeType and fontTools read it as is (web font packages ship it)

# What a font must draw: the Arabic letters, tashkeel and the space; the rest is checked per text.
REQUIRED = frozenset([0x20, *range(0x0621, 0x063B), *range(0x0641, 0x064B), *range(0x064B, 0x0653)])

# Book faces of classical editions (Naskh and its Traditional / Simplified relatives).
_NASKH = re.compile(
    r"amiri|scheherazade|lateef|naskh|kacstbook|ae_(al)?hor|ae_furat|ae_kayrawan|ae_tholoth|ae_dimnah"
    r"|ae_cortoba|ae_ostorah|ae_rasheeq|traditional|markazi|mirza",
    re.IGNORECASE,
)
# Faces no classical book is set in, or that draw Arabic only as an afterthought.
_DISPLAY = re.compile(
    r"kufi|nastaliq|thabit|dejavu|quran|qurn|haramain|electron|granada|japan|ae_jet|shado|manzomah"
    r"|nagham|kacst(art|decorative|digital|poster|screen|title|pen)|colou?r|mono",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FontSpec:
    name: str  # file stem, unique in a discovery ("Amiri-Regular"); synthetic documents are named by it
    path: str
    kind: str  # naskh | other | display
    family: str = ""  # sampling picks a family first so a 7-weight family does not dominate
    codepoints: frozenset[int] = field(default=frozenset(), repr=False, compare=False)

    def covers(self, text: str) -> bool:
        """True when the font has a glyph for every character of `text`."""
        return all(ord(ch) in self.codepoints for ch in set(text))


def require_raqm() -> None:
    """Fail early and clearly when Pillow was built without raqm (no Arabic shaping, no RTL)."""
    from PIL import features

    if not features.check("raqm"):
        raise FontError(
            "Pillow has no raqm layout support (PIL.features.check('raqm') is False), so Arabic would be drawn "
            "unjoined and left-to-right. Fix: install libraqm0 with libfribidi0 and libharfbuzz0b "
            "(apt-get install libraqm0) or a Pillow wheel that bundles raqm (pip install --force-reinstall Pillow)."
        )


_STYLE_WORDS = re.compile(r"[ -](extra|semi|demi)?(bold|light|medium|regular|italic|oblique|slanted)\b.*$", re.I)


def _family_name(font, stem: str) -> str:
    """The typographic family (ID 16, else ID 1) without weight or slope words: "Lateef", "Mashq"."""
    table = font["name"] if "name" in font else None
    name = (table.getDebugName(16) or table.getDebugName(1)) if table is not None else None
    return _STYLE_WORDS.sub("", name or stem).strip() or stem


def inspect_font(path: str | Path) -> FontSpec | None:
    """A verified FontSpec for `path`, or None when it lacks Arabic coverage or will not render."""
    from fontTools.ttLib import TTFont
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    try:
        with TTFont(str(path), fontNumber=0, lazy=True) as font:
            cmap = font.getBestCmap() or {}
            family = _family_name(font, path.stem)
            color = "COLR" in font or "CBDT" in font or "sbix" in font
    except Exception:  # a broken or non-font file in a font folder is skipped, not fatal
        return None
    codepoints = frozenset(cmap)
    if color or not REQUIRED <= codepoints:
        return None
    try:
        pil_font = ImageFont.truetype(str(path), 32, layout_engine=ImageFont.Layout.RAQM)
        image = Image.new("L", (400, 80), 0)
        ImageDraw.Draw(image).text((390, 40), "بِسْمِ الكتاب", font=pil_font, fill=255, anchor="rm",
                                   direction="rtl", language="ar")
    except Exception:
        return None
    if image.getbbox() is None:
        return None
    label = f"{family} {path.stem}"
    kind = "display" if _DISPLAY.search(label) else "naskh" if _NASKH.search(label) else "other"
    return FontSpec(name=path.stem, path=str(path), kind=kind, family=family, codepoints=codepoints)


def _package_font_files() -> list[Path]:
    """Font files installed by Python packages: fontpkg families (fontpkg-amiri) and quran-text's font."""
    files: list[Path] = []
    try:
        import fontpkg

        for family in fontpkg.families().values():
            files.extend(Path(f.path) for f in family.files)
    except ImportError:
        pass
    try:
        import quran_text  # ships the KFGQPC Ḥafṣ font; it lacks U+0622 (writes آ decomposed), so checks drop it

        files.extend(sorted((Path(quran_text.__file__).parent / "quran_text_data").glob("*.ttf")))
    except ImportError:
        pass
    return files


def font_dirs() -> list[Path]:
    """Folders searched: $OCR_ASSETS_FONT_DIRS first, then the usual system font folders."""
    explicit = [Path(p).expanduser() for p in os.environ.get(ENV_FONT_DIRS, "").split(os.pathsep) if p]
    for path in explicit:
        if not path.is_dir():
            raise FontError(
                f"{ENV_FONT_DIRS} names {str(path)!r}, which is not a folder; set it to existing folders "
                f"separated by {os.pathsep!r} or unset it"
            )
    return explicit + [Path(p).expanduser() for p in SYSTEM_FONT_DIRS if Path(p).expanduser().is_dir()]


@functools.lru_cache(maxsize=8)
def _discover(dirs: tuple[str, ...], include_display: bool) -> tuple[FontSpec, ...]:
    require_raqm()
    candidates = [f for d in dirs for f in sorted(Path(d).rglob("*")) if f.suffix.lower() in FONT_SUFFIXES]
    candidates += _package_font_files()
    found: dict[str, FontSpec] = {}
    for path in candidates:
        spec = inspect_font(path)
        # One font per name: the first source wins, so a system Amiri and fontpkg's Amiri do not both count.
        if spec is not None and spec.name not in found and (include_display or spec.kind != "display"):
            found[spec.name] = spec
    return tuple(sorted(found.values(), key=lambda s: (s.kind != "naskh", s.name)))


def discover_fonts(include_display: bool = False) -> list[FontSpec]:
    """Verified Arabic fonts, book faces first then by name (deterministic for a given machine)."""
    specs = _discover(tuple(str(d) for d in font_dirs()), include_display)
    if not specs:
        raise FontError(
            "no usable Arabic font found in "
            f"{[str(d) for d in font_dirs()]} or installed font packages; install fontpkg-amiri "
            f"(pip install fontpkg-amiri) or Debian fonts-hosny-amiri, or point {ENV_FONT_DIRS} at a folder "
            "of Arabic .ttf/.otf files"
        )
    return list(specs)


def book_faces(fonts: list[FontSpec] | None = None) -> list[FontSpec]:
    """The Naskh-like book faces among `fonts` (default: all discovered)."""
    return [f for f in (fonts if fonts is not None else discover_fonts()) if f.kind == "naskh"]


def select_fonts(fonts: list[FontSpec] | None = None, exclude: tuple[str, ...] | list[str] = ()) -> list[FontSpec]:
    """`fonts` (default: discovered) without those whose name or family is in `exclude`."""
    pool = fonts if fonts is not None else discover_fonts()
    excluded = set(exclude)
    kept = [f for f in pool if f.name not in excluded and f.family not in excluded]
    if not kept:
        raise FontError(
            f"excluding {sorted(excluded)} leaves no font out of {[f.name for f in pool]}; exclude fewer fonts"
        )
    return kept
