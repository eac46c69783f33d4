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
