"""The cluster profile's configuration without any service running: queues by pool, the celery executor chosen
by the profile, one-line errors for bad settings, and no Celery import on the default path."""

import subprocess
import sys

import pytest

from ocr_assets.defs.cluster import GPU_QUEUE, celery_config
from ocr_assets.errors import ConfigError
from ocr_assets.settings import celery_settings_from_env


def test_gpu_pool_steps_go_to_the_gpu_queue_and_the_cluster_profile_selects_celery():
    from ocr_assets.defs.definitions import build_defs

    defs = build_defs("cluster")
    job = defs.resolve_job_def("ocr_scans_job")
    assert job.executor_def.name == "celery"
    tags = {node.name: node.definition.tags for node in job.graph.nodes}
    assert tags["ocr_pages"]["dagster-celery/queue"] == GPU_QUEUE
    assert "dagster-celery/queue" not in tags["page_lines"]  # CPU work: the default queue
    for name in ("lora_adapters", "evaluation_report"):
        assert defs.resolve_job_def("training_job").graph.node_named(name).definition.tags["dagster-celery/queue"] == GPU_QUEUE


def test_workers_and_orchestrators_share_one_celery_config():
    config = celery_config(celery_settings_from_env({"OCR_ASSETS_CELERY_BROKER": "redis://10.0.0.5:6379/1",
                                                     "OCR_ASSETS_CELERY_REDELIVER_S": "600"}))
    assert config["broker"] == config["backend"] == "redis://10.0.0.5:6379/1"
    source = config["config_source"]
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"]
    assert source["broker_transport_options"]["visibility_timeout"] == 600


@pytest.mark.parametrize("env, message", [
    ({"OCR_ASSETS_CELERY_BROKER": "amqp://localhost"}, "is not a Redis URL"),
    ({"OCR_ASSETS_CELERY_REDELIVER_S": "soon"}, "is not a whole number of seconds"),
    ({"OCR_ASSETS_CELERY_REDELIVER_S": "0"}, "must be >= 1 second"),
])
def test_bad_celery_settings_are_one_line_errors(env, message):
    with pytest.raises(ConfigError, match=message) as info:
        celery_settings_from_env(env)
    assert "\n" not in str(info.value)


def test_an_unknown_executor_in_a_profile_is_refused(tmp_path):
    from ocr_assets.defs.definitions import build_defs

    profile = tmp_path / "odd.yaml"
    profile.write_text("executor: dask\n")
    with pytest.raises(ConfigError, match="executor 'dask' is not one of in_process, multiprocess, celery"):
        build_defs(str(profile))


def test_the_default_profile_does_not_import_celery():
    code = "import sys, ocr_assets.definitions; print('celery' in sys.modules or 'dagster_celery' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
