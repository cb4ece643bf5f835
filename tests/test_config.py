import subprocess
import sys

import pytest

from rayscale.config import ConfigError, load_config, redacted, to_yaml


def test_default_loads_and_round_trips(tmp_path):
    cfg = load_config()
    assert cfg.model.path is None and cfg.data.source == "synthetic"
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_overrides_are_typed():
    cfg = load_config(None, ["algo.iterations=3", "learner.lr=2e-5", "tracking.wandb=false",
                             "algo.strategy={correction: 0.7, outcome: 0.3}"])
    assert cfg.algo.iterations == 3 and cfg.learner.lr == 2e-5 and cfg.tracking.wandb is False
    assert cfg.algo.strategy == {"correction": 0.7, "outcome": 0.3}


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algo:\n  iterations: 7\nlearner:\n  num_ranks: 1\n")
    cfg = load_config(path, ["algo.iterations=9"])
    assert cfg.algo.iterations == 9 and cfg.learner.num_ranks == 1 and cfg.learner.zero_stage == 2


def test_unknown_key_names_key_and_suggestions():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["algo.iteratons=3"])
    msg = str(e.value)
    assert "algo.iteratons" in msg and "did you mean iterations" in msg


def test_wrong_type_names_key_expected_and_value():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["learner.micro_batch_size=lots"])
    msg = str(e.value)
    assert "learner.micro_batch_size" in msg and "integer" in msg and "'lots'" in msg


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, [bad])


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("algo: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_strategy_rejected():
    with pytest.raises(ConfigError, match="unknown strategy"):
        load_config(None, ["algo.strategy=best"])


def test_secrets_redacted():
    assert redacted({"teacher": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY"}}) == {
        "teacher": {"api_key": "***", "api_key_env": "OPENAI_API_KEY"}
    }


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rayscale.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_unknown_key_exits_2_without_traceback():
    r = run_cli("train", "data.nope=1")
    assert r.returncode == 2
    assert "nope" in r.stderr and "Traceback" not in r.stderr


def test_cli_print_config():
    r = run_cli("train", "--print-config", "algo.iterations=4")
    assert r.returncode == 0, r.stderr
    assert "iterations: 4" in r.stdout and "strategy: correction" in r.stdout


def test_cli_dry_run_does_not_build(tmp_path):
    r = run_cli("train", "--dry-run", f"tracking.run_dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "dry run" in r.stdout and not (tmp_path / "tiny_model").exists()


def test_weak_supervisor_is_a_model_or_a_file_not_both():
    with pytest.raises(ConfigError, match="not both"):
        load_config(None, ["algo.weak_to_strong.weak_model=m", "algo.weak_to_strong.weak_answers_file=f.jsonl"])
