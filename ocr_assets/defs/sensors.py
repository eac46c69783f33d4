"""Sensors: new scans in the inbox become partitions and runs, without anyone pressing a button."""

import json

import dagster as dg

from ocr_assets.defs.resources import StorageResource
from ocr_assets.defs.assets.corpus import SCANS_PER_RUN, ocr_pages, page_lines, scan_partitions

ocr_scans_job = dg.define_asset_job(
    "ocr_scans_job",
    selection=dg.AssetSelection.assets(page_lines, ocr_pages),
    partitions_def=scan_partitions,
    description="Segment and OCR a batch of scans (one partition per scan, keyed by content hash).",
)


@dg.sensor(job=ocr_scans_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def scan_inbox_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult | dg.SkipReason:
    """Every new scan (by content hash) becomes a `scans` partition; runs take batches of SCANS_PER_RUN.

    The cursor keeps a path → (size, mtime, digest) cache so unchanged files are not re-read; what has been seen
    is decided by the partitions themselves, so a renamed or re-copied file, or a restarted daemon, repeats
    nothing and skips nothing.
    """
    from ocr_assets.corpus.inbox import inbox_url, list_scans, record_refusals, record_scan

    cursor = json.loads(context.cursor) if context.cursor else {}
    store = storage.get()
    url = inbox_url(store)
    try:
        # Hash for at most 40 s a tick (sensor evaluations time out at 60 s); the cache keeps the progress.
        scans, refused, cache = list_scans(url, cursor.get("hashes"), budget_s=40)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as err:
        return dg.SkipReason(f"inbox {url} cannot be listed: {err}")
    from ocr_assets.corpus.build import layout_status

    known = set(context.instance.get_dynamic_partitions(scan_partitions.name))
    new = [s for s in scans if s.key not in known]
    # A scan whose bytes could not be fetched last time (moved away, storage error) is read again once it is
    # listed again; the run key names that attempt, so each failure is retried once.
    retries = []
    for s in scans:
        if s.key in known:
            status, stamp = layout_status(store, s.key)
            if status == "unavailable":
                retries.append(dg.RunRequest(run_key=f"retry:{s.key}:{stamp:.0f}", partition_key=s.key))
    previously_refused = set(cursor.get("refused", []))
    for r in refused:
        if r.path not in previously_refused:
            context.log.warning(f"refused {r.path}: {r.reason}")
    record_refusals(store, refused)
    next_cursor = json.dumps({"hashes": cache, "refused": sorted(r.path for r in refused)})
    if not new and not retries:
        context.update_cursor(next_cursor)
        return dg.SkipReason(f"no new scans in {url}: {len(scans)} known, {len(refused)} refused")
    if not new:
        return dg.SensorResult(run_requests=retries, cursor=next_cursor)
    for scan in new:
        record_scan(store, scan, url)
    keys = [s.key for s in new]
    # Partitions are added in this order, so each batch is a contiguous key range: one run per batch.
    requests = [
        dg.RunRequest(
            run_key=f"scans:{batch[0]}..{batch[-1]}",
            tags={"dagster/asset_partition_range_start": batch[0], "dagster/asset_partition_range_end": batch[-1]},
        )
        for batch in (keys[i : i + SCANS_PER_RUN] for i in range(0, len(keys), SCANS_PER_RUN))
    ]
    context.log.info(f"{len(new)} new scans → {len(requests)} runs: " + ", ".join(s.path for s in new[:10]))
    return dg.SensorResult(
        run_requests=requests + retries,
        dynamic_partitions_requests=[scan_partitions.build_add_request(keys)],
        cursor=next_cursor,
    )


# The corpus follows its scans by declarative automation (`ocr_corpus` is eager); this sensor evaluates it, on
# by default so a fresh deployment needs no switch flipped in the UI.
corpus_automation_sensor = dg.AutomationConditionSensorDefinition(
    "corpus_automation_sensor",
    target=dg.AssetSelection.groups("corpus"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Rebuilds ocr_corpus once the OCR runs of newly arrived scans have finished.",
)
