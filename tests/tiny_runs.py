"""The tiny federated run unit tests train: one base config, each test module states only what differs.

``tiny_run(model_dir, name=..., replace={section: {...}}, section__field=value)`` returns the config
dict (``RunConfig.from_dict`` it). ``replace`` sets whole sections; ``section__field`` sets one field.
"""

from __future__ import annotations

import copy
from typing import Any

BASE: dict[str, Any] = {
    "seed": 0,
    "model": {"max_length": 24},
    "lora": {"r": 2, "top_layers": 2},
    "data": {"name": "sms_spam", "max_records": 200, "holdout_fraction": 0.1},
    "partition": {"num_clients": 4, "scheme": "iid"},
    "client": {"batch_size": 8, "max_steps": 3, "lr": 5e-3},
    "federation": {"rounds": 2},
}


def tiny_run(model_dir: str, *, name: str = "t", replace: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["name"], data["model"]["name"] = name, model_dir
    for section, value in (replace or {}).items():
        data[section] = copy.deepcopy(value)
    for key, value in over.items():
        section, field = key.split("__")
        data.setdefault(section, {})[field] = value
    return data


def federation_run(model_dir: str, **over: Any) -> Any:
    """The federated-loop tests' ``RunConfig``: the base run on 240 records over Dirichlet(1.0) clients."""
    from trustfl.config import RunConfig

    return RunConfig.from_dict(tiny_run(model_dir, **{"data__max_records": 240, "partition__scheme": "dirichlet",
                                                      "partition__alpha": 1.0, **over}))
