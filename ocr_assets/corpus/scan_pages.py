"""Scan bytes → page images: single images, every page of a multi-page TIFF, every page of a PDF."""

from __future__ import annotations

from PIL import Image

from ocr_assets.data.images import MAX_PIXELS, ImageRejected, iter_frames

PDF_DPI = 300  # classical print needs ~300 dpi for dots and tashkeel to survive
MAX_PAGES = 2000


def _pdf_pages(data: bytes, dpi: int):
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as err:
        raise ImageRejected(f"PDF cannot be opened ({err}); re-export it") from err
    try:
        if len(pdf) > MAX_PAGES:
            raise ImageRejected(f"PDF has {len(pdf)} pages, above the {MAX_PAGES}-page limit; split it")
        for index in range(len(pdf)):
            page = pdf[index]
            width, height = page.get_size()  # points (1/72 inch)
            scale = dpi / 72
            if width * height * scale * scale > MAX_PIXELS:  # a poster-sized page: render at the pixel cap
                scale = (MAX_PIXELS / max(width * height, 1)) ** 0.5
            try:
                image = page.render(scale=scale, grayscale=True).to_pil().convert("L")
            except pdfium.PdfiumError as err:
                raise ImageRejected(f"PDF page {index + 1} cannot be rendered ({err})") from err
            finally:
                page.close()
            yield image
    finally:
        pdf.close()


def scan_pages(data: bytes, dpi: int = PDF_DPI):
    """The pages of one scan file as 8-bit gray images, one at a time, or ImageRejected with a reason."""
    pages = _pdf_pages(data, dpi) if data[:5] == b"%PDF-" else iter_frames(data, max_frames=MAX_PAGES)
    empty = True
    for page in pages:
        empty = False
        yield page
    if empty:
        raise ImageRejected("the file holds no pages")
