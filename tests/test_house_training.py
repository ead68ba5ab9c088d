"""tflth.training: a malformed TF_CONFIG and a metrics log with foreign lines are one-line
errors naming what is at fault, not tracebacks."""

import json
import os

import pytest

from tflth import fileio
from tflth.runs import layout as paths
from tflth.training import strategy
from tflth.training.metrics import MetricsLog
from tflth.training.strategy import StrategyError, TFConfigError, is_chief, tf_config


# ------------------------------------------------------------------ TF_CONFIG


@pytest.mark.parametrize("value,found", [
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0', "is not valid JSON"),
    ("worker 0", "is not valid JSON"),
    ('["worker", 0]', "is not a cluster description"),
    ('{"task": "worker"}', "is not a cluster description"),
    ('{"task": {"type": "worker", "index": "first"}}', "has task index 'first'"),
])
def test_malformed_tf_config_is_one_line_naming_it(monkeypatch, value, found):
    monkeypatch.setenv("TF_CONFIG", value)
    for call in (is_chief, tf_config, lambda: strategy.get_strategy("multi_worker")):
        with pytest.raises(TFConfigError) as info:
            call()
        message = str(info.value)
        assert isinstance(info.value, StrategyError) and isinstance(info.value, ValueError)
        assert len(message.splitlines()) == 1 and "TF_CONFIG=" in message and found in message, message
        assert '"task": {"type": "worker", "index": 0}' in message, message


def test_well_formed_or_absent_tf_config_is_read_as_before(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and tf_config() == {}
    monkeypatch.setenv("TF_CONFIG", "")
    assert is_chief()
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": "0"}}))
    assert is_chief()


def test_strategy_errors_name_the_field_not_a_flag():
    with pytest.raises(StrategyError) as info:
        strategy.get_strategy("gpu")
    assert str(info.value).startswith("JobSettings.strategy=gpu is unknown") and "--" not in str(info.value)
    assert info.value.reference == "JobSettings.strategy"


# ------------------------------------------------------------------ metrics.jsonl on resume


def _log(run_dir, lines):
    path = paths.RunDir(str(run_dir)).metrics
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("line,found", [
    ('{"test_accuracy": 0.5}', "line 2 is an object without an integer 'step' (step=None)"),
    ('{"step": "10"}', "line 2 is an object without an integer 'step' (step='10')"),
    ("[1, 2]", "line 2 is a JSON list"),
    ("7", "line 2 is a JSON int"),
])
def test_resuming_over_a_foreign_metrics_line_is_a_damaged_file(tmp_path, line, found):
    path = _log(tmp_path, ['{"step": 5, "test_accuracy": 0.1}', line, '{"step": 20}'])
    with pytest.raises(fileio.DamagedFileError) as info:
        MetricsLog(str(tmp_path), resume_step=10, tensorboard=False)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{path} is damaged ({found}"), message
    with open(path) as f:
        assert len(f.readlines()) == 3  # left as it was


def test_resume_drops_later_records_and_a_torn_last_line(tmp_path):
    path = _log(tmp_path, ['{"step": 5}', '{"step": 10}', '{"step": 15}', '{"step": 2'])
    log = MetricsLog(str(tmp_path), resume_step=10, tensorboard=False)
    assert MetricsLog.read(str(tmp_path)) == [{"step": 5}, {"step": 10}]
    log.write({"step": 12, "test_accuracy": 0.5})
    with open(path) as f:
        assert [json.loads(x)["step"] for x in f] == [5, 10, 12]


def test_metrics_module_is_no_longer_a_home_of_the_file_helpers():
    from tflth.training import metrics

    assert not hasattr(metrics, "read_json") and not hasattr(metrics, "write_json")
