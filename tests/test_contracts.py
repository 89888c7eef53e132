"""Stage contracts, one suite per registry kind (scikit-learn ``check_estimator`` style).

For every registered aggregator, pre-stage, post-stage, data attack and update attack (plus the
sample-level privacy hook): the right base class, ``get_config()`` round-trips, ``repr`` shows every
non-default parameter, inputs are not mutated, ``client_ids=`` is accepted, stateful stages round-trip
their state, robust ones raise ``ToleranceError`` for impossible ``n``/``f`` and hostile input gives a
clear error or a finite result, never a silent NaN. Then one test per silent failure that was fixed,
and the secure-aggregation entry point (``Pipeline.sum_weights`` / ``Pipeline.aggregate_sum``).
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from trustfl.attacks import DistributedBackdoor, LabelFlip, MinMax, available_attacks, make_attack
from trustfl.defenses import (FLAME, Bucketing, ClientClip, DPAdapterTraining, FedAvg, FLTrust, FoolsGold,
                              GaussianNoise, Krum, Pipeline, TrimmedMean, available_stages, make_stage)
from trustfl.defenses.base import Aggregator, PostStage, PreAggregator
from trustfl.defenses.dp.client_level import clip_rows
from trustfl.errors import ToleranceError, TrustFLError
from trustfl.types import (Aggregate, AggregateInfo, AggregatorStage, AttackContext, ClientPrivacyHook,
                           DataAttackStage, PostStageBase, PreStage, UpdateAttackStage)

N, D = 12, 16
IDS = list(range(200, 200 + N))  # client ids are not row positions

# options a config would give; every registered name must have an entry (so a new stage gets checked)
OPTIONS = {
    "aggregator": {
        "fedavg": {"weighted": False}, "median": {}, "trimmed_mean": {"f": 2, "flag_above": 0.25},
        "krum": {"f": 2}, "multi_krum": {"f": 2, "m": 3}, "bulyan": {"f": 2}, "geometric_median": {"tol": 1e-5},
        "centered_clipping": {"tau": 1.0, "iters": 2}, "dnc": {"f": 2, "sub_dim": 8, "seed": 3}, "fltrust": {},
        "flame": {"noise_lambda": 0.01, "seed": 5}, "foolsgold": {"kappa": 2.0},
    },
    "pre": {"norm_clip": {"max_norm": "median"}, "nnm": {"f": 2}, "bucketing": {"s": 2, "seed": 4},
            "dp_clip": {"clip_norm": 0.5, "adaptive": True, "count_noise_std": 1.0}},
    "post": {"dp_fedavg": {"noise_multiplier": 1.5}},
    "data": {"label_flip": {"source": 1, "target": 2}, "backdoor": {"trigger": "zz", "poison_fraction": 0.5},
             "dba": {"pieces": ["cf", "mn", "bb"], "poison_fraction": 1.0}},
    "update": {"sign_flip": {"scale": 2.0}, "gaussian": {"std": 0.5}, "scaling": {"factor": 3.0}, "alie": {},
               "ipm": {"epsilon": 0.2}, "min_max": {"gamma_init": 5.0, "max_iter": 30}, "min_sum": {"tol": 1e-4}},
}
BASES = {"aggregator": AggregatorStage, "pre": PreStage, "post": PostStageBase, "data": DataAttackStage,
         "update": UpdateAttackStage}
STAGE_KINDS = ("aggregator", "pre", "post")


def _available(kind):
    return available_stages(kind) if kind in STAGE_KINDS else available_attacks(kind)


def _make(kind, name, **extra):
    options = {**OPTIONS[kind][name], **extra}
    if kind in STAGE_KINDS:
        return make_stage(kind, name, **options)
    return make_attack(kind, {"name": name, **options})


def _cases(kinds):
    return [(kind, name) for kind in kinds for name in sorted(OPTIONS[kind])]


def _updates(seed=0, n=N, d=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 0.1 + 0.05


def _prime(stage, d=D):
    """FLTrust needs the server's root update before each aggregation."""
    if isinstance(stage, FLTrust):
        stage.set_server_update(torch.full((d,), 0.05))
    return stage


