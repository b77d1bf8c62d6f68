"""The one root of smsbulk's own exceptions: ``except SmsbulkError`` catches
every error smsbulk raises on purpose (a refused job, an unknown job, a bad
configuration, a provider's unreadable answer), and nothing else."""

from __future__ import annotations


class SmsbulkError(Exception):
    """Base of every exception smsbulk defines (outside the sandbox's own)."""


class ConfigError(SmsbulkError):
    """The configuration is missing or malformed; the message names the key."""
