"""Attacks (installed as ``trustfl.attacks``): data attacks and update attacks plug into the
hooks of :mod:`trustfl.federation.hooks` (``DataAttack``, ``UpdateAttack``); privacy attacks
are scorers ``score(model, records) -> float per record``. Implementations arrive with the
robustness and privacy issues."""

__all__: list[str] = []
