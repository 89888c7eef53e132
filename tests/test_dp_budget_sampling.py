"""Privacy-accounting holes (issue 10, items 1, 2, 12): a spent client-level budget stays spent across
resumes (library and CLI), client-level ε is accounted for the sampling the loop really does (Poisson,
fixed-denominator release, checked against Google's dp-accounting), sample-level σ cannot be stretched
by a resume, and a resume under another torch thread count is warned about and recorded."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from trustfl.config import RunConfig
from trustfl.defenses import FedAvg, Pipeline
from trustfl.defenses.dp import ClientClip, ClientLevelAccountant, GaussianNoise, epsilon
from trustfl.errors import ConfigError, StopFederation, TrustFLError
from trustfl.federation import Federation
from trustfl.rundir import RunDir

from tiny_runs import tiny_run

SERVER = {"aggregator": "fedavg", "aggregator_options": {"weighted": False}}


def _config(model_dir: str, *, federation: dict | None = None, **sections) -> RunConfig:
    """``federation`` fields are set on the base run's; other ``sections`` replace whole sections."""
    fields = {"client__max_steps": 2, "federation__save_client_updates": False,
              **{f"federation__{k}": v for k, v in (federation or {}).items()}}
    return RunConfig.from_dict(tiny_run(model_dir, name="dp", replace=sections, **fields))


# ---------------------------------------------------------------------- independent accountant (dp-accounting)
def _dp_accounting_epsilon(event, relation: str, rounds: int, delta: float = 1e-5) -> float:
    import dp_accounting
    from dp_accounting.rdp import rdp_privacy_accountant

    logging.getLogger("absl").setLevel(logging.ERROR)  # orders near 1 that its series cannot do are skipped
    # dp-accounting's own default orders (1.1 ... 10.9, 12 ... 63, 128, 256, 512)
    acc = rdp_privacy_accountant.RdpAccountant(neighboring_relation=getattr(dp_accounting.NeighboringRelation, relation))
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(acc.get_epsilon(delta))


def test_issue_numbers_poisson_accounting_matches_dp_accounting_and_fixed_size_costs_more():
    """q = 0.1, z = 1, 100 rounds. trustfl reports 7.90 for Poisson sampling (what the loop now does under
    client-level DP); Google's dp-accounting agrees. Fixed-size sampling (10 of 100 without replacement,
    replace-one, Wang et al. 2019) costs 14.05: reporting 7.9 for it, as trustfl did, under-reported ε."""
    import dp_accounting

    q, z, rounds, n = 0.1, 1.0, 100, 100
    acc = ClientLevelAccountant(noise_multiplier=z, sample_rate=q, delta=1e-5)
    for r in range(1, rounds + 1):
        acc(type("Report", (), {"round": r})())
    ours = acc.ledger.epsilon()
    poisson = _dp_accounting_epsilon(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
                                     "ADD_OR_REMOVE_ONE", rounds)
    fixed = _dp_accounting_epsilon(
        dp_accounting.SampledWithoutReplacementDpEvent(n, int(q * n), dp_accounting.GaussianDpEvent(z)),
        "REPLACE_ONE", rounds)
    assert ours == pytest.approx(7.90, abs=0.01)
    assert ours == pytest.approx(poisson, rel=2e-3)  # different RDP-to-(ε, δ) conversions: 0.06 % apart
    assert fixed == pytest.approx(14.05, abs=0.01) and fixed > 1.7 * ours


def test_client_level_dp_refuses_fixed_size_sampling(tiny_bert_dir):
    with pytest.raises(ConfigError, match=r"^federation\.sampling: client-level DP .* needs sampling = \"poisson\""):
        _config(tiny_bert_dir, server=SERVER, privacy={"client": {"noise_multiplier": 1.0}})
    with pytest.raises(ConfigError, match=r"^federation\.sampling"):
        _config(tiny_bert_dir, federation={"sampling": "uniform"})


