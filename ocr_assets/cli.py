"""The `ocr-assets` command (filled in by later steps)."""

def main() -> None:
    raise SystemExit("not yet")