def _post_input(n=N, d=D):
    info = AggregateInfo.all_accepted(n)
    info.scores["weight"] = torch.full((n,), 1.0 / n)
    info.stats["dp_clip_norm"] = 0.5
    return Aggregate(torch.full((d,), 0.01), info)


def _call(kind, stage, updates, **kw):
    """Run a pipeline stage on ``updates``; returns the output tensor(s)."""
    if kind == "post":
        return stage(_post_input(updates.shape[0], updates.shape[1]), num_clients=updates.shape[0], **kw)
    return _prime(stage, updates.shape[-1] if updates.ndim else D)(updates, **kw)


def _ds(n=12):
    from trustfl.data import make_dataset

    return make_dataset([f"message number {i} about things" for i in range(n)], [i % 3 for i in range(n)],
                        names=["a", "b", "c"], source="test")


# ---------------------------------------------------------------------------------------------- every kind
@pytest.mark.parametrize("kind", list(OPTIONS))
def test_every_registered_name_has_contract_options(kind):
    missing = set(_available(kind)) - set(OPTIONS[kind])
    assert not missing, f"add {sorted(missing)} to OPTIONS[{kind!r}] so the contract suite checks them"


@pytest.mark.parametrize("kind, name", _cases(OPTIONS))
def test_subclasses_the_right_base_and_declares_capabilities(kind, name):
    stage = _make(kind, name)
    assert isinstance(stage, BASES[kind]), f"{name}: subclass trustfl.types.{BASES[kind].__name__}"
    for cap in ("requires_individual_updates", "stateful", "claims_robustness", "tracks_clients"):
        assert isinstance(getattr(type(stage), cap), bool)
    if kind == "update":
        assert isinstance(type(stage).omniscient, bool)
    if stage.claims_robustness:  # a robust stage states its own tolerance, not the base's no-op
        assert type(stage).check_tolerance is not BASES[kind].check_tolerance