def test_poisson_sampling_is_what_the_accountant_assumes(tiny_bert_dir):
    """Each client joins independently with probability q = k/N, seeded per round: inclusion rates ≈ q,
    sizes vary (Binomial(N, q)), rounds without any client occur, and the draw is reproducible."""
    cfg = _config(tiny_bert_dir, federation={"clients_per_round": 1, "sampling": "poisson"})
    fed = Federation(cfg, out_dir="unused", progress=False)
    rounds, n, q = 4000, 4, 0.25
    draws = [fed.sample_clients(r) for r in range(1, rounds + 1)]
    assert draws == [fed.sample_clients(r) for r in range(1, rounds + 1)]
    assert all(d == sorted(set(d)) for d in draws)
    counts = torch.tensor([[c in d for c in range(n)] for d in draws], dtype=torch.float64)
    sd = math.sqrt(q * (1 - q) / rounds)
    assert ((counts.mean(0) - q).abs() < 5 * sd).all()
    empty = sum(not d for d in draws) / rounds
    assert abs(empty - (1 - q) ** n) < 5 * math.sqrt((1 - q) ** n / rounds)
    # independence across clients: P(0 and 1 both in) ≈ q²
    assert abs(float((counts[:, 0] * counts[:, 1]).mean()) - q * q) < 5 * math.sqrt(q * q / rounds)
    fixed = Federation(_config(tiny_bert_dir, federation={"clients_per_round": 1}), out_dir="unused", progress=False)
    assert all(len(fixed.sample_clients(r)) == 1 for r in range(1, 50))


