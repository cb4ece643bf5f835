import ast
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from rayscale.config import RayscaleConfig
from rayscale.config_loading import REMOVED_KEYS, load_config, redacted, to_yaml
from rayscale.errors import ConfigError


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


def test_the_default_run_is_the_code_defaults():
    # One place for defaults: `rayscale train` with no file runs exactly what `RayscaleConfig()` (and so a test's
    # `LearnerConfig()`) holds; no packaged YAML adds a second set of values.
    assert load_config() == RayscaleConfig()


@pytest.mark.parametrize("key", sorted(REMOVED_KEYS))
def test_removed_key_says_it_was_removed(key):
    assert key not in set(_leaves(RayscaleConfig)), f"{key} is a field again: take it out of REMOVED_KEYS"
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}=1"])
    assert f"'{key}' was removed: it was never read" in str(e.value)


# ------------------------------------------------------------------------------------- no config key is dead
# Leaves that nothing reads by name in the source (a name built at run time, `getattr(cfg, f"...")`), each with the
# reader that uses it. Empty today: every leaf is read as `.name`, `getattr(x, "name")` or `x["name"]`. An entry is
# "dotted.key": "module.function that reads it, and how".
READ_DYNAMICALLY: dict[str, str] = {}


def _leaves(model: type[BaseModel], prefix: str = ""):
    """Dotted paths of every leaf field (not a nested model) of `model`, recursively."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _leaves(field.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name


class _Reads(ast.NodeVisitor):
    """Names the package reads: `x.name` (loads only, not `self.name = ...`), `getattr(x, "name")`,
    `hasattr(x, "name")`, `x["name"]`, `x.get("name")`, `x.pop("name")`. Validators in config.py are skipped: a
    check on a value is not a use of it. Field declarations (`name: int = 0`) are names, never attributes."""

    def __init__(self, skip_validators: bool):
        self.names: set[str] = set()
        self.skip_validators = skip_validators

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        decorators = {d.func.id if isinstance(d, ast.Call) and isinstance(d.func, ast.Name) else getattr(d, "id", "")
                      for d in node.decorator_list}
        if not (self.skip_validators and decorators & {"field_validator", "model_validator"}):
            self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self.names.add(node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func, args = node.func, node.args
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(args) > 1:
            self._constant(args[1])
        elif isinstance(func, ast.Attribute) and func.attr in ("get", "pop") and args:
            self._constant(args[0])
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self._constant(node.slice)
        self.generic_visit(node)

    def _constant(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.names.add(node.value)


def _names_read(package: Path) -> set[str]:
    names: set[str] = set()
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "testing":  # test fixtures shipped in the package use nothing
            continue
        reads = _Reads(skip_validators=path == package / "config.py")
        reads.visit(ast.parse(path.read_text(), str(path)))
        names |= reads.names
    return names


def test_every_config_key_is_read_somewhere():
    """A key nothing reads is a config that lies: the user sets it and nothing changes. Delete such a key (and add it
    to REMOVED_KEYS, so an old YAML that sets it gets a clear error) or make the code read it.

    By name, so it cannot tell `cfg.model.dtype` from a tensor's `.dtype`: it catches names read nowhere at all."""
    import rayscale

    leaves = list(_leaves(RayscaleConfig))
    assert not set(READ_DYNAMICALLY) - set(leaves), "READ_DYNAMICALLY names keys that are not fields"
    read = _names_read(Path(rayscale.__file__).parent)
    dead = [key for key in leaves if key.rsplit(".", 1)[-1] not in read and key not in READ_DYNAMICALLY]
    assert not dead, f"config keys read by nothing in rayscale/: {', '.join(dead)}"
    stale = [key for key in READ_DYNAMICALLY if key.rsplit(".", 1)[-1] in read]
    assert not stale, f"READ_DYNAMICALLY entries now read by name; drop them: {', '.join(stale)}"


# ------------------------------------------------------------------ structure: schema, loading, rules apart
def test_the_schema_imports_no_other_rayscale_module_and_nothing_cycles():
    """config.py is the schema alone; loading and the cross-section rules import it, never the other way."""
    probe = ("import sys, importlib; importlib.import_module({mod!r}); "
             "print(sorted(m for m in sys.modules if m.startswith('rayscale')))")
    out = subprocess.run([sys.executable, "-c", probe.format(mod="rayscale.config")], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "['rayscale', 'rayscale.config']", out
    for first in ("rayscale.algos.pairs", "rayscale.validation", "rayscale.config_loading", "rayscale.algos.strategies"):
        r = subprocess.run([sys.executable, "-c", probe.format(mod=first)], capture_output=True, text=True)
        assert r.returncode == 0, f"importing {first} first fails (an import cycle?):\n{r.stderr[-2000:]}"


CROSS_SECTION_RULES = {  # each override set breaks one rule of rayscale.validation.validate
    "unknown strategy": ["algo.strategy=nope"],
    "bad mix": ["algo.strategy={outcome: -1, correction: 0}"],
    "weak_to_strong thresholds": ["algo.weak_to_strong.overrule_at=0.1", "algo.weak_to_strong.skip_below=0.5"],
    "weak model and file": ["algo.weak_to_strong.weak_model=m", "algo.weak_to_strong.weak_answers_file=f.jsonl"],
    "no pair possible": ["algo.samples_per_prompt=1", "algo.strategy=outcome"],
    "sync transport": ["sync.transport=ipc"],
    "colocation": ["cluster.colocate=true", "rollout.num_workers=2", "learner.num_ranks=1"],
    # devices and cluster.<role> resources (what the nodes hold is placement's run-time check)
    "vLLM tensor parallel GPUs": ["rollout.backend=vllm", "rollout.vllm.tensor_parallel_size=2"],
    "rollout on cuda without GPUs": ["rollout.device=cuda"],
    "learner rank with GPUs": ["cluster.learner.num_gpus=2"],
    "learner on cuda without GPUs": ["learner.device=cuda"],
    "vLLM teacher GPU share": ["teacher.backend=local", "teacher.local.backend=vllm", "cluster.teacher.num_gpus=0.5"],
    "fractional bundle": ["cluster.rollout.num_gpus=1.5"],
    "empty bundle": ["cluster.verifier.num_cpus=0"],
}


@pytest.mark.parametrize("rule", sorted(CROSS_SECTION_RULES))
def test_every_cross_section_rule_is_raised_by_the_one_validation_entry_point(rule):
    from rayscale.config_loading import _apply_override
    from rayscale.validation import validate

    raw: dict = {}
    for item in CROSS_SECTION_RULES[rule]:
        _apply_override(raw, item)
    cfg = RayscaleConfig.model_validate(raw)  # the schema alone accepts it: the rule lives in validate()
    with pytest.raises(ValueError):
        validate(cfg)
    with pytest.raises(ConfigError, match="invalid configuration"):  # ...which loading runs, once
        load_config(None, CROSS_SECTION_RULES[rule])
