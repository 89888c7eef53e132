"""`trustfl audit`: the framework (registry, crash isolation, report files), the integrity, privacy,
data and unlearning sections on tiny runs, the CLI, and the report rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from trustfl.audits import AuditSettings, SectionResult, run_audit
from trustfl.audits.report import AuditReport, Finding, NotChecked, SECTIONS, render_html
from trustfl.audits.report.sections import data as data_section
from trustfl.audits.report.sections import integrity, privacy, unlearning
from trustfl.cli import main
from trustfl.federation import Federation
from trustfl.rundir import RunDir, RunWriter, generate_key

from tiny_runs import federation_run as _config

ALL = ["integrity", "privacy", "robustness", "contribution", "data", "unlearning"]
MINE = ["integrity", "privacy", "data", "unlearning"]


@pytest.fixture(scope="module")
def plain_run(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "plain"
    Federation(_config(tiny_bert_dir, federation__save_client_updates=True), out_dir=out, progress=False).run()
    return out


@pytest.fixture(scope="module")
def dp_run(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "dp"
    cfg = _config(tiny_bert_dir, federation__save_client_updates=True,
                  privacy__sample={"target_epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 0.5},
                  dedup__enabled=True, dedup__methods=["exact", "lexical"])
    Federation(cfg, out_dir=out, progress=False).run()
    return out


@pytest.fixture
def own_loop_run(tmp_path):
    """A run recorded by RunWriter directly (no Federation), signed, with loosely logged ε."""
    private, public = generate_key(tmp_path / "op")
    path = tmp_path / "own"
    torch.manual_seed(0)
    w = RunWriter.create(path, config={"rounds": 2}, seeds={"torch": 0},
                         layout={"names": ["w"], "shapes": [[6]], "dtype": "float32"}, signing_key=private)
    g = torch.zeros(6)
    w.write_initial(g)
    for r in (1, 2):
        ups = {c: (torch.randn(6) * 0.1, 10 + c) for c in range(3)}
        g = g + torch.stack([u for u, _ in ups.values()]).mean(0)
        w.write_round(r, global_vector=g, client_updates=ups,
                      metrics={"accuracy": 0.5 + 0.1 * r, "epsilon": {c: 1.0 * r for c in range(3)}})
    return path, public


# ---------------------------------------------------------------- sections
def test_integrity_section_on_an_intact_run(plain_run):
    res = integrity.audit(RunDir(plain_run), AuditSettings())
    assert res.status == "pass" and res.verdict.startswith("intact:"), res.verdict
    assert "unsigned" in res.verdict and res.data["hash_chain"] == "intact"
    assert res.data["files"]["problems"] == [] and res.data["files"]["verified"] == res.data["files"]["listed"]
    assert res.data["config"]["clients"] == 4 and res.data["config"]["rounds"] == 2
    assert "torch" in res.data["versions"] and "client_0_train" in res.data["fingerprints"]
    assert res.data["torch_thread_segments"][0]["first_round"] == 1
    assert any(n.what == "who wrote the run" for n in res.not_checked)


def test_privacy_section_without_dp_says_so(plain_run):
    res = privacy.audit(RunDir(plain_run), AuditSettings())
    assert res.status == "warn" and res.verdict.startswith("no formal privacy guarantee")
    assert "loss" in res.data["membership"]  # membership inference ran (tests/test_membership_audit.py)
    assert any(n.what == "empirical epsilon (canaries)" and "planted no canaries" in n.why for n in res.not_checked)


def test_privacy_section_states_the_sample_level_guarantee(dp_run):
    run = RunDir(dp_run)
    res = privacy.audit(run, AuditSettings())
    recorded = run.manifest["extra"]["privacy"]["sample"]
    level = res.data["levels"]["sample"]
    assert res.status == "pass", res.verdict
    assert level["epsilon_max"] == recorded["epsilon_max"] and level["epsilon_per_client"] == recorded["epsilon_per_client"]
    assert level["target_epsilon"] == 4.0 and level["delta"] == 1e-5
    assert "sample-level" in res.verdict and privacy.SAMPLE_RELATION in res.verdict
    assert set(res.data["epsilon_per_round"]["sample level (max over clients)"]) == {"1", "2"}
    assert res.figures["epsilon_per_round"].startswith(b"\x89PNG")
    # a stricter threshold turns the same ε into a warning
    strict = privacy.audit(run, AuditSettings(thresholds={"epsilon_warn": 1.0}))
    assert strict.status == "warn" and "weak formal guarantee" in strict.verdict


def test_data_section_dedup_summary_and_origin_report(dp_run, plain_run, tmp_path):
    res = data_section.audit(RunDir(dp_run), AuditSettings())
    assert res.status == "pass" and res.verdict.startswith("dedup (exact, lexical)")
    d = res.data["dedup"]
    assert {"records_before", "records_after", "clusters", "cross_client_clusters", "dropped_per_client"} <= set(d)
    assert any("origin" in n.what for n in res.not_checked)

    res = data_section.audit(RunDir(plain_run), AuditSettings())
    assert res.status == "unavailable"
    assert {n.what for n in res.not_checked} >= {"cross-client duplicates"}
    assert any("did not deduplicate" in n.why for n in res.not_checked)

    origin = tmp_path / "origin.json"
    origin.write_text(json.dumps({"format": "trustfl-origin-report/1", "status": "complete",
                                  "copies": {"counts": {"flagged": 2}, "findings": []}, "dcr": [],
                                  "attribution": [{"score": "fast_detectgpt", "auc": 0.9}]}))
    res = data_section.audit(RunDir(plain_run), AuditSettings(options={"origin_report": str(origin)}))
    assert res.status == "warn" and res.data["origin"]["copies_flagged"] == 2
    assert res.data["origin"]["attribution_fast_detectgpt"] == {"auc": 0.9}


def test_unlearning_section_on_a_run_that_is_not_an_unlearning_run(plain_run):
    res = unlearning.audit(RunDir(plain_run), AuditSettings())
    assert res.status == "unavailable"
    assert res.not_checked[0].what == "linked unlearning runs"
    assert "not an unlearning run" in res.not_checked[0].why


# ---------------------------------------------------------------- framework
def test_run_audit_writes_html_and_json_and_the_run_still_verifies(dp_run):
    report = run_audit(dp_run, sections=MINE, progress=False)
    assert [s.name for s in report.sections] == MINE
    html = (dp_run / "audit" / "report.html").read_text()
    data = json.loads((dp_run / "audit" / "report.json").read_text())
    assert report.paths["html"].endswith("audit/report.html")
    for name in MINE:
        assert f'<section id="{name}">' in html
    assert "data:image/png;base64," in html and "<script" not in html and "http://" not in html
    assert [s["section"] for s in data["summary"]] == MINE
    priv = next(s for s in data["sections"] if s["name"] == "privacy")
    assert "figures" not in priv and priv["figure_names"] == ["epsilon_per_round", "membership_roc"]
    # the audit/ folder written into the run never makes the run's integrity check complain
    v = RunDir(dp_run).verify()
    assert v.untracked == () and v.incomplete == ()
    assert not any(p.startswith("audit/") for p in v.checked)


def test_corrupt_run_names_every_bad_file_and_the_other_sections_still_run(plain_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(plain_run, run, ignore=shutil.ignore_patterns("audit"))
    m = RunDir(run).manifest
    deleted = m["rounds"][2]["updates"]["1"]["file"]
    corrupted = m["rounds"][1]["global"]
    (run / deleted).unlink()
    data = bytearray((run / corrupted).read_bytes())
    data[-3] ^= 0xFF
    (run / corrupted).write_bytes(bytes(data))

    report = run_audit(run, progress=False)
    assert [s.name for s in report.sections] == ALL
    integ = report.section("integrity")
    assert integ.status == "fail" and integ.verdict.startswith("CORRUPT")
    assert deleted in integ.verdict and corrupted in integ.verdict and "missing" in integ.verdict
    assert {p["file"] for p in integ.data["files"]["problems"]} == {deleted, corrupted}
    for name in ("privacy", "data", "unlearning"):
        assert not report.section(name).verdict.startswith("section crashed"), report.section(name).verdict
    assert report.section("privacy").status == "warn"  # no DP, read from the (intact) metrics
    assert (run / "audit" / "report.html").is_file()
    html = (run / "audit" / "report.html").read_text()
    assert all(f'<section id="{n}">' in html for n in ALL)


def test_unparsable_manifest_is_an_integrity_failure_not_a_crash(tmp_path, own_loop_run):
    path, _ = own_loop_run
    (path / "manifest.json").write_text("{not json")
    report = run_audit(path, progress=False, write=False)
    assert report.section("integrity").status == "fail" and "manifest.json" in report.section("integrity").verdict
    assert all(s.status == "unavailable" for s in report.sections[1:])


def _boom(run, settings):
    raise RuntimeError("kaboom\nsecond line")


def test_a_crashing_section_is_caught_and_a_missing_module_is_unavailable(plain_run, monkeypatch):
    monkeypatch.setitem(SECTIONS, "privacy", f"{__name__}:_boom")
    monkeypatch.setitem(SECTIONS, "robustness", "trustfl.audits.no_such_module_xyz:audit")
    report = run_audit(plain_run, sections="unlearning,robustness,privacy,integrity", progress=False, write=False)
    assert [s.name for s in report.sections] == ["integrity", "privacy", "robustness", "unlearning"]
    crashed = report.section("privacy")
    assert crashed.status == "fail" and crashed.verdict == "section crashed: RuntimeError: kaboom"
    assert "Traceback" in crashed.data["traceback"] and "kaboom" in crashed.data["traceback"]
    missing = report.section("robustness")
    assert missing.status == "unavailable" and "no_such_module_xyz" in missing.not_checked[0].why
    assert report.section("integrity").status == "pass"


def test_html_escapes_every_text_and_renders_data_compactly():
    s = SectionResult(name="privacy", status="warn", verdict="<script>alert(1)</script> & co",
                      checked=["<b>c</b>"], findings=[Finding("<i>f</i>", "warn", {"k<": "v>"})],
                      not_checked=[NotChecked("<w>", "<why>")],
                      data={"per_client": {str(i): 0.5 for i in range(80)}, "rows": [{"a": 1}, {"b": float("nan")}]})
    html = render_html(AuditReport(run_dir="/r<x>", sections=[s]))
    for raw in ("<script>", "<b>c</b>", "<i>f</i>", "<w>", "<why>", "/r<x>", "k<"):
        assert raw not in html
    assert "&lt;script&gt;" in html and "&amp; co" in html and "... 20 more" in html
    json.dumps(AuditReport(run_dir="r", sections=[s]).to_dict(), allow_nan=False)


def test_unknown_section_is_a_user_error():
    from trustfl.audits.report import AuditError, parse_sections

    with pytest.raises(AuditError, match="unknown audit section"):
        parse_sections("privacy,nope")
    assert parse_sections(None) == ALL and parse_sections("data, integrity") == ["integrity", "data"]


def test_a_run_recorded_by_runwriter_audits_too(own_loop_run):
    path, public = own_loop_run
    report = run_audit(path, sections=MINE, settings=AuditSettings(options={"public_key": str(public)}),
                       progress=False)
    integ = report.section("integrity")
    assert integ.status == "pass", integ.verdict
    assert integ.data["signature"]["status"] == "verified with the given key"
    assert any("torch thread segments" == n.what for n in integ.not_checked)
    priv = report.section("privacy")
    assert priv.status == "warn" and priv.data["unstructured_epsilon_in_metrics"]["epsilon"]["2"] == 2.0
    assert report.section("data").status == "unavailable"
    assert RunDir(path).verify(public_key=public).untracked == ()


def test_a_wrong_public_key_fails_integrity(own_loop_run, tmp_path):
    path, _ = own_loop_run
    _, other = generate_key(tmp_path / "other")
    res = integrity.audit(RunDir(path), AuditSettings(options={"public_key": str(other)}))
    assert res.status == "fail" and res.data["signature"]["status"] == "INVALID"


# ---------------------------------------------------------------- CLI
def test_cli_audit_end_to_end(dp_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(dp_run, run, ignore=shutil.ignore_patterns("audit"))
    assert main(["audit", str(run), "--quiet", "--sections", "integrity,privacy,data,unlearning"]) == 0
    out = capsys.readouterr().out
    assert "integrity" in out and "privacy" in out and "report:" in out and "report.html" in out
    assert (run / "audit" / "report.html").is_file() and (run / "audit" / "report.json").is_file()
    assert main(["verify", str(run)]) == 0
    assert "OK" in capsys.readouterr().out


def test_cli_audit_user_errors_exit_2_with_one_line(plain_run, tmp_path, capsys):
    assert main(["audit", str(plain_run), "--sections", "integrity,bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown audit section(s) 'bogus'" in err
    assert main(["audit", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a run directory" in err


# ---------------------------------------------------------------- rendering
def test_report_renders_in_headless_chromium(dp_run, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium; `make install` tries it)")
    report = run_audit(dp_run, sections=MINE, progress=False)
    html_path = report.paths["html"]
    html = open(html_path, encoding="utf-8").read()
    for name in MINE:
        assert f'<section id="{name}">' in html
    shot = tmp_path / "shot.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,1600", f"--screenshot={shot}", f"file://{html_path}"],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 1600)
    lo, hi = img.getextrema()
    colors = img.getcolors(maxcolors=256 * 256)
    assert hi - lo > 100 and colors is not None and len(colors) > 20, "blank screenshot"
