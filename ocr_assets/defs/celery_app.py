"""The Celery app of the workers: `celery -A ocr_assets.defs.celery_app worker -Q dagster,gpu`.

dagster-celery's own tasks (execute a step against the instance the step names) on an app configured exactly
as the orchestrators' executor ($OCR_ASSETS_CELERY_BROKER and friends; see ocr_assets.defs.cluster).
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from ocr_assets.defs.cluster import celery_config

app = make_app(CeleryExecutor.for_cli(**celery_config()).app_args())
execute_plan = create_task(app)
