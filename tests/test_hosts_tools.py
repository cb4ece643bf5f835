"""tests/hosts.py's tool check: the `multihost` and `slurm` tests skip on a machine without root or the tools, but
fail under CI=true, where a skip would hide that they did not run."""

from __future__ import annotations

import pytest

from tests import hosts


def test_missing_tools_skip_here_and_fail_in_ci(monkeypatch):
    monkeypatch.setattr(hosts.shutil, "which", lambda tool: None if tool == "slurmd" else f"/usr/bin/{tool}")
    monkeypatch.setattr(hosts.os, "geteuid", lambda: 0)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing slurmd"):
        hosts.require_tools("slurmd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI: missing slurmd"):
        hosts.require_tools("slurmd")
    hosts.require_tools("sbatch")  # everything there: no skip, no failure


def test_not_root_is_a_skip_too(monkeypatch):
    monkeypatch.setattr(hosts.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(hosts.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not root"):
        hosts.require_tools()
