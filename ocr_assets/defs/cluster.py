"""Scale-out on an engine people already run: dagster-celery with Redis (profile "cluster").

Steps in the `gpu` pool carry `GPU_QUEUE_TAGS` and go to the `gpu` queue (workers on GPU hosts: `-Q gpu`);
every other step goes to `dagster` (CPU hosts). Orchestrators and workers build their Celery app from the same
`CelerySettings`, so a step is acknowledged only once it finished (`task_acks_late`): a worker killed in the
middle leaves its step unacknowledged and Redis hands it to another worker after `redeliver_s`.
dagster_celery is imported only when the profile asks for it, so the default path needs no Celery or Redis.
"""

from __future__ import annotations

import contextlib

import dagster as dg

from ocr_assets.settings import CelerySettings, celery_settings_from_env

CPU_QUEUE = "dagster"  # dagster-celery's default queue
GPU_QUEUE = "gpu"
GPU_QUEUE_TAGS = {"dagster-celery/queue": GPU_QUEUE}

# Steps that read or write object storage can fail for a moment (a throttled bucket, a dropped connection):
# tried again twice, 5 s then 10 s later. Errors of our own (bad model, bad config) are not retried.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


@contextlib.contextmanager
def no_retry_on_user_errors():
    """Turn our own errors (OcrAssetsError: the user must act) into a Failure that the retry policy skips."""
    from ocr_assets.errors import OcrAssetsError

    try:
        yield
    except OcrAssetsError as err:
        raise dg.Failure(str(err), allow_retries=False) from err


def celery_config(settings: CelerySettings | None = None) -> dict:
    """The celery executor's config; the workers' app (ocr_assets.defs.celery_app) is built from the same."""
    s = settings or celery_settings_from_env()
    return {
        "broker": s.broker,
        "backend": s.backend or s.broker,
        "config_source": {
            "task_acks_late": True,  # acknowledged after the step: a killed worker's step is delivered again
            "task_reject_on_worker_lost": True,  # a pool child killed: the step goes back to the queue at once
            "worker_prefetch_multiplier": 1,  # a worker holds one step at a time, never a backlog
            # Unacknowledged steps older than redeliver_s are looked for every 10 s (kombu's default: ~100 s).
            "broker_transport_options": {"visibility_timeout": int(s.redeliver_s), "unacked_restore_interval": 10,
                                         "unacked_restore_throttle": 1, "max_retries": 3,
                                         "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
            "result_backend_always_retry": True,  # a Redis restart: wait for it rather than fail the run
            "result_backend_max_retries": 30,
            "broker_connection_retry_on_startup": True,
        },
    }


def celery_executor(settings: CelerySettings | None = None) -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor as executor

    return executor.configured(celery_config(settings), name="celery")
