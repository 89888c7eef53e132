"""Audits (installed as ``trustfl.audits``): privacy, robustness, data origin and unlearning
audits that read a run directory (:class:`trustfl.rundir.RunDir`). Implementations arrive
with their issues."""

__all__: list[str] = []
