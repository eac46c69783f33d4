"""The registry gate against a real MLflow store: a first fine-tune worse than its base is not promoted, a worse
challenger stays challenger, min_gain is honoured."""

import mlflow
import pytest

from ocr_assets.errors import ConfigError
from ocr_assets.evaluation.gate import decide, promote_if_better
from ocr_assets.models.resolve import shipped_model_dir
from ocr_assets.registry import CHALLENGER, CHAMPION, Registry


def test_decide_compares_with_the_champion_else_the_base():
    assert not decide(0.0074, champion=None, base=0.0049).promoted  # the up.sh case: worse than its base
    assert decide(0.0040, champion=None, base=0.0049).promoted
    assert not decide(0.0040, champion=0.0030, base=0.0049).promoted  # the champion is the bar once there is one
    assert decide(0.0020, champion=0.0030, base=0.0010).promoted
    assert not decide(0.0029, champion=0.0030, base=None, min_gain=0.001).promoted
    assert decide(0.0019, champion=0.0030, base=None, min_gain=0.001).promoted
    assert not decide(0.0030, champion=0.0030, base=None).promoted  # a tie keeps the champion
    with pytest.raises(ConfigError, match="min_gain"):
        decide(0.1, None, 0.2, min_gain=-0.1)


@pytest.fixture()
def registry(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    reg = Registry(uri)
    reg.client()
    experiment = mlflow.create_experiment("gate", artifact_location=(tmp_path / "artifacts").as_uri())
    yield reg, experiment
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def _register(reg, experiment, score):
    with mlflow.start_run(experiment_id=experiment):
        return reg.register(shipped_model_dir(), {"test_cer_norm": score})


def test_gate_in_a_real_registry(registry):
    reg, experiment = registry
    first = _register(reg, experiment, 0.0074)
    decision = promote_if_better(reg, first, 0.0074, champion=None, base=0.0049)
    assert not decision.promoted and "base model" in decision.reason
    assert reg.alias_version(CHAMPION) is None and reg.alias_version(CHALLENGER) == first

    second = _register(reg, experiment, 0.0040)
    assert promote_if_better(reg, second, 0.0040, champion=None, base=0.0049).promoted
    assert reg.alias_version(CHAMPION) == second

    third = _register(reg, experiment, 0.0045)  # worse than the champion re-scored at 0.0040
    decision = promote_if_better(reg, third, 0.0045, champion=0.0040, base=0.0030)
    assert not decision.promoted and decision.champion_version == second
    assert reg.alias_version(CHAMPION) == second and reg.alias_version(CHALLENGER) == third

    fourth = _register(reg, experiment, 0.0035)  # better, but not by the required margin
    assert not promote_if_better(reg, fourth, 0.0035, champion=0.0040, base=None, min_gain=0.001).promoted
    assert reg.alias_version(CHAMPION) == second
    assert promote_if_better(reg, fourth, 0.0035, champion=0.0040, base=None, min_gain=0.0004).promoted
    assert reg.alias_version(CHAMPION) == fourth


def _race(uri, experiment, score, scored_champion, barrier, results):
    """One evaluation run in its own process: register, wait for the others, then gate against the champion
    every run scored before any of them promoted."""
    reg = Registry(uri)
    reg.client()
    with mlflow.start_run(experiment_id=experiment):
        version = reg.register(shipped_model_dir(), {"test_cer_norm": score})
    barrier.wait(timeout=300)
    decision = promote_if_better(reg, version, score, champion=0.0100, base=None, scored_champion=scored_champion)
    results.put((version, score, decision.promoted, decision.reason))


@pytest.mark.timeout(600)
def test_concurrent_gates_never_let_a_worse_model_overwrite_a_better_champion(registry):
    """Three runs evaluated at once all beat the champion they scored (0.0100); once one is promoted, the others
    were never compared with it: they must stay challengers, whatever the order in which they reach the gate."""
    import multiprocessing as mp

    reg, experiment = registry
    first = _register(reg, experiment, 0.0100)
    assert promote_if_better(reg, first, 0.0100, champion=None, base=None, scored_champion=None).promoted
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(reg.uri, experiment, score, first, barrier, results))
             for score in (0.0050, 0.0060, 0.0070)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=540) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    promoted = [o for o in outcomes if o[2]]
    assert len(promoted) == 1, outcomes  # without the lock and the moved-champion check all three are promoted
    assert reg.alias_version(CHAMPION) == promoted[0][0]
    assert all("champion moved" in reason for _, _, ok, reason in outcomes if not ok)