@pytest.mark.parametrize("kind, name", _cases(OPTIONS))
def test_get_config_round_trips_and_repr_shows_non_defaults(kind, name):
    stage = _make(kind, name)
    config = stage.get_config()
    assert json.loads(json.dumps(config)) == config  # JSON-able, for the manifest
    params = inspect.signature(type(stage).__init__).parameters.values()
    assert set(config) == {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    assert type(stage)(**config).get_config() == config
    for key, value in OPTIONS[kind][name].items():
        assert config[key] == value or config[key] == pytest.approx(value), key
    text = repr(stage)
    assert text.startswith(f"{type(stage).__name__}(")
    sig = inspect.signature(type(stage).__init__)
    for key, value in config.items():
        if sig.parameters[key].default != value:
            assert f"{key}=" in text, f"{name}: repr {text} drops {key}={value!r}"


# ---------------------------------------------------------------------------------------------- pipeline stages
@pytest.mark.parametrize("kind, name", _cases(STAGE_KINDS))
def test_does_not_mutate_inputs_and_accepts_client_ids(kind, name):
    stage = _make(kind, name)
    u, w = _updates(1), torch.arange(1.0, N + 1)
    before, w_before = u.clone(), w.clone()
    if kind == "post":
        agg = _post_input()
        vec = agg.vector.clone()
        out = stage(agg, num_clients=N, generator=torch.Generator().manual_seed(0), client_ids=IDS)
        assert torch.equal(agg.vector, vec) and out.vector is not agg.vector
        assert torch.isfinite(out.vector).all()
        return
    out = _prime(stage)(u, w, generator=torch.Generator().manual_seed(0), client_ids=IDS)
    assert torch.equal(u, before) and torch.equal(w, w_before), f"{name} mutated its input"
    vector = out.vector if kind == "aggregator" else out[0]
    assert torch.isfinite(vector).all()
    info = out.info if kind == "aggregator" else out[2]
    assert info.accepted.shape == (N,) and len(info.reasons) == N


@pytest.mark.parametrize("kind, name", _cases(STAGE_KINDS))
def test_stateful_stages_round_trip_their_state(kind, name):
    stage = _make(kind, name)
    _call(kind, stage, _updates(2), generator=torch.Generator().manual_seed(0), client_ids=IDS)
    state = stage.state_dict()
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    if not stage.stateful:
        assert state == {}, f"{name} keeps state but does not declare stateful = True"
        with pytest.raises(ValueError, match="keeps no state"):
            stage.load_state_dict({"x": torch.zeros(1)})
        return
    assert state, f"{name} declares stateful = True but kept nothing after a round"
    fresh = _make(kind, name)
    fresh.load_state_dict(state)
    u = _updates(3)
    a = _call(kind, fresh, u, generator=torch.Generator().manual_seed(1), client_ids=IDS)
    b = _call(kind, stage, u, generator=torch.Generator().manual_seed(1), client_ids=IDS)
    va, vb = (a.vector, b.vector) if kind != "pre" else (a[0], b[0])
    torch.testing.assert_close(va, vb)


@pytest.mark.parametrize("kind, name", _cases(STAGE_KINDS))
def test_robust_stages_reject_impossible_n_and_f(kind, name):
    stage = _make(kind, name)
    if not stage.claims_robustness:
        stage.check_tolerance(N, N + 1)  # promises nothing, so nothing to reject
        return
    stage.check_tolerance(N, 1)
    with pytest.raises(ToleranceError, match=rf"n={N}, f={N + 1}"):
        stage.check_tolerance(N, N + 1)
    with pytest.raises(ToleranceError):
        stage.check_tolerance(0, 0)


def _hostile_inputs():
    u = _updates(4)
    nan_row, inf_row, neg_inf_row, big_row, all_big, e30_row = (u.clone() for _ in range(6))
    nan_row[3, 2] = float("nan")
    inf_row[5] = float("inf")
    neg_inf_row[5, 0] = -float("inf")
    big_row[0] = torch.finfo(torch.float32).max
    all_big[:] = torch.finfo(torch.float32).max
    all_big[::2] *= -1
    e30_row[0] = 1e30
    return {"nan_row": nan_row, "inf_row": inf_row, "neg_inf_row": neg_inf_row, "float32_max_row": big_row,
            "all_float32_max": all_big, "row_1e30": e30_row,
            "one_dim": torch.zeros(D), "three_dim": torch.zeros(2, 3, D), "integer": torch.zeros(N, D, dtype=torch.long),
            "empty": torch.zeros(0, D), "one_row": u[:1].clone(), "two_rows": u[:2].clone(),
            "float16": u.half(), "bfloat16": u.bfloat16(), "float64": u.double()}


@pytest.mark.parametrize("case", sorted(_hostile_inputs()))
@pytest.mark.parametrize("kind, name", _cases(("aggregator", "pre")))
def test_hostile_input_gives_a_clear_error_or_a_finite_result(kind, name, case):
    stage = _make(kind, name)
    x = _hostile_inputs()[case]
    try:
        out = _prime(stage)(x, generator=torch.Generator().manual_seed(0), client_ids=IDS[:x.shape[0]] if x.ndim == 2 else None)
    except (TrustFLError, ValueError, TypeError) as exc:
        assert len(str(exc)) > 20, f"{name}/{case}: unclear error {exc!r}"
        assert case not in ("float16", "bfloat16", "float64"), f"{name} refuses {case} input: {exc}"  # any float dtype
        return
    assert case not in ("one_dim", "three_dim", "integer", "empty", "nan_row", "inf_row", "neg_inf_row"), \
        f"{name} accepted {case} silently"
    vector = out.vector if kind == "aggregator" else out[0]
    assert torch.isfinite(vector).all(), f"{name}/{case}: silent non-finite result"
    assert vector.dtype == x.dtype, f"{name}/{case}: returns {vector.dtype} for {x.dtype} input (docs: the input dtype)"


@pytest.mark.parametrize("case", ["nan_row", "inf_row", "float32_max_row", "all_float32_max", "one_row"])
@pytest.mark.parametrize("name", sorted(OPTIONS["aggregator"]))
def test_hostile_input_through_a_pipeline_is_never_a_silent_nan(name, case):
    agg = _prime(_make("aggregator", name))
    x = _hostile_inputs()[case]
    try:
        out = Pipeline(aggregator=agg)(x, generator=torch.Generator().manual_seed(0), client_ids=IDS[:x.shape[0]])
    except (TrustFLError, ValueError) as exc:
        assert len(str(exc)) > 20
        return
    assert torch.isfinite(out.vector).all(), f"{name}/{case}"
    if case in ("nan_row", "inf_row"):
        assert not out.info.accepted[3 if case == "nan_row" else 5]


def test_post_stage_refuses_a_non_finite_aggregate():
    agg = _post_input()
    agg.vector[0] = float("nan")
    with pytest.raises(TrustFLError, match="NaN/Inf"):
        GaussianNoise(noise_multiplier=1.0)(agg, num_clients=N)


# ---------------------------------------------------------------------------------------------- attacks
@pytest.mark.parametrize("name", sorted(OPTIONS["update"]))
def test_update_attack_contract(name):
    attack = _make("update", name)
    honest, benign = _updates(5, n=3), _updates(6, n=8)
    before, benign_before = honest.clone(), benign.clone()

    def ctx():
        return AttackContext(round=1, attacker_ids=[0, 1, 2], global_vector=torch.zeros(D),
                             benign_updates=benign if attack.omniscient else None,
                             generator=torch.Generator().manual_seed(0))

    out = attack(honest, context=ctx())
    assert torch.equal(honest, before) and torch.equal(benign, benign_before)
    assert out.shape == honest.shape and torch.isfinite(out).all()
    torch.testing.assert_close(attack(honest, context=ctx()), out)  # seeded by the context's generator


@pytest.mark.parametrize("name", sorted(OPTIONS["data"]))
def test_data_attack_contract(name):
    attack = _make("data", name)
    ds = _ds()
    texts, labels = list(ds["text"][:]), list(ds["label"][:])
    out = attack(ds, client_id=3, seed=0, attackers=[3, 8])
    assert list(ds["text"][:]) == texts and list(ds["label"][:]) == labels  # input untouched
    assert (list(out["text"][:]), list(out["label"][:])) != (texts, labels)
    assert attack(ds, client_id=5, seed=0, attackers=[3, 8]) is ds  # not an attacker: unchanged
    success = attack.success_set(ds)
    assert success is None or (len(success) == 2 and isinstance(success[1], int))


def test_privacy_hook_contract():
    hook = DPAdapterTraining(noise_multiplier=1.1, delta=1e-6, rounds=3)
    assert isinstance(hook, ClientPrivacyHook) and hook.custom_loss is True
    config = hook.get_config()
    assert json.loads(json.dumps(config)) == config
    assert type(hook)(**config).get_config() == config
    text = repr(hook)
    assert all(f"{k}=" in text for k in ("noise_multiplier", "delta", "rounds"))
    assert hook.state_json() == {}
    fresh = DPAdapterTraining(noise_multiplier=1.1, delta=1e-6, rounds=3)
    fresh.load_state_json(hook.state_json())
    assert ClientPrivacyHook.custom_loss is False


# ---------------------------------------------------------------------------------------------- fixed silent failures
def test_misspelt_contract_method_is_a_type_error_at_class_definition():
    with pytest.raises(TypeError, match="check_tolerance"):
        class _Bad(AggregatorStage):  # noqa: F841
            def check_tolerence(self, n, f):
                pass


def test_sum_only_aggregator_must_implement_the_sum_methods():
    with pytest.raises(TypeError, match="from_sum"):
        class _Bad(AggregatorStage):  # noqa: F841
            requires_individual_updates = False


def test_foolsgold_without_client_ids_raises():
    with pytest.raises(ValueError, match="client_ids"):
        FoolsGold()(_updates(7))
    with pytest.raises(ValueError, match="duplicate"):
        FoolsGold()(_updates(7), client_ids=[1] * N)
    assert not hasattr(FoolsGold(), "set_client_ids")


def test_pipeline_hands_kept_client_ids_to_foolsgold():
    fg = FoolsGold()
    u = _updates(8)
    u[1, 0] = float("nan")
    Pipeline(aggregator=fg)(u, client_ids=IDS)
    assert sorted(fg.history) == [c for i, c in enumerate(IDS) if i != 1]
    with pytest.raises(ValueError, match="groups"):
        Pipeline(pre=[Bucketing(s=2)], aggregator=FoolsGold())(_updates(8), client_ids=IDS)


def test_dba_leaves_a_non_attacker_untouched_and_splits_by_the_call_attackers():
    attack = DistributedBackdoor(pieces=["cf", "mn"], poison_fraction=1.0)
    ds = _ds(10)
    assert attack(ds, client_id=3, seed=0, attackers=[4, 7]) is ds
    assert not hasattr(attack, "attackers")
    first = attack(ds, client_id=7, seed=0, attackers=[7, 4])["text"][:]
    assert all("cf" in t.split() and "mn" not in t.split() for t in first)
    with pytest.raises(TypeError):
        DistributedBackdoor(attackers=[1, 2])  # the coalition is a call argument, not state


def test_reprs_keep_every_parameter():
    assert "seed=7" in repr(Bucketing(s=2, seed=7))
    assert "flag_above=0.2" in repr(TrimmedMean(f=1, flag_above=0.2))
    assert "seed=9" in repr(FLAME(seed=9))
    text = repr(MinMax(gamma_init=3.0, tol=0.01, max_iter=7))
    assert all(s in text for s in ("gamma_init=3.0", "tol=0.01", "max_iter=7"))
    assert "num_classes=4" in repr(LabelFlip(mode="random", num_classes=4))
    assert repr(Krum(f=1)) == "Krum(f=1)" and repr(FedAvg()) == "FedAvg()"


def test_defenses_protocol_names_are_the_base_classes():
    assert Aggregator is AggregatorStage and PreAggregator is PreStage and PostStage is PostStageBase


# ---------------------------------------------------------------------------------------------- pipeline
class _Record(PreStage):
    def __init__(self) -> None:
        self.seen = []

    def __call__(self, updates, weights=None, *, generator=None, client_ids=None):
        self.seen.append(client_ids)
        return updates, weights, AggregateInfo.all_accepted(updates.shape[0])


def test_pipeline_passes_client_ids_to_every_stage_and_rejects_non_stages():
    rec = _Record()
    u = _updates(9)
    u[0, 0] = float("inf")
    Pipeline(pre=[rec])(u, client_ids=IDS)
    assert rec.seen == [IDS[1:]]
    with pytest.raises(TypeError, match="trustfl.types.PreStage"):
        Pipeline(pre=[lambda u, w=None, **kw: (u, w, AggregateInfo.all_accepted(u.shape[0]))])
    with pytest.raises(TypeError, match="trustfl.types.AggregatorStage"):
        Pipeline(aggregator=NormClipLike())
    pipe = Pipeline()
    pipe.post.append(rec)  # a pre-stage in the post list: caught at the next call
    with pytest.raises(TypeError, match="PostStageBase"):
        pipe(_updates(1))


class NormClipLike:
    def __call__(self, updates, weights=None, **kw):
        return updates.mean(0)


def test_pipeline_get_config_and_tolerance():
    pipe = Pipeline(pre=[Bucketing(s=2, seed=1)], aggregator=Krum(f=1), post=[])
    assert pipe.get_config() == {"pre": [{"class": "Bucketing", "s": 2, "seed": 1}],
                                 "aggregator": {"class": "Krum", "f": 1}, "post": []}
    json.dumps(pipe.get_config())
    pipe.check_tolerance(20, 1)
    with pytest.raises(ToleranceError):
        pipe.check_tolerance(8, 2)


# ---------------------------------------------------------------------------------------------- secure aggregation
def _secure_sum(pipe, updates, weights):
    w = pipe.sum_weights(weights, updates.shape[0])
    return (w.to(updates.dtype) @ updates), float(w.sum())


@pytest.mark.parametrize("weighted", [True, False])
def test_aggregate_sum_equals_the_plaintext_pipeline_for_fedavg(weighted):
    pipe = Pipeline(aggregator=FedAvg(weighted=weighted))
    u, w = _updates(10), torch.arange(1.0, N + 1)
    total, wsum = _secure_sum(pipe, u, w)
    secure = pipe.aggregate_sum(total, wsum, num_clients=N, client_ids=IDS)
    plain = pipe(u, w, client_ids=IDS)
    torch.testing.assert_close(secure.vector, plain.vector)
    assert secure.info.accepted.shape == (N,)
    expected_w = w.double() if weighted else torch.ones(N, dtype=torch.float64)
    torch.testing.assert_close(pipe.sum_weights(w, N), expected_w)
    if not weighted:  # FedAvg(weighted=False) must not silently become weighted under secure aggregation
        torch.testing.assert_close(secure.vector, u.mean(0))
        with pytest.raises(ValueError, match="weigh 1"):
            pipe.aggregate_sum(w @ u, float(w.sum()), num_clients=N)


def test_aggregate_sum_always_runs_the_post_stages():
    c, z = 0.5, 1.3
    u = _updates(11) * 10
    clipped, _ = clip_rows(u, c)  # each client clips its own update before the secure sum
    secure_pipe = Pipeline(aggregator=FedAvg(weighted=False), post=[GaussianNoise(noise_multiplier=z)])
    assert not secure_pipe.requires_individual_updates
    total, wsum = _secure_sum(secure_pipe, clipped, None)
    secure = secure_pipe.aggregate_sum(total, wsum, num_clients=N, generator=torch.Generator().manual_seed(3),
                                       stats={"dp_clip_norm": c})
    assert secure.info.stats["dp_noise_std"] == pytest.approx(z * c / N)
    assert not torch.allclose(secure.vector, clipped.mean(0))  # the noise was added
    plain = Pipeline(pre=[ClientClip(clip_norm=c)], aggregator=FedAvg(weighted=False),
                     post=[GaussianNoise(noise_multiplier=z)])(u, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(secure.vector, plain.vector)  # same noise draw: the same release
    with pytest.raises(ValueError, match="dp_clip"):  # never skipped: without the clip norm it refuses
        secure_pipe.aggregate_sum(total, wsum, num_clients=N)


def test_aggregate_sum_needs_a_sum_only_pipeline_and_a_finite_sum():
    with pytest.raises(ValueError, match="individual updates"):
        Pipeline(aggregator=Krum(f=1)).aggregate_sum(torch.zeros(D), 3.0, num_clients=3)
    with pytest.raises(ValueError, match="individual updates"):
        Pipeline(pre=[ClientClip(clip_norm=1.0)]).sum_weights(None, 3)
    bad = torch.zeros(D)
    bad[0] = float("nan")
    with pytest.raises(TrustFLError, match="NaN/Inf"):
        Pipeline().aggregate_sum(bad, 3.0, num_clients=3)
    with pytest.raises(TrustFLError, match="weight sum"):
        Pipeline().aggregate_sum(torch.zeros(D), 0.0, num_clients=3)
