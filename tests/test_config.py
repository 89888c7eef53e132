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


# ---------------------------------------------------------------------- clean errors (one line, the field named)
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "", "x" * 129, "/abs"])
def test_run_name_must_be_a_simple_file_name(name):
    with pytest.raises(ConfigError, match=r"^name: must be a simple file name"):
        RunConfig.from_dict({"name": name})


def test_run_name_accepts_matrix_cell_ids():
    assert RunConfig.from_dict({"name": "backdoor-scaling__multi_krum__f0.2__a0.5__s0"}).name.startswith("backdoor")


def test_set_into_a_non_table_names_the_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 1\n")
    with pytest.raises(ConfigError, match=r"^--set seed\.x: seed is 1, not a table, so it has no field 'x'$"):
        load_config(path, {"seed.x": 3})
    with pytest.raises(ConfigError, match=r"^--set a\.\.b: expects a dotted key"):
        load_config(path, {"a..b": 3})


@pytest.mark.parametrize("text, match", [
    ("[client]\nlr = nan\n", r"^client\.lr: must be a finite number, got nan$"),
    ("[server]\naggregator_options = {f = inf}\n", r"^server\.aggregator_options\.f: must be a finite number, got inf$"),
    ("[[server.pre]]\nname = \"norm_clip\"\nmax_norm = -inf\n", r"^server\.pre\[0\]\.max_norm: must be a finite"),
])
def test_non_finite_values_are_rejected_at_load(tmp_path, text, match):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^federation\.fraction: must be a finite number, got nan$"):
        load_config(_ok(tmp_path), {"federation.fraction": float("nan")})  # --set federation.fraction=NaN


def _ok(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text("seed = 0\n")
    return path


def test_yaml_python_tags_and_syntax_errors_are_one_line(tmp_path):
    tagged = tmp_path / "t.yaml"
    tagged.write_text('seed: !!python/object/apply:os.system ["echo pwned"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(tagged)
    msg = str(info.value)
    assert "\n" not in msg and "line 1" in msg and "!!python/object/apply:os.system is refused" in msg
    broken = tmp_path / "b.yaml"
    broken.write_text("name: x\n  federation: [1,\n")
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    assert "\n" not in str(info.value) and "not valid YAML: line 2" in str(info.value)


def test_non_utf8_file_and_directory_are_named(tmp_path):
    binary = tmp_path / "c.toml"
    binary.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 8"):
        load_config(binary)
    folder = tmp_path / "d.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(folder)


# ---------------------------------------------------------------------- impossible Byzantine settings, at load
@pytest.mark.parametrize("data, match", [
    ({"server": {"aggregator": "krum", "aggregator_options": {"f": 3}}},  # n = 8 <= 2f + 2
     r"^server\.aggregator: krum: Byzantine tolerance violated: needs n > 2f \+ 2.*n = 8 clients per round, f = 3"),
    ({"server": {"aggregator": "bulyan", "aggregator_options": {"f": 2}}, "partition": {"num_clients": 10}},
     r"^server\.aggregator: bulyan: Byzantine tolerance violated: needs n >= 4f \+ 3"),
    ({"server": {"aggregator": "multi_krum", "aggregator_options": {"f": 1}}, "partition": {"num_clients": 10},
      "attack": {"update": {"name": "alie"}, "fraction": 0.3}},  # 3 attackers > the aggregator's f
     r"^server\.aggregator: multi_krum: configured for at most f=1.*f = 3: 3 attacker\(s\) of \[attack\]"),
    ({"server": {"aggregator": "median"}, "partition": {"num_clients": 4},
      "attack": {"update": {"name": "alie"}, "attackers": [0, 1]}},
     r"^server\.aggregator: median: Byzantine tolerance violated: needs 2f < n"),
])
def test_impossible_byzantine_settings_are_refused_at_load(data, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(data)


def test_possible_byzantine_settings_load():
    RunConfig.from_dict({"server": {"aggregator": "krum", "aggregator_options": {"f": 2}}, "partition": {"num_clients": 7}})
    RunConfig.from_dict({"server": {"aggregator": "median"}, "partition": {"num_clients": 5},
                         "attack": {"update": {"name": "alie"}, "attackers": [0, 1]}})
