"""Scheduled re-evaluation: re-score the champion on the golden set, keep the history
(`monitoring/reevaluation/history.jsonl`), plot CER over time, and say when CER worsened past the tolerance."""

from __future__ import annotations

import io
import json
import time

from ocr_assets.storage import Storage


def history_url(storage: Storage, name: str = "history.jsonl") -> str:
    return storage.url("monitoring", "reevaluation", name)


def read_history(storage: Storage) -> list[dict]:
    url = history_url(storage)
    if not storage.exists(url):
        return []
    rows = []
    for line in storage.read_text(url).splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash before writes were atomic
    return rows


def score_model(recognizer, pairs, batch_size: int = 64) -> dict:
    from ocr_assets.evaluation.evaluate import evaluate_pairs

    return evaluate_pairs(recognizer, pairs, batch_size=batch_size).summary()


def reevaluate(storage: Storage, recognizer, model: str, pairs, golden: dict, tolerance: float) -> dict:
    """Score, append to the history (whole file rewritten atomically), judge against the previous entry."""
    summary = score_model(recognizer, pairs)
    history = read_history(storage)
    previous = history[-1] if history else None
    record = {"at": time.time(), "model": model, "golden": golden.get("kind"), **summary}
    worsened = previous is not None and record["cer_norm"] - previous["cer_norm"] > tolerance
    record["worsened"] = bool(worsened)
    record["previous_cer_norm"] = previous["cer_norm"] if previous else None
    history.append(record)
    storage.write_text(history_url(storage), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in history))
    storage.write_bytes(history_url(storage, "cer_over_time.png"), plot_history(history))
    return record


def plot_history(history: list[dict]) -> bytes:
    """PNG: CER and CER_norm of each re-evaluation over time, the model's version marked where it changed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from datetime import datetime, timezone

    times = [datetime.fromtimestamp(r["at"], tz=timezone.utc) for r in history]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(times, [r["cer"] for r in history], marker="o", label="CER")
    ax.plot(times, [r["cer_norm"] for r in history], marker="s", label="CER_norm")
    last = None
    for t, r in zip(times, history):
        if r["model"] != last:
            ax.annotate(str(r["model"]).split("(")[-1].rstrip(")")[:24], (t, r["cer_norm"]), fontsize=7,
                        textcoords="offset points", xytext=(0, 8))
            last = r["model"]
    ax.set_ylabel("error rate on the golden set")
    ax.set_title("champion re-evaluation over time")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def history_markdown(history: list[dict], last: int = 12) -> str:
    rows = [f"| {time.strftime('%Y-%m-%d %H:%M', time.gmtime(r['at']))} | {r['model']} | {r['cer']:.4f} | "
            f"{r['cer_norm']:.4f} | {'worse' if r.get('worsened') else ''} |" for r in history[-last:]]
    return "| when (UTC) | model | CER | CER_norm | |\n|---|---|---|---|---|\n" + "\n".join(rows)
