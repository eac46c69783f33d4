"""Monitoring sensors and schedule: drift responses, corrections → challenger, weekly re-evaluation, alerts.

Every sensor keeps a cursor and says why it skipped (SkipReason)."""

import json

import dagster as dg

from ocr_assets.defs.assets.monitoring import (DRIFT_CHECK, champion_reevaluation, corpus_reread, corrected_lines,
                                               correction_challenger, golden_set, review_queue)
from ocr_assets.defs.resources import StorageResource
from ocr_assets.settings import monitoring_settings_from_env

drift_response_job = dg.define_asset_job(
    "drift_response_job", selection=dg.AssetSelection.assets(golden_set, champion_reevaluation, review_queue),
    description="After a drift check failed: re-score the champion on the golden set, queue drifted scans' lines for review.")
reevaluation_job = dg.define_asset_job(
    "reevaluation_job", selection=dg.AssetSelection.assets(golden_set, champion_reevaluation),
    description="Re-score the champion on the golden set (history, plot, MLflow, CER check).")
corrections_job = dg.define_asset_job(
    "corrections_job", selection=dg.AssetSelection.assets(corrected_lines),
    description="Import the corrections inbox: match, validate, quarantine.")
challenger_job = dg.define_asset_job(
    "challenger_job", selection=dg.AssetSelection.assets(correction_challenger, corpus_reread),
    description="Fine-tune a challenger from the champion on the corrections, gate, promote if better, re-read stale scans.")

DRIFT_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("scan_drift"), DRIFT_CHECK)


@dg.sensor(jobs=[drift_response_job, challenger_job], minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING)
def drift_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult | dg.SkipReason:
    """When the drift check fails: re-evaluate the champion and build a review queue weighted to the drifted scans;
    when corrections are waiting, a challenger fine-tune too. The cursor is the last check result handled."""
    from ocr_assets.monitoring.corrections import new_since_training

    handled = int(context.cursor or 0)
    records = context.instance.event_log_storage.get_latest_asset_check_execution_by_key([DRIFT_CHECK_KEY])
    record = records.get(DRIFT_CHECK_KEY)
    if record is None:
        return dg.SkipReason(f"{DRIFT_CHECK} has not run yet (it runs after new scans are OCR'd)")
    if record.id <= handled:
        return dg.SkipReason(f"no new {DRIFT_CHECK} result since #{handled}")
    evaluation = record.evaluation
    if evaluation is None:
        return dg.SkipReason(f"{DRIFT_CHECK} #{record.id} is {record.status.value}: no result yet")
    if evaluation.passed:
        context.update_cursor(str(record.id))
        reason = evaluation.metadata.get("reason")
        return dg.SkipReason(f"{DRIFT_CHECK} #{record.id} passed: no drift ({reason.value if reason else 'no detail'})")
    severity = evaluation.severity.value
    requests = [dg.RunRequest(run_key=f"drift:{record.id}", job_name=drift_response_job.name,
                              tags={"ocr_assets/drift_severity": severity})]
    waiting = new_since_training(storage.get())
    if waiting > 0:
        requests.append(dg.RunRequest(run_key=f"drift-challenger:{record.id}", job_name=challenger_job.name,
                                      tags={"ocr_assets/drift_severity": severity}))
    context.log.info(f"{DRIFT_CHECK} #{record.id} failed ({severity}): re-evaluation and review queue"
                     + (f", and a challenger on {waiting} new corrections" if waiting > 0 else "; no new corrections to train on"))
    return dg.SensorResult(run_requests=requests, cursor=str(record.id))


@dg.sensor(jobs=[corrections_job, challenger_job], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def corrections_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult | dg.SkipReason:
    """New files in corrections/inbox/ → corrected_lines; once enough accepted corrections are new since the last
    challenger (CorrectionSettings.min_corrections) → a challenger. Bad files are quarantined by the import, never
    a failed tick. Cursor: the inbox digests requested and the correction count a challenger was requested for."""
    from ocr_assets.monitoring.corrections import accepted_count, inbox_url, new_since_training, pending_inbox
    from ocr_assets.settings import correction_settings_from_env

    cursor = json.loads(context.cursor) if context.cursor else {}
    store = storage.get()
    try:
        pending = pending_inbox(store)
    except OSError as err:
        return dg.SkipReason(f"corrections inbox {inbox_url(store)} cannot be listed: {err}")
    if pending:
        digests = sorted(d for _, d in pending)
        key = "corrections:" + ",".join(digests)[:200]
        context.log.info(f"{len(pending)} new corrections files: " + ", ".join(n for n, _ in pending[:10]))
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=key, job_name=corrections_job.name)],
                               cursor=json.dumps({**cursor, "requested_files": digests}))
    settings = correction_settings_from_env()
    total, new = accepted_count(store), new_since_training(store)
    if new < settings.min_corrections:
        return dg.SkipReason(f"no new corrections files; {new} accepted corrections new since the last challenger "
                             f"({total} in all), {settings.min_corrections} needed to train one")
    if cursor.get("challenger_for") == total:
        return dg.SkipReason(f"a challenger for {total} corrections was already requested; waiting for it")
    context.log.info(f"{new} new corrections (>= {settings.min_corrections}): training a challenger")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"challenger:{total}", job_name=challenger_job.name)],
                           cursor=json.dumps({**cursor, "challenger_for": total}))


reevaluation_schedule = dg.ScheduleDefinition(
    name="champion_reevaluation_schedule", job=reevaluation_job,
    cron_schedule=monitoring_settings_from_env().reevaluation_cron, execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-score the champion on the golden set (MonitoringSettings.reevaluation_cron; weekly by default).")


@dg.run_failure_sensor(name="run_failure_alert_sensor", default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=False)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext):
    """Every failed run reaches the alert hook (log; the webhook when one is configured)."""
    from ocr_assets.monitoring.alerts import send_alert

    run = context.dagster_run
    send_alert("run_failure", f"run {run.run_id[:8]} of {run.job_name} failed: {context.failure_event.message}",
               {"run_id": run.run_id, "job": run.job_name}, monitoring_settings_from_env().alert_webhook,
               log=context.log.warning)


monitoring_jobs = [drift_response_job, reevaluation_job, corrections_job, challenger_job]
monitoring_sensors = [drift_sensor, corrections_sensor, run_failure_alert_sensor]
monitoring_schedules = [reevaluation_schedule]

# The signals and the drift report follow new OCR'd scans by declarative automation (like the corpus).
monitoring_automation_sensor = dg.AutomationConditionSensorDefinition(
    "drift_automation_sensor", target=dg.AssetSelection.assets("scan_drift_signals", "scan_drift"),
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
    description="Computes drift signals of newly OCR'd scans and the drift report after them.")
