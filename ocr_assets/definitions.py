"""The code location's entry point (`ocr_assets.definitions:defs`); the Dagster layer lives in ocr_assets/defs/."""

from ocr_assets.defs.definitions import build_defs, defs

__all__ = ["build_defs", "defs"]
