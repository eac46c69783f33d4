"""Evaluation report: Markdown with PNG plots (CER per document, error vs length, worst lines, confusions)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written headless, in steps and CI
import matplotlib.pyplot as plt  # noqa: E402

from ocr_assets import metrics  # noqa: E402
from ocr_assets.evaluation.evaluate import EvalResult  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cer_per_document(result: EvalResult, path: Path, baseline: dict[str, float] | None = None) -> Path:
    """Bars of CER_norm per document; `baseline` (document -> CER_norm) adds the base model's bars beside them."""
    docs = sorted(result.per_document)
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(docs)), 3.2))
    xs = range(len(docs))
    if baseline is not None:
        ax.bar([x - 0.2 for x in xs], [baseline.get(d, float("nan")) for d in docs],
               width=0.4, label="base", color="#bbbbbb")
        ax.bar([x + 0.2 for x in xs], [result.per_document[d].cer_norm for d in docs], width=0.4, label="evaluated", color="#2a6f97")
        ax.legend()
    else:
        ax.bar(list(xs), [result.per_document[d].cer_norm for d in docs], color="#2a6f97")
    ax.set_xticks(list(xs), docs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("CER_norm")
    ax.set_title("CER (tashkeel stripped) per document")
    return _save(fig, path)


def plot_error_vs_length(result: EvalResult, path: Path) -> Path:
    texts = result.predictions.column("text").to_pylist()
    errs = result.predictions.column("line_cer").to_pylist()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.scatter([len(t) for t in texts], errs, s=6, alpha=0.5, color="#c44536")
    ax.set_xlabel("reference length (characters)")
    ax.set_ylabel("line CER_norm")
    ax.set_title("Error vs line length")
    return _save(fig, path)


def worst_lines(result: EvalResult, n: int = 8) -> list[dict]:
    rows = result.predictions.to_pylist()
    rows.sort(key=lambda r: -r["line_cer"])
    return rows[:n]


def write_report(result: EvalResult, out_dir: Path, title: str, baseline: dict | None = None) -> dict[str, Path]:
    """`baseline`: the base model's summary with a `per_document` mapping (baseline_evaluation's JSON)."""
    """Write report.md + report.html and the plots into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base_docs = {d: v["cer_norm"] for d, v in (baseline or {}).get("per_document", {}).items()}
    per_doc_png = plot_cer_per_document(result, out_dir / "cer_per_document.png", base_docs if baseline else None)
    length_png = plot_error_vs_length(result, out_dir / "error_vs_length.png")
    refs = result.predictions.column("text").to_pylist()
    hyps = result.predictions.column("prediction").to_pylist()
    confusions = metrics.char_confusions(refs, hyps, top=15)
    worst = worst_lines(result)

    md = [f"# {title}", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in result.summary().items()]
    if baseline is not None:
        md += [f"| base cer_norm | {baseline['cer_norm']:.5f} |", f"| base cer | {baseline['cer']:.5f} |"]
    md += ["", "## Per document", "", "| document | lines | CER | CER_norm | WER |", "|---|---|---|---|---|"]
    md += [f"| {d} | {s.lines} | {s.cer:.4f} | {s.cer_norm:.4f} | {s.wer:.4f} |" for d, s in sorted(result.per_document.items())]
    md += ["", f"![CER per document]({per_doc_png.name})", "", f"![Error vs length]({length_png.name})", ""]
    md += ["## Character confusions (reference → prediction)", "", "| reference | prediction | count |", "|---|---|---|"]
    md += [f"| {a or '∅'} | {b or '∅'} | {n} |" for a, b, n in confusions]
    md += ["", "## Worst lines", "", "| line | CER_norm | reference | prediction |", "|---|---|---|---|"]
    md += [f"| {w['line_id']} | {w['line_cer']:.3f} | {w['text']} | {w['prediction']} |" for w in worst]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")

    def img_tag(data: bytes, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    body = [f"<h1>{html.escape(title)}</h1>", "<table>"]
    body += [f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in result.summary().items()]
    body += ["</table>", img_tag(per_doc_png.read_bytes(), "CER per document"), img_tag(length_png.read_bytes(), "error vs length")]
    body += ["<h2>Worst lines</h2><table dir='rtl'>"]
    for w in worst:
        body.append(
            f"<tr><td>{html.escape(w['line_id'])}<br>{w['line_cer']:.3f}</td><td>{img_tag(w['image'], w['line_id'])}"
            f"<br><b>ref</b> {html.escape(w['text'])}<br><b>ocr</b> {html.escape(w['prediction'])}</td></tr>"
        )
    body.append("</table>")
    html_path = out_dir / "report.html"
    html_path.write_text("<!doctype html><meta charset='utf-8'><body>" + "\n".join(body) + "</body>", encoding="utf-8")
    return {"markdown": md_path, "html": html_path, "cer_per_document": per_doc_png, "error_vs_length": length_png}


def png_markdown(path: Path, alt: str) -> str:
    """Inline a small PNG in Markdown metadata so the Dagster UI shows it."""
    buf = io.BytesIO(path.read_bytes())
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"
