"""Rendered scans for the monitoring tests: clean pages in Amiri, and degraded ones (darker paper, blurred, another
typeface) with the same kind of text; their true lines are known, so corrections can be made from them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ocr_assets_tests.test_images import AMIRI

LATEEF = Path("/usr/share/fonts/opentype/lateef/Lateef-Regular.ttf")  # Debian fonts-sil-lateef (scripts/test.sh)
SENTENCES = [
    "قال أبو عثمان في كتاب الحيوان", "حدثنا محمد بن عبد الله سنة", "رضي الله عنه وعن أبيه", "فهذا باب من العلم كما قال",
    "وكان الشافعي يقول في كتاب الأم", "حدثنا أحمد بن حنبل عن أبيه", "وذكر ابن قتيبة في أدب الكاتب", "ثم دخلت سنة ثلاث وعشرين",
    "وفيها مات الفقيه المحدث بمكة", "وقال الجاحظ في البيان والتبيين", "وهذا باب في معرفة الأسماء والكنى", "قال أبو عبد الله رحمه الله",
]


def page_lines(index: int, count: int = 5) -> list[str]:
    """The true lines of page `index`: a rotation of the sentences, and a last line with the page's number (so
    no two pages are the same scan)."""
    number = "".join("٠١٢٣٤٥٦٧٨٩"[int(d)] for d in str(index + 1))
    return [SENTENCES[(index * 5 + i) % len(SENTENCES)] for i in range(count - 1)] + [f"تمت الصفحة {number} من الكتاب"]


def render_scan(lines: list[str], font_path: Path = AMIRI, size: int = 34, paper: int = 255, ink: int = 0,
                blur: float = 0.0, gap: int = 30) -> Image.Image:
    font = ImageFont.truetype(str(font_path), size)
    boxes = [font.getbbox(t, direction="rtl", language="ar") for t in lines]
    width = max(b[2] - b[0] for b in boxes) + 120
    height = sum(b[3] - b[1] for b in boxes) + gap * (len(lines) + 1) + 20
    page = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(page)
    y = gap
    for text, (left, top, right, bottom) in zip(lines, boxes):
        draw.text((width - 60 - (right - left) - left, y - top), text, font=font, fill=ink, direction="rtl", language="ar")
        y += bottom - top + gap
    return page.filter(ImageFilter.GaussianBlur(blur)) if blur else page


def clean_scan(index: int) -> Image.Image:
    return render_scan(page_lines(index))


def degraded_scan(index: int) -> Image.Image:
    """Darker paper, a softer image and another face (Lateef): what a new batch from another library looks like."""
    return render_scan(page_lines(index), font_path=LATEEF, size=26, paper=150, ink=20, blur=1.5)


def truth_of(root: Path, key: str) -> list[str]:
    """The true lines of OCR'd scan `key` under data root `root` (its inbox file is named <kind><index>.png)."""
    import json
    import re

    path = json.loads((root / "scans" / "manifest" / f"{key}.json").read_text())["path"]
    return page_lines(int(re.search(r"(\d+)\.png$", path).group(1)))


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it (the alert hook in tests)."""

    def __init__(self):
        import http.server
        import json
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
