"""Typed exceptions shared across trustfl.

Every error names the thing that is wrong (a config field, a client, a file path), echoes
the offending value and says what would be valid, so nothing fails silently.
"""

from __future__ import annotations


class TrustFLError(Exception):
    """Base class of every error trustfl raises on purpose."""


class ConfigError(TrustFLError, ValueError):
    """A configuration value is invalid; the message starts with the field's dotted path."""


class ModelLoadError(TrustFLError, RuntimeError):
    """A foundation model could not be resolved or loaded (offline, missing package, bad path)."""


class UpdateError(TrustFLError, ValueError):
    """A client update is mis-shaped or non-finite."""


class ToleranceError(TrustFLError, ValueError):
    """An aggregator cannot give its guarantee for the given number of clients n and attackers f."""


class MissingDependencyError(TrustFLError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class StopFederation(TrustFLError):
    """Raised by a round callback to end a run cleanly after the current round (e.g. a DP budget)."""

    def __init__(self, reason: str, metrics: dict | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metrics = dict(metrics or {})  # e.g. the round's ε when a DP budget stops the run
