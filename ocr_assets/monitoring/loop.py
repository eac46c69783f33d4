"""The correction loop's second half: a challenger LoRA fine-tuned from the champion on the accepted corrections,
gated on the golden set plus held-out corrections by the existing gate (`ocr_assets.evaluation.gate`), promoted
only when better, and the corpus re-read for the scans an older model read (earlier versions kept)."""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from ocr_assets.errors import SourceError
from ocr_assets.settings import CorrectionSettings, MonitoringSettings
from ocr_assets.storage import Storage

GATE_COLUMNS = ["line_id", "document", "text", "image"]


def split_heldout(pairs: pa.Table, fraction: float, seed: int) -> tuple[pa.Table, pa.Table]:
    """(train, held-out) by a seeded hash of the line id: a line stays on its side as corrections accumulate."""
    ids = pairs.column("line_id").to_pylist()
    score = [int(hashlib.sha1(f"{seed}:{i}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for i in ids]
    held = [i for i, s in enumerate(score) if s < fraction]
    if not held:  # at least one line to judge by
        held = [min(range(len(ids)), key=lambda i: score[i])]
    train = [i for i in range(len(ids)) if i not in set(held)]
    return pairs.take(train), pairs.take(held)


def _score(recognizer, pairs: pa.Table) -> float:
    from ocr_assets.evaluation.evaluate import evaluate_pairs

    return float(evaluate_pairs(recognizer, pairs).overall.cer_norm)


def train_challenger(storage: Storage, registry_uri: str | None, corrections: CorrectionSettings,
                     monitoring: MonitoringSettings, device: str = "auto", log=print) -> dict:
    """Fine-tune, gate, maybe promote. The champion and the corpus change only when the challenger wins."""
    import mlflow

    from ocr_assets.evaluation.gate import Decision, promote_if_better
    from ocr_assets.models.backends import backend_for
    from ocr_assets.models.resolve import resolve_model
    from ocr_assets.monitoring.corrections import corrections_table, training_state, url
    from ocr_assets.monitoring.golden import ensure_golden
    from ocr_assets.registry import CHAMPION, Registry
    from ocr_assets.settings import replace
    from ocr_assets.training.finetune import lora_finetune, merge_adapters

    table = corrections_table(storage)
    if table is None or table.num_rows < corrections.min_corrections:
        have = 0 if table is None else table.num_rows
        raise SourceError(f"{have} accepted corrections; a challenger needs {corrections.min_corrections} "
                          "(CorrectionSettings.min_corrections)")
    started = time.perf_counter()
    registry = Registry(registry_uri or storage.mlflow_uri())
    champion_version = registry.alias_version(CHAMPION) if registry_uri else None
    champion = resolve_model(None, registry_uri)
    log(f"champion: {champion.source}; {table.num_rows} corrections")
    train, heldout = split_heldout(table, corrections.heldout_fraction, corrections.seed)
    golden, golden_info = ensure_golden(storage, monitoring)
    gate_set = pa.concat_tables([golden.select(GATE_COLUMNS), heldout.select(GATE_COLUMNS).cast(golden.select(GATE_COLUMNS).schema)])
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="ocr-assets-challenger-") as tmp:
        adapters, merged = Path(tmp) / "adapters", Path(tmp) / "model"
        settings = replace(corrections.finetune(), device=device, checkpoint_dir=str(Path(tmp) / "ckpt"))
        log(f"fine-tuning on {train.num_rows} lines ({heldout.num_rows} held out), {settings.epochs} epochs")
        lora_finetune(champion.path, train, None, settings, adapters,
                      on_epoch=lambda epoch, m: log(f"epoch {epoch}: " + ", ".join(
                          f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())))
        merge_adapters(champion.path, adapters, merged, settings.merge_dtype)
        backend = backend_for(champion.path)
        old = backend.load(champion.path, device=device)
        new = backend.load(merged, device=device)
        scores = {
            "champion_cer_norm": _score(old, gate_set), "challenger_cer_norm": _score(new, gate_set),
            "champion_golden_cer_norm": _score(old, golden), "challenger_golden_cer_norm": _score(new, golden),
            "champion_heldout_cer_norm": _score(old, heldout), "challenger_heldout_cer_norm": _score(new, heldout),
        }
        log("gate: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        model_url = storage.publish_dir(merged, storage.url("models", "corrections", stamp))
        start_experiment(registry.uri, storage)
        with mlflow.start_run(run_name=f"correction-challenger-{stamp}"):
            mlflow.set_tags({"ocr_assets.kind": "correction_challenger", "champion": champion.source})
            mlflow.log_params({"corrections": table.num_rows, "train_lines": train.num_rows,
                               "heldout_lines": heldout.num_rows, "golden": golden_info.get("kind"),
                               "epochs": settings.epochs, "rank": settings.rank,
                               "learning_rate": settings.learning_rate or "backend default"})
            mlflow.log_metrics(scores)
            version = registry.register(merged, {"cer_norm": scores["challenger_cer_norm"]})
            forgets = (corrections.golden_tolerance is not None and scores["challenger_golden_cer_norm"]
                       - scores["champion_golden_cer_norm"] > corrections.golden_tolerance)
            if forgets:
                decision = Decision(False, f"challenger golden-set CER_norm {scores['challenger_golden_cer_norm']:.4f} is "
                                           f"worse than the champion's {scores['champion_golden_cer_norm']:.4f} by more "
                                           f"than {corrections.golden_tolerance} (golden_tolerance)", version,
                                    champion_version)
            else:
                decision = promote_if_better(registry, version, scores["challenger_cer_norm"],
                                             scores["champion_cer_norm"] if champion_version else None,
                                             scores["champion_cer_norm"], corrections.min_gain,
                                             scored_champion=champion_version)
            mlflow.set_tags({"promoted": str(decision.promoted), "gate": decision.reason})
    log(f"gate: {decision.reason}")
    state = training_state(storage)
    state["trained_on"] = table.num_rows
    record = {"at": time.time(), "version": version, "promoted": decision.promoted, "reason": decision.reason,
              "model_url": model_url, "champion_before": champion.source, "corrections": table.num_rows,
              "train_lines": train.num_rows, "heldout_lines": heldout.num_rows, **scores,
              "seconds": round(time.perf_counter() - started, 1)}
    state.setdefault("challengers", []).append(record)
    storage.write_json(url(storage, "state.json"), state)
    return record


def start_experiment(uri: str, storage: Storage, name: str = "ocr_assets") -> None:
    """The project's MLflow experiment, its artifacts under the data root (as the Dagster resource does)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(name) is None:
        try:
            mlflow.create_experiment(name, artifact_location=storage.url("mlartifacts"))
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            pass
    mlflow.set_experiment(name)


def stale_scans(storage: Storage, model: str) -> list[str]:
    """OCR'd scans (status ok) read by another model than `model` (the source string scan.json records)."""
    from ocr_assets.corpus.build import corpus_url, scan_done

    keys = []
    for key in storage.listdir(corpus_url(storage, "scans")):
        summary = scan_done(storage, key)
        if summary is not None and summary["status"] == "ok" and summary.get("model") != model:
            keys.append(key)
    return keys


def keep_corpus_version(storage: Storage, keys: list[str], label: str) -> str:
    """Copy the corpus files and the per-scan outputs about to be rewritten to corpus_versions/<label>/."""
    from ocr_assets.corpus.build import corpus_url

    target = ("corpus_versions", label)
    for name in ("corpus.txt", "corpus.jsonl", "review.jsonl", "summary.json", "quarantine.json"):
        if storage.exists(corpus_url(storage, name)):
            storage.write_bytes(storage.url(*target, name), storage.read_bytes(corpus_url(storage, name)))
    for key in keys:
        for name in storage.listdir(corpus_url(storage, "scans", key)):
            storage.write_bytes(storage.url(*target, "scans", key, name),
                                storage.read_bytes(corpus_url(storage, "scans", key, name)))
    return storage.url(*target)


def reread_stale(storage: Storage, registry_uri: str | None, device: str = "auto", review_lines: int = 50,
                 log=print) -> dict:
    """Re-read the scans an older model read with the champion, after keeping their earlier version."""
    from ocr_assets.corpus.build import build_corpus, ocr_scans
    from ocr_assets.corpus.inbox import manifest_keys
    from ocr_assets.models.resolve import load_recognizer, resolve_model

    resolved = resolve_model(None, registry_uri)
    keys = stale_scans(storage, resolved.source)
    if not keys:
        return {"model": resolved.source, "reread": 0, "kept": None}
    label = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    kept = keep_corpus_version(storage, keys, label)
    log(f"re-reading {len(keys)} scans with {resolved.source}; earlier version kept at {kept}")
    recognizer = load_recognizer(resolved.path, device=device)
    ocr_scans(storage, keys, recognizer, progress=lambda d, t: log(f"re-read {d}/{t} pages"), model=resolved.source)
    summary = build_corpus(storage, manifest_keys(storage), review_lines)
    summary.pop("review")
    return {"model": resolved.source, "reread": len(keys), "kept": kept, "corpus": summary}
