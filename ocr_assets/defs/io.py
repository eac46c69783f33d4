"""Lineage by asset values: each asset's value (a small dict of URLs and figures) is stored per run, and a
downstream asset receives the value its own run produced, never "the latest materialization of any run".

When the upstream asset ran in the same run (or in the parent of a re-execution), that run's value is read;
when it is not part of the run, the run of its latest materialization is used (the usual Dagster meaning of
an upstream asset outside the selection).
"""


import dagster as dg
from dagster._core.errors import DagsterInvariantViolationError

from ocr_assets.defs.resources import StorageResource


class RunScopedIOManager(dg.ConfigurableIOManager):
    """Stores JSON-able asset values at `io/<asset key>/<run id>.json` under the data root."""

    storage: dg.ResourceDependency[StorageResource]

    def _url(self, key: dg.AssetKey, run_id: str) -> str:
        return self.storage.get().url("io", *key.path, f"{run_id}.json")

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        self.storage.get().write_json(self._url(context.asset_key, context.run_id), obj)

    def load_input(self, context: dg.InputContext):
        key = context.asset_key
        storage = self.storage.get()
        run_id = None
        upstream = context.upstream_output
        if upstream is not None:
            try:
                run_id = upstream.run_id
            except DagsterInvariantViolationError:
                run_id = None
        if run_id is None or not storage.exists(self._url(key, run_id)):
            event = context.instance.get_latest_materialization_event(key)
            if event is None:
                raise dg.Failure(f"asset {key.to_user_string()!r} has not been materialized yet; materialize it first")
            run_id = event.run_id
        url = self._url(key, run_id)
        if not storage.exists(url):
            raise dg.Failure(f"asset {key.to_user_string()!r} of run {run_id} left no value at {url}; materialize it again")
        return storage.read_json(url)
