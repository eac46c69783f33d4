"""The review page: the least-confident lines (the review queue, drifted scans first) as images beside their OCR
text in editable fields; Submit writes the changed lines as a corrections JSONL into `corrections/inbox/`, where
the corrections sensor (or `ocr-assets corrections import`) picks them up. Served on 127.0.0.1 only (Starlette +
uvicorn, `ocr-assets review`)."""

from __future__ import annotations

import html
import json

from ocr_assets.errors import UsageError
from ocr_assets.storage import Storage

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def queue_url(storage: Storage) -> str:
    return storage.url("monitoring", "review_queue.jsonl")


def _jsonl(storage: Storage, url: str) -> list[dict]:
    if not storage.exists(url):
        return []
    return [json.loads(l) for l in storage.read_text(url).splitlines() if l]


def build_review_queue(storage: Storage, drifted_scans: list[str], lines: int = 50) -> list[dict]:
    """The lines people should check first: lines of drifted scans first, then the rest, least confident first;
    lines already corrected are left out. Written to monitoring/review_queue.jsonl."""
    from ocr_assets.monitoring.corrections import corrections_table, line_id, ocr_lines

    done = corrections_table(storage)
    corrected = set() if done is None else set(done.column("line_id").to_pylist())
    by_id, _ = ocr_lines(storage)
    drifted = set(drifted_scans)
    rows = [r for r in by_id.values() if r["line_id"] not in corrected and (r["text"] or r["confidence"] < 1)]
    rows.sort(key=lambda r: (r["scan"] not in drifted, r["confidence"]))
    queue = [{"line_id": r["line_id"], "scan": r["scan"], "source": r.get("source"), "page": r["page"],
              "line": r["line"], "text": r["text"], "confidence": r["confidence"], "drifted": r["scan"] in drifted}
             for r in rows[:lines]]
    storage.write_text(queue_url(storage), "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queue))
    return queue


def review_queue(storage: Storage, lines: int = 50) -> list[dict]:
    """The stored review queue (weighted to drifted scans), else the corpus's least-confident lines."""
    from ocr_assets.corpus.build import corpus_url
    from ocr_assets.monitoring.corrections import corrections_table, line_id

    queue = _jsonl(storage, queue_url(storage))
    if not queue:
        queue = [{**r, "line_id": line_id(r["scan"], r["page"], r["line"]), "drifted": False}
                 for r in _jsonl(storage, corpus_url(storage, "review.jsonl"))]
    done = corrections_table(storage)
    corrected = set() if done is None else set(done.column("line_id").to_pylist())
    return [q for q in queue if q["line_id"] not in corrected][:lines]


PAGE = """<!doctype html>
<html lang="ar"><head><meta charset="utf-8"><title>OCR review</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 6px; vertical-align: middle; }}
td.img img {{ max-width: 560px; border: 1px solid #ccc; }}
input.text {{ font-size: 22px; width: 24em; max-width: 40vw; font-family: 'Amiri', serif; }}
.drifted {{ background: #fff4e5; }} .conf {{ color: #a33; font-variant-numeric: tabular-nums; }}
#status {{ margin: 1em 0; font-weight: bold; }}
</style></head><body>
<h1>Lines to check</h1>
<p>{count} least-confident lines{drift_note}. Correct the text on the right of each image, then press <b>Submit</b>:
changed lines are saved as corrections.</p>
<form id="review" onsubmit="return submitCorrections(event)">
<table><tr><th>#</th><th>confidence</th><th>where</th><th>line image</th><th>text</th></tr>
{rows}
</table>
<p><button type="submit" id="submit">Submit</button></p>
</form>
<div id="status"></div>
<script>
async function submitCorrections(event) {{
  event.preventDefault();
  const rows = [];
  for (const input of document.querySelectorAll('input.text')) {{
    if (input.value !== input.dataset.ocr) rows.push({{line_id: input.dataset.lineId, text: input.value}});
  }}
  const response = await fetch('corrections', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                                               body: JSON.stringify(rows)}});
  const answer = await response.json();
  document.getElementById('status').textContent = response.ok ? `Saved ${{answer.saved}} corrections` : `Error: ${{answer.error}}`;
  return false;
}}
</script>
</body></html>"""


def render_page(queue: list[dict]) -> str:
    rows = []
    for i, q in enumerate(queue, 1):
        lid = html.escape(q["line_id"], quote=True)
        where = html.escape(f"{q.get('source') or q['scan']} p{q['page']} l{q['line']}")
        rows.append(
            f'<tr class="{"drifted" if q.get("drifted") else ""}"><td>{i}</td><td class="conf">{q["confidence"]:.3f}</td>'
            f'<td>{where}</td><td class="img"><img alt="line {lid}" src="line?id={lid}"></td>'
            f'<td><input class="text" dir="rtl" name="{lid}" data-line-id="{lid}" '
            f'data-ocr="{html.escape(q["text"], quote=True)}" value="{html.escape(q["text"], quote=True)}"></td></tr>')
    drifted = sum(1 for q in queue if q.get("drifted"))
    note = f", {drifted} of them from drifted scans (shaded)" if drifted else ""
    return PAGE.format(count=len(queue), drift_note=note, rows="\n".join(rows))


def create_app(storage: Storage, lines: int = 50):
    """The Starlette app: GET / (the page), GET /line?id=... (a line's PNG), POST /corrections (JSON rows)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from ocr_assets.monitoring.corrections import line_image, write_inbox_jsonl

    async def index(request: Request):
        return HTMLResponse(render_page(review_queue(storage, lines)))

    async def image(request: Request):
        try:
            return Response(line_image(storage, request.query_params.get("id", "")), media_type="image/png")
        except (KeyError, StopIteration, IndexError, OSError):
            return JSONResponse({"error": "no such line"}, status_code=404)

    async def submit(request: Request):
        try:
            rows = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("line_id"), str)
                                                 and isinstance(r.get("text"), str) for r in rows):
            return JSONResponse({"error": 'expected a list of {"line_id": str, "text": str}'}, status_code=400)
        if not rows:
            return JSONResponse({"saved": 0, "file": None})
        return JSONResponse({"saved": len(rows), "file": write_inbox_jsonl(storage, rows)})

    return Starlette(routes=[Route("/", index), Route("/line", image), Route("/corrections", submit, methods=["POST"])])


def check_loopback(host: str) -> None:
    if host not in LOOPBACK:
        raise UsageError(f"the review page serves on 127.0.0.1 only, not {host!r}; put a reverse proxy with "
                         "authentication in front of it to share it")


def server(storage: Storage, host: str = "127.0.0.1", port: int = 8765, lines: int = 50):
    """A uvicorn Server for the app (call .run() to block, or run it in a thread and set should_exit)."""
    import uvicorn

    check_loopback(host)
    config = uvicorn.Config(create_app(storage, lines), host=host, port=port, log_level="warning", lifespan="off")
    return uvicorn.Server(config)
