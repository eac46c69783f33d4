"""The local instance's storage: Dagster's SQLite storage with one fix, so a pool of one slot holds one step.

Dagster's SQL event log claims a pool slot in two statements: it selects a free slot `FOR UPDATE SKIP LOCKED`, then
updates that row by id. SQLite ignores `FOR UPDATE`, and the update does not re-check that the row is still free, so
two processes claiming at the same moment both get the one `gpu` slot (reproduced by
`ocr_assets_tests/test_instance_storage.py`: six processes, two claims, in two of three tries with the stock class).
Here the claim is one conditional UPDATE (a single SQLite statement takes the write lock): the loser gets BLOCKED and
Dagster's step waits and retries as it does for any busy pool. Everything else is Dagster's own class.

`dagster.yaml` names `ProjectSqliteStorage` under `storage: custom:` with the same `base_dir` as `storage: sqlite:`,
so the files on disk are the ones the stock storage would write. PostgreSQL instances (the cluster profile) keep
Dagster's PostgreSQL storage, whose row locks make the two-statement claim safe.
"""

from __future__ import annotations

import sqlalchemy as db
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._utils.concurrency import ConcurrencySlotStatus


class SlotSafeSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log whose pool-slot claim is a single atomic statement."""

    def _claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str) -> ConcurrencySlotStatus:
        slots = ConcurrencySlotsTable
        free = (db.select(slots.c.id)
                .where(slots.c.concurrency_key == concurrency_key, slots.c.step_key.is_(None),
                       slots.c.deleted.is_(False))
                .limit(1).scalar_subquery())
        with self.index_connection() as conn:
            claimed = conn.execute(slots.update()
                                   .where(slots.c.id == free, slots.c.step_key.is_(None))
                                   .values(run_id=run_id, step_key=step_key)).rowcount
        return ConcurrencySlotStatus.CLAIMED if claimed else ConcurrencySlotStatus.BLOCKED


class ProjectSqliteStorage(DagsterSqliteStorage):
    """`DagsterSqliteStorage` (same directories) with `SlotSafeSqliteEventLogStorage` as its event log."""

    def __init__(self, base_dir: str, inst_data=None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = SlotSafeSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # the parent's names DagsterSqliteStorage itself
        return cls.from_local(inst_data=inst_data, **config_value)
