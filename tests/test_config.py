"""Config loading: TOML/YAML, unknown keys, ill-typed values, cross-field rules, round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustfl.config import RunConfig, load_config
from trustfl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_examples_load():
    cfg = load_config(ROOT / "examples" / "quickstart.toml")
    assert cfg.partition.num_clients == 8 and cfg.federation.rounds == 3 and cfg.lora.top_layers == 2
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("data, match", [
    ({"federation": {"rounds": 0}}, r"federation\.rounds: must be >= 1, got 0"),
    ({"federation": {"roundz": 3}}, r"unknown key\(s\) \['roundz'\]; valid keys: \['rounds'"),
    ({"lora": {"r": "eight"}}, r"lora\.r: must be an integer, got 'eight'"),
    ({"model": {"task": "regression"}}, r"model\.task: must be one of \['classification', 'causal_lm'\]"),
    ({"partition": {"alpha": -1}}, r"partition\.alpha: must be > 0"),
    ({"partition": {"scheme": "key"}}, r"partition\.key_column"),
    ({"partition": {"scheme": "iid", "alpha": 0.1}}, r"partition\.alpha: only applies to scheme = 'dirichlet'"),
    ({"partition": {"key_column": "account"}}, r"partition\.key_column: only applies to scheme = 'key'"),
    ({"server": {"aggregator": "nope"}}, r"server: unknown aggregator 'nope'; valid names: \["),
    ({"server": {"pre": [{"max_norm": 1}]}}, r"server\.pre\[0\]: each stage needs a 'name'"),
    ({"server": {"pre": [{"name": "nope"}]}}, r"server: unknown pre 'nope'"),
    ({"server": {"aggregator_options": {"wieghted": False}}}, r"server: aggregator 'fedavg': bad options"),
    ({"federation": {"fraction": 0.5, "clients_per_round": 2}}, r"either clients_per_round or fraction"),
    ({"federation": {"clients_per_round": 9}}, r"exceeds partition\.num_clients = 8"),
    ({"client": {"lr": 30}}, r"client\.lr: must be in \(0, 10\]"),
    ({"client": {"momentum": 0.9}}, r"client\.momentum: only applies to optimizer = .sgd."),
    ({"federation": {"save_client_updates": "yes"}}, r"must be true or false"),
    ({"bogus": 1}, r"config: unknown key"),
])
def test_bad_values_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(data)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\nfederation:\n  rounds: 2\n")
    cfg = load_config(path, {"federation.rounds": 5, "partition.num_clients": 4})
    assert cfg.name == "y" and cfg.federation.rounds == 5 and cfg.partition.num_clients == 4


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nname=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    other = tmp_path / "c.json"
    other.write_text("{}")
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml"):
        load_config(other)


def test_clients_per_round():
    assert RunConfig.from_dict({"federation": {"fraction": 0.3}}).clients_per_round == 2
    assert RunConfig.from_dict({}).clients_per_round == 8
