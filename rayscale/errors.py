"""The errors a user can fix before anything runs, shared by every module that checks input (config, data,
model directories, run directories, templates): the CLI prints them without a traceback and exits with status 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input problem a user can fix; the CLI prints it and exits with status 2."""