# ---------------------------------------------------------------------- fixed-denominator release
def test_fixed_denominator_release_is_clipped_sum_over_expected_count():
    """(Σ clip_C(Δ_k) + N(0, z²C²)) / (qN): hand-computed sum, and noise std zC/(qN) for any m."""
    x = torch.tensor([[3.0, 4.0], [0.0, 0.1], [6.0, 8.0]])
    pipe = Pipeline(pre=[ClientClip(clip_norm=1.0, expected_clients=5.0)], aggregator=FedAvg(weighted=False),
                    post=[GaussianNoise(noise_multiplier=1e-9, expected_clients=5.0)])
    agg = pipe(x, None, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(agg.vector, torch.tensor([0.6 + 0.0 + 0.6, 0.8 + 0.1 + 0.8]) / 5, atol=1e-6, rtol=0)
    assert agg.info.stats["dp_denominator"] == 5.0
    assert agg.info.scores["weight"].tolist() == [0.2, 0.2, 0.2]
    z, c, expected, d = 1.3, 0.5, 2.5, 40_000
    for m in (1, 4):
        pipe = Pipeline(pre=[ClientClip(clip_norm=c, expected_clients=expected)], aggregator=FedAvg(weighted=False),
                        post=[GaussianNoise(noise_multiplier=z, expected_clients=expected)])
        out = pipe(torch.zeros(m, d), None, generator=torch.Generator().manual_seed(m))
        ref = z * c / expected  # not z*c/m: the realised count does not enter the release
        assert abs(float(out.vector.double().std()) / ref - 1) < 5 / math.sqrt(2 * d)
        assert out.info.stats["dp_noise_std"] == pytest.approx(ref)


def test_empty_round_releases_noise_and_adaptive_count_is_centred():
    from trustfl.defenses.dp.component import ClientLevelDP

    z, c, expected, sb, d = 1.0, 0.2, 2.0, 1.0, 40_000
    dp = ClientLevelDP(clip=ClientClip(clip_norm=c, adaptive=True, count_noise_std=sb, expected_clients=expected),
                       noise=GaussianNoise(noise_multiplier=z, expected_clients=expected),
                       accountant=ClientLevelAccountant(noise_multiplier=z, sample_rate=0.5, delta=1e-5))
    agg = dp.empty_round(1, torch.zeros(d), generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    count_noise = float(torch.randn((), generator=g, dtype=torch.float64)) * sb
    b = (0 - 0.5 * 0 + count_noise) / expected + 0.5  # centred count over the fixed denominator
    assert agg.info.stats["dp_noisy_unclipped_fraction"] == pytest.approx(b)
    assert dp.clip.current_clip_norm == pytest.approx(c * math.exp(-0.2 * (b - 0.5)))
    zd = (z ** -2 - (2 * sb) ** -2) ** -0.5
    assert abs(float(agg.vector.double().std()) / (zd * c / expected) - 1) < 5 / math.sqrt(2 * d)
    # with clients: Σ(b_k − ½) over the expected count, + ½
    stage = ClientClip(clip_norm=1.0, adaptive=True, count_noise_std=sb, expected_clients=expected)
    _, _, info = stage(torch.tensor([[0.5, 0.0], [2.0, 0.0], [0.1, 0.0]]), generator=torch.Generator().manual_seed(7))
    noise = float(torch.randn((), generator=torch.Generator().manual_seed(7), dtype=torch.float64)) * sb
    assert info.stats["dp_noisy_unclipped_fraction"] == pytest.approx((2 - 1.5 + noise) / expected + 0.5)
    with pytest.raises(ValueError, match="expected_clients"):
        GaussianNoise(noise_multiplier=1.0).empty_round(4, {"dp_clip_norm": 1.0})


def test_accountant_refuses_a_round_it_has_not_followed():
    """Used as a bare callback across a resume, the accountant would restart at ε = 0."""
    acc = ClientLevelAccountant(noise_multiplier=1.0, sample_rate=0.5, delta=1e-5)
    with pytest.raises(TrustFLError, match=r"round 3 but 0 rounds are accounted"):
        acc(type("Report", (), {"round": 3})())
    acc.restore(2)
    assert acc(type("Report", (), {"round": 3})())["privacy_client"]["rounds"] == 3


def test_poisson_run_with_an_empty_round_spends_privacy_and_adds_noise(tiny_bert_dir, tmp_path):
    z, c, k = 1.0, 0.05, 1
    cfg = _config(tiny_bert_dir, federation={"rounds": 8, "clients_per_round": k, "sampling": "poisson"},
                  server=SERVER, privacy={"client": {"noise_multiplier": z, "clip_norm": c, "delta": 1e-5}})
    probe = Federation(cfg, out_dir=tmp_path / "probe", progress=False)
    draws = {r: probe.sample_clients(r) for r in range(1, 9)}
    empty = next(r for r, d in draws.items() if not d)  # seed 0: there is one among the first 8 (P ≈ 0.32 each)
    cfg = _config(tiny_bert_dir, federation={"rounds": empty, "clients_per_round": k, "sampling": "poisson"},
                  server=SERVER, privacy={"client": {"noise_multiplier": z, "clip_norm": c, "delta": 1e-5}})
    Federation(cfg, out_dir=tmp_path / "run", progress=False).run()
    run = RunDir(tmp_path / "run")
    run.verify()
    m = run.metrics()[-1]
    assert m["clients"] == [] and m["round"] == empty
    assert m["privacy_client"]["rounds"] == empty  # the empty round is accounted
    assert m["privacy_client"]["epsilon"] == pytest.approx(
        epsilon(noise_multiplier=z, sample_rate=k / 4, steps=empty, delta=1e-5))
    stats = m["aggregation"]["stats"]
    assert stats["dp_denominator"] == k and stats["dp_noise_std"] == pytest.approx(z * c / k)
    step = run.global_vector(empty) - run.global_vector(empty - 1)
    assert float(step.abs().max()) > 0  # noise, not a skipped round
    assert abs(float(step.double().std()) / (z * c / k) - 1) < 6 / math.sqrt(2 * step.numel())


# ---------------------------------------------------------------------- budget across resume
def test_spent_client_budget_stays_spent_across_resumes(tiny_bert_dir, tmp_path, capsys):
    """The issue's run: z = 2, C = 0.1, max_epsilon = 3.5, every client every round (q = 1): it stops after
    round 2 at ε 3.19 (round 3 would reach 4.01). Resuming it, from the library or the CLI, trains and commits
    nothing; the CLI says so in one line and exits 1, while the first (training) run exits 0."""
    from trustfl.cli import main

    cfg_path = tmp_path / "budget.toml"
    cfg_path.write_text(f"""
name = "budget"
[model]
name = "{tiny_bert_dir}"
max_length = 16
[lora]
r = 2
top_layers = 1
[data]
name = "sms_spam"
max_records = 120
[partition]
num_clients = 3
scheme = "iid"
[client]
max_steps = 1
[federation]
rounds = 6
sampling = "poisson"
save_client_updates = false
[server]
aggregator_options = {{weighted = false}}
[privacy.client]
noise_multiplier = 2.0
clip_norm = 0.1
max_epsilon = 3.5
""")
    out = tmp_path / "run"
    assert main(["run", str(cfg_path), "--out", str(out), "-q"]) == 0
    assert "stopped early" in capsys.readouterr().out
    run = RunDir(out)
    eps2 = epsilon(noise_multiplier=2.0, sample_rate=1.0, steps=2, delta=1e-5)
    assert run.completed_rounds == 2 and eps2 == pytest.approx(3.189, abs=1e-3)
    assert epsilon(noise_multiplier=2.0, sample_rate=1.0, steps=3, delta=1e-5) == pytest.approx(4.011, abs=1e-3)
    assert run.manifest["extra"]["privacy"]["client"]["epsilon"] == pytest.approx(eps2, rel=1e-12)
    manifest = (out / "manifest.json").read_bytes()

    from trustfl.config import load_config

    summary = Federation(load_config(cfg_path), out_dir=out, resume=True, progress=False).run()
    assert summary.rounds_completed == 2 and "max_epsilon=3.5" in (summary.stopped_reason or "")
    assert (out / "manifest.json").read_bytes() == manifest  # nothing trained, nothing committed

    assert main(["run", str(cfg_path), "--out", str(out), "--resume", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trustfl run: error: no round trained")
    assert "max_epsilon=3.5" in err[0] and "round 2" in err[0]
    assert (out / "manifest.json").read_bytes() == manifest
    assert max(m["privacy_client"]["epsilon"] for m in RunDir(out).metrics()) <= 3.5


def test_sample_level_target_cannot_be_stretched_by_a_resume(tiny_bert_dir, tmp_path):
    """σ is solved for federation.rounds x local steps; a resume with more rounds is refused (the config
    must equal the recorded one) and a resume with the same config keeps each client's recorded σ."""
    from trustfl.rundir import RunDirError

    privacy = {"sample": {"target_epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 0.5}}
    cfg = _config(tiny_bert_dir, federation={"rounds": 2}, privacy=privacy)

    def stop_after_first(report):
        if report.round == 1:
            raise StopFederation("stopped for the test")

    Federation(cfg, out_dir=tmp_path / "cut", callbacks=[stop_after_first], progress=False).run()
    sigma = {cid: cm["dp_noise_multiplier"] for cid, cm in RunDir(tmp_path / "cut").metrics()[0]["client_metrics"].items()}
    longer = _config(tiny_bert_dir, federation={"rounds": 4}, privacy=privacy)
    with pytest.raises(RunDirError, match="federation"):
        Federation(longer, out_dir=tmp_path / "cut", resume=True, progress=False).run()
    Federation(cfg, out_dir=tmp_path / "cut", resume=True, progress=False).run()
    last = RunDir(tmp_path / "cut").metrics()[-1]
    for cid, cm in last["client_metrics"].items():
        assert cm["dp_noise_multiplier"] == sigma[cid]
        assert cm["dp_epsilon"] <= 3.0 + 1e-9
        assert cm["dp_epsilon"] == pytest.approx(epsilon(noise_multiplier=sigma[cid], sample_rate=cm["dp_sample_rate"],
                                                         steps=int(cm["dp_steps_total"]), delta=1e-5), rel=1e-9)


# ---------------------------------------------------------------------- thread count on resume
def test_resume_under_another_thread_count_warns_and_is_recorded(tiny_bert_dir, tmp_path, caplog):
    cfg = _config(tiny_bert_dir, federation={"rounds": 3})
    before = torch.get_num_threads()

    def stop_after_first(report):
        if report.round == 1:
            raise StopFederation("stopped for the test")

    try:
        torch.set_num_threads(1)
        Federation(cfg, out_dir=tmp_path / "r", callbacks=[stop_after_first], progress=False).run()
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING, logger="trustfl.federation.recorder"):
            Federation(cfg, out_dir=tmp_path / "r", resume=True, progress=False).run()
    finally:
        torch.set_num_threads(before)
    warned = [r.getMessage() for r in caplog.records if "torch threads" in r.getMessage()]
    assert len(warned) == 1 and "created with 1" in warned[0] and "uses 2" in warned[0]
    extra = RunDir(tmp_path / "r").manifest["extra"]
    assert extra["torch_num_threads"] == 1
    assert extra["torch_num_threads_segments"] == [{"first_round": 1, "last_round": 1, "torch_num_threads": 1},
                                                   {"first_round": 2, "last_round": 3, "torch_num_threads": 2}]
