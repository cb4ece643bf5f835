"""Loading a configuration: YAML merged over the schema's defaults, `key.sub=value` overrides, the cross-section
rules (rayscale.validation), and messages that name the key, the expected type and the closest valid keys (exit 2
through ConfigError). Also the redacted views for printing and logging.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rayscale.config import RayscaleConfig
from rayscale.errors import ConfigError
from rayscale.validation import validate

# Keys that were accepted once but never read by anything; an old YAML that still sets one is told why it stops.
REMOVED_KEYS = {
    "model.dtype": "each role has its own: learner.precision, rollout.vllm.dtype, teacher.local.dtype; HF "
                   "rollouts run fp32 on CPU, bf16 on GPU",
    "data.max_prompt_tokens": "learner.max_seq_len bounds prompt + response in training, rollout.vllm.max_model_len "
                              "in a vLLM engine",
    "algo.max_staleness": "with algo.async_rollout=true rollouts are at most one policy version behind (docs/loop.md)",
    "tracking.progress": "the per-iteration console line is always printed",
}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RayscaleConfig:
    """The built-in default (the field defaults above, the one place they live; `rayscale train --print-config`
    shows them), then `path` merged over it, then each `key.sub=value` override."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            user = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if user is not None and not isinstance(user, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(user).__name__}")
        _deep_merge(raw, user or {})
    for item in overrides:
        _apply_override(raw, item)
    return validate_config(raw, source=str(path) if path else "default config")


def validate_config(raw: dict[str, Any], source: str = "config") -> RayscaleConfig:
    """The schema (types, ranges, unknown keys), then every cross-section rule (rayscale.validation), once."""
    try:
        cfg = RayscaleConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, raw, source)) from None
    try:
        return validate(cfg)
    except ValueError as e:
        raise ConfigError(f"invalid configuration ({source}):\n  {e}") from None


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        dotted = ".".join(loc)
        if e["type"] == "extra_forbidden" and dotted in REMOVED_KEYS:
            lines.append(f"  '{dotted}' was removed: it was never read ({REMOVED_KEYS[dotted]}); delete it")
        elif e["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            lines.append(f"  unknown key '{dotted}'{hint} (valid keys here: {', '.join(valid)})")
        else:
            value = e.get("input")
            lines.append(f"  {dotted or '<root>'}: {e['msg']} (got {value!r} of type {type(value).__name__})")
    return "\n".join(lines)


def _valid_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = RayscaleConfig
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


# --------------------------------------------------------------------------------------------------- printing
_SECRET_NAME = re.compile(r"(api_key|token|secret|password)$", re.IGNORECASE)


def redacted(data: Any, key: str = "") -> Any:
    """A copy for printing/logging with secret-looking values masked; `*_env` names are not secrets."""
    if isinstance(data, dict):
        return {k: redacted(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [redacted(v, key) for v in data]
    if _SECRET_NAME.search(key) and data:
        return "***"
    return data


def to_yaml(cfg: RayscaleConfig) -> str:
    return yaml.safe_dump(redacted(cfg.model_dump(mode="json")), sort_keys=False)
