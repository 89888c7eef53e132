"""Distributed near-duplicate detection as a distributed data step (trustfl.types.distributed).

* The five phases (encode -> plan -> confirm -> decide -> apply) give exactly the clusters and
  keep/drop decisions of :func:`deduplicate` (the protocol in one call, the independent reference),
  on planted near-duplicates within and across clients and as a hypothesis property.
* Hostile payloads on both sides (wrong dtypes/shapes, inflated counts, foreign client ids,
  NaN/Inf, out-of-range or self-pair indices, decisions for other records) give PayloadError.
* Over Flower messages (real flwr Message/RecordDict objects, the real ClientApp handlers, each
  node reading its own file; only the transport is in-process here, the loopback deployment test
  runs it over the network): same decisions, a node that crashes or lies is left out (and the plan
  redone without it), the record lands in the step's facts, a resumed server sends the stored
  decisions without asking the nodes again.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustfl.config import RunConfig
from trustfl.defenses.dedup import DedupKey, deduplicate, key_for_run
from trustfl.defenses.dedup.distributed import records_digest
from trustfl.defenses.dedup.planted import plant_duplicates
from trustfl.defenses.dedup.wiring import DedupComponent
from trustfl.types.distributed import DistributedDataStep, Payload, PayloadError, check_payload, run_in_process

METHODS = ["exact", "lexical"]


def _config(methods=METHODS, num_clients=3, **dedup):
    return RunConfig.from_dict({"name": "fd", "seed": 7, "partition": {"num_clients": num_clients},
                                "federation": {"engine": "flower",
                                               "flower": {"min_clients": 1, "round_timeout": 30.0,
                                                          "connect_timeout": 1.0}},
                                "dedup": {"enabled": True, "methods": list(methods), **dedup}})


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    """The nodes' shared dedup key file (a deployment refuses to run dedup without one)."""
    path = tmp_path_factory.mktemp("dedup-key") / "dedup.key"
    DedupKey.generate().save(path)
    return str(path)


@pytest.fixture(scope="module")
def planted():
    """sms_spam texts over 3 clients with planted exact/typo/word-swap copies within and across clients."""
    from trustfl.data import load_dataset_source

    texts = list(load_dataset_source("sms_spam")["text"][:240])
    corpus = plant_duplicates(texts, counts={"exact": 12, "typo": 12, "word_swap": 8, "cross_client": 12},
                              n_clients=3, seed=5)
    by_client = {c: [t for t, k in zip(corpus.texts, corpus.client_id) if k == c] for c in range(3)}
    assert all(len(v) > 20 for v in by_client.values())
    return by_client


def _reference(texts, config):
    return deduplicate(texts, key_for_run(config.dedup.key_file, config.seed), config.dedup)


def _step_in_process(texts, config):
    step = DedupComponent(config)
    kept = run_in_process(step, {c: (list(t), None) for c, t in texts.items()})
    return step, kept


# ---------------------------------------------------------------------- equality with the one-call protocol
def test_phases_give_the_clusters_and_decisions_of_deduplicate(planted):
    config = _config()
    ref = _reference(planted, config)
    step, kept = _step_in_process(planted, config)
    assert step.result.clusters == ref.clusters
    assert step.result.params == ref.params and "lexical" in ref.params  # the same record of how (FAISS facts too)
    assert step.result.pairs.method.tolist() == ref.pairs.method.tolist()
    assert len(ref.clusters) >= 20 and any(len({c for c, _ in cl}) > 1 for cl in ref.clusters)
    for c, texts in planted.items():
        assert kept[c][0] == [t for t, k in zip(texts, ref.keep[c]) if k]
    summary = step.summary
    assert summary["dropped"] == ref.num_dropped and summary["clusters"] == len(ref.clusters)
    assert summary["cluster_ids"] == [[[c, i] for c, i in cl] for cl in ref.clusters]
    assert summary["dropped_indices"] == {str(c): np.flatnonzero(~m).tolist() for c, m in ref.keep.items()}
    blob = json.dumps(summary)
    assert not any(t in blob for ts in planted.values() for t in ts if len(t) > 12)  # ids and counts, no text


def test_phases_without_confirmation_match_too(planted):
    config = _config(confirm=False, jaccard_threshold=0.6)
    ref = _reference(planted, config)
    step, _ = _step_in_process(planted, config)
    assert step.result.clusters == ref.clusters and step.result.candidates == ref.candidates


WORDS = ["free", "prize", "call", "now", "win", "cash", "see", "you", "at", "noon", "mum", "home", "late", "ok"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=7), min_size=1, max_size=8),
                min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_property_phases_equal_deduplicate(clients, rnd):
    texts = {c: [" ".join(ws) for ws in recs] for c, recs in enumerate(clients)}
    for c in texts:  # copies across clients with case/punctuation edits
        if rnd.random() < 0.5 and len(texts) > 1:
            other = rnd.choice([k for k in texts if k != c])
            texts[c].append(rnd.choice(texts[other]).upper() + "!")
    config = _config(num_clients=len(texts))
    ref = _reference(texts, config)
    try:
        step, kept = _step_in_process(texts, config)
    except Exception as exc:  # the same refusal (a client left with nothing) on both paths
        assert "would train on nothing" in str(exc)
        assert any(len(m) and not m.any() for m in ref.keep.values())
        return
    assert step.result.clusters == ref.clusters
    for c in texts:
        assert kept[c][0] == [t for t, k in zip(texts[c], ref.keep[c]) if k]


@pytest.mark.parametrize("texts", [{0: ["free prize now"]}, {0: ["free prize now", "FREE prize now!"], 1: []},
                                   {0: [], 1: ["see you at noon"], 2: ["See you at noon.", "ok mum"]}])
def test_empty_and_one_element_clients(texts):
    config = _config(num_clients=len(texts))
    ref = _reference(texts, config)
    step, kept = _step_in_process(texts, config)
    assert step.result.clusters == ref.clusters
    for c in texts:
        assert kept[c][0] == [t for t, k in zip(texts[c], ref.keep[c]) if k]


@pytest.mark.integration  # MiniLM embeddings (real offline weights)
def test_semantic_phases_equal_deduplicate(planted):
    texts = {c: t[:30] for c, t in planted.items()}
    texts[1] = texts[1] + ["Congratulations, you have won a free prize! Call now to claim it."]
    texts[2] = texts[2] + ["You won a free prize, congratulations! Claim it by calling now."]
    config = _config(methods=["exact", "lexical", "semantic"], semantic_threshold=0.85)
    ref = _reference(texts, config)
    step, kept = _step_in_process(texts, config)
    assert step.result.clusters == ref.clusters and ref.counts()["pairs"].get("semantic", 0) >= 1
    assert step.result.params["semantic"] == ref.params["semantic"]
    for c in texts:
        assert kept[c][0] == [t for t, k in zip(texts[c], ref.keep[c]) if k]


def test_local_engine_component_is_a_distributed_step():
    assert isinstance(DedupComponent(_config()), DistributedDataStep)


# ---------------------------------------------------------------------- hostile payloads
@pytest.fixture()
def encoded(planted):
    step = DedupComponent(_config())
    return step, {c: step.encode(c, t) for c, t in planted.items()}


def _with(payload, arrays=None, **meta):
    return Payload(arrays={**payload.arrays, **(arrays or {})}, meta={**payload.meta, **meta})


def test_server_refuses_malformed_codes(encoded):
    step, enc = encoded
    p = enc[1]
    n = p.meta["n"]
    step.check_encoded(1, p)
    bad = {
        "foreign client id": _with(p, client_id=2),
        "bool client id": _with(p, client_id=True),
        "inflated count": _with(p, n=n * 1000),
        "negative count": _with(p, n=-1),
        "count beyond the limit": _with(p, n=10**12),
        "float count": _with(p, n=float(n)),
        "wrong dtype": _with(p, {"minhash": p.arrays["minhash"].astype(np.int64)}),
        "wrong width": _with(p, {"exact": p.arrays["exact"][:, :8]}),
        "too few rows": _with(p, {"exact": p.arrays["exact"][:-1]}),
        "one-element": _with(p, {"exact": p.arrays["exact"][:1]}),
        "extra array": _with(p, {"embeddings": np.zeros((n, 4), np.float32)}),
        "missing array": Payload(arrays={"exact": p.arrays["exact"]}, meta=p.meta),
        "other parameters": _with(p, params={**p.meta["params"], "ngram": 3}),
        "no key id": _with(p, key_id=""),
        "params not an object": _with(p, params=[1, 2]),
    }
    for why, payload in bad.items():
        with pytest.raises(PayloadError):
            step.check_encoded(1, payload)
            pytest.fail(why)


def test_generic_payload_form_checks():
    with pytest.raises(PayloadError, match="dtype object"):
        check_payload(Payload(arrays={"x": np.array(["free prize"], dtype=object)}), what="t")
    with pytest.raises(PayloadError, match="dtype <U"):
        check_payload(Payload(arrays={"x": np.array(["free prize"])}), what="t")
    with pytest.raises(PayloadError, match="3 dims"):
        check_payload(Payload(arrays={"x": np.zeros((1, 1, 1), np.uint8)}), what="t")
    with pytest.raises(PayloadError, match="finite"):
        check_payload(Payload(meta={"n": float("nan")}), what="t")
    with pytest.raises(PayloadError, match="finite"):
        check_payload(Payload(meta={"n": float("inf")}), what="t")
    with pytest.raises(PayloadError, match="limit"):
        check_payload(Payload(arrays={"x": np.zeros(100, np.uint8)}), what="t", max_bytes=10)
    with pytest.raises(PayloadError, match="not a numpy array"):
        check_payload(Payload(arrays={"x": [1, 2]}), what="t")
    with pytest.raises(PayloadError, match="expected a Payload"):
        check_payload({"arrays": {}}, what="t")
    p = Payload(arrays={"drop": np.array([1, 5], np.int64), "m": np.full((2, 2), np.finfo(np.float32).max)},
                meta={"n": 3})
    back = Payload.from_json(json.loads(json.dumps(p.to_json())))
    assert back.meta == p.meta and all(np.array_equal(back.arrays[k], p.arrays[k]) for k in p.arrays)
    for doc in ({"meta": {}}, {"meta": {}, "arrays": {"x": {"dtype": "object", "shape": [1], "data": ""}}},
                {"meta": {}, "arrays": {"x": {"dtype": "int64", "shape": [3], "data": "AAAA"}}}, [1, 2]):
        with pytest.raises(PayloadError):
            Payload.from_json(doc)


def test_node_refuses_malformed_queries(planted, encoded):
    step, enc = encoded
    queries = step.plan(enc)
    assert queries, "the planted corpus has within-client candidates to confirm"
    cid, q = next(iter(queries.items()))
    texts = planted[cid]
    answer = step.confirm(cid, texts, q)
    step.check_answer(cid, q, answer)
    method = next(k for k in q.arrays if k.endswith(".i")).rsplit(".", 1)[0]
    i, j = q.arrays[f"{method}.i"], q.arrays[f"{method}.j"]
    bad = {
        "other client": _with(q, client_id=cid + 1),
        "other count": _with(q, n=len(texts) + 1),
        "index out of range": _with(q, {f"{method}.j": np.full_like(j, len(texts))}),
        "negative index": _with(q, {f"{method}.i": np.full_like(i, -1)}),
        "self pair": _with(q, {f"{method}.j": i.copy()}),
        "float indices": _with(q, {f"{method}.i": i.astype(np.float64)}),
        "unequal lengths": _with(q, {f"{method}.i": i[:-1]}) if len(i) > 1 else _with(q, {f"{method}.i": i[:0]}),
        "unknown method": _with(q, {"fuzzy.i": i}),
    }
    for why, query in bad.items():
        with pytest.raises(PayloadError):
            step.confirm(cid, texts, query)
            pytest.fail(why)


def test_server_refuses_malformed_answers(planted, encoded):
    step, enc = encoded
    queries = step.plan(enc)
    cid, q = next(iter(queries.items()))
    a = step.confirm(cid, planted[cid], q)
    name = next(k for k in a.arrays if k.endswith(".score"))
    ok = name.replace(".score", ".ok")
    bad = {
        "foreign id": _with(a, client_id=cid + 1),
        "NaN score": _with(a, {name: np.full_like(a.arrays[name], np.nan)}),
        "Inf score": _with(a, {name: np.full_like(a.arrays[name], np.inf)}),
        "float32-max score": _with(a, {name: np.full_like(a.arrays[name], np.finfo(np.float32).max)}),
        "short": _with(a, {ok: a.arrays[ok][:-1]}),
        "ok as ints": _with(a, {ok: a.arrays[ok].astype(np.int64)}),
        "missing": Payload(arrays={k: v for k, v in a.arrays.items() if k != ok}, meta=a.meta),
    }
    for why, answer in bad.items():
        with pytest.raises(PayloadError):
            step.check_answer(cid, q, answer)
            pytest.fail(why)


def test_node_refuses_a_decision_for_other_records(planted):
    config = _config()
    step, kept = _step_in_process(planted, config)
    d = step.decisions[1]
    texts = planted[1]
    assert step.apply(1, texts, d) == kept[1][0]
    n = len(texts)
    bad = {
        "other client": _with(d, client_id=0),
        "other count": _with(d, n=n + 5),
        "other records": _with(d, digest=records_digest(texts[:-1], key_for_run(None, config.seed))),
        "drop everything": _with(d, {"drop": np.arange(n, dtype=np.int64)}),
        "out of range": _with(d, {"drop": np.array([n], np.int64)}),
        "repeated": _with(d, {"drop": np.array([0, 0], np.int64)}),
        "keep mask instead": Payload(arrays={"keep": np.ones(n, bool)}, meta=d.meta),
    }
    for why, decision in bad.items():
        with pytest.raises(PayloadError):
            step.apply(1, texts, decision)
            pytest.fail(why)
    with pytest.raises(PayloadError, match="other records"):  # a node whose file changed since encode
        step.apply(1, texts[:-1] + ["a new record"], d)


def test_key_mismatch_and_empty_input_are_clear_errors(planted):
    from trustfl.defenses.dedup import DedupError

    step = DedupComponent(_config())
    enc = {c: step.encode(c, t) for c, t in planted.items()}
    other = DedupComponent(_config())
    other._key = DedupKey.from_passphrase("another key")
    enc[2] = other.encode(2, planted[2])
    step.check_encoded(2, enc[2])  # well-formed...
    with pytest.raises(DedupError, match="different dedup keys"):
        step.plan(enc)  # ...but under another key: dedup cannot be completed
    checked = DedupComponent(_config())  # the server keeps the nodes under the majority's key
    for c in enc:
        checked.check_encoded(c, enc[c])
    odd = checked.check_encoded_together(enc)
    assert list(odd) == [2] and "clients [0, 1]" in odd[2] and "same dedup.key_file" in odd[2]
    assert "\n" not in odd[2]
    first = {0: enc[2], 1: enc[0], 2: enc[1]}  # the odd node's reply is checked first: still the only one left out
    assert list(checked.check_encoded_together(first)) == [0]
    assert checked.check_encoded_together({0: enc[0], 1: enc[1]}) == {}
    with pytest.raises(DedupError, match="split evenly .* same dedup.key_file"):  # 1 vs 1: no key to trust
        checked.check_encoded_together({0: enc[0], 2: enc[2]})
    with pytest.raises(DedupError, match="no client"):
        step.plan({})
    with pytest.raises(DedupError, match="decide"):
        DedupComponent(_config()).decide({})


def test_resume_state_round_trip(planted, key_file):
    step = DedupComponent(_config(key_file=key_file))
    step.defer_to_nodes()
    assert step.prepare_clients(type("D", (), {"splits": {0: ([1], None)}})()) == {0: ([1], None)}
    assert step.state_dict() == {} and step.manifest() == {} and step.manifest_update() == {}
    ref = DedupComponent(_config())
    run_in_process(ref, {c: (t, None) for c, t in planted.items()})
    step.result = ref.result
    step.record_decision(ref.decisions, excluded={3: "encode: crashed"}, facts={"engine": "flower"})
    state = json.loads(json.dumps(step.state_dict()))
    again = DedupComponent(_config(key_file=key_file))
    again.defer_to_nodes()
    again.load_state_dict(state)
    assert again.excluded == {3: "encode: crashed"} and again.summary == step.summary
    for c, p in step.decisions.items():
        assert np.array_equal(again.decisions[c].arrays["drop"], p.arrays["drop"]) and again.decisions[c].meta == p.meta
    local = DedupComponent(_config())
    with pytest.raises(ValueError, match="remote nodes"):
        local.load_state_dict(state)
    with pytest.raises(ValueError, match="does not load"):
        again.load_state_dict({"decisions": {"0": {"meta": {}, "arrays": {"drop": "x"}}}, "excluded": {},
                               "summary": {}})


# ---------------------------------------------------------------------- over Flower messages
flwr = pytest.importorskip("flwr")

from flower_nodes import InProcessGrid  # noqa: E402  (after the importorskip)


def _node_files(tmp_path, texts):
    files = []
    for c, ts in sorted(texts.items()):
        path = tmp_path / f"node_{c}.jsonl"
        path.write_text("".join(json.dumps({"text": t, "label": 0, "holdout": False}) + "\n" for t in ts))
        files.append(path)
    return [{"client-id": c, "data-file": str(f)} for c, f in enumerate(files)]


def _drive(config, grid):
    from trustfl.federation.flower.data_step import run_data_steps
    from trustfl.federation.flower.engine import FlowerEngine

    engine = FlowerEngine(grid, config=config)
    step = DedupComponent(config)
    step.defer_to_nodes()
    run_data_steps(engine, [step], range(config.partition.num_clients))
    return engine, step


def test_over_flower_messages_same_decisions_as_deduplicate(planted, tmp_path, key_file):
    config = _config(key_file=key_file)
    grid = InProcessGrid(_node_files(tmp_path, planted))
    engine, step = _drive(config, grid)
    ref = _reference(planted, config)
    assert step.result.clusters == ref.clusters
    assert step.summary["nodes"] == {"decided": [0, 1, 2], "left_out": {}}
    for c in planted:
        assert engine.decisions[c]["dedup"].arrays["drop"].tolist() == np.flatnonzero(~ref.keep[c]).tolist()
    assert engine.left_out == {}
    phases = [m.content.config_records["step"]["phase"] for _, t, m in grid.sent if "step" in m.content.config_records]
    assert phases.count("encode") == 3 and 1 <= phases.count("confirm") <= 3
    for _, _, m in grid.sent:  # the server sent no text; codes travel node -> server only
        blob = json.dumps({k: dict(v) for k, v in m.content.config_records.items()})
        assert not any(t in blob for ts in planted.values() for t in ts if len(t) > 12)
    # the train message carries the decision; the node applies it to its own file
    from trustfl.federation.flower.data_step import attach_decisions, decode_decisions

    content = attach_decisions(flwr.app.RecordDict(), engine.decisions[1])
    got = decode_decisions(content)["dedup"]
    assert step.apply(1, planted[1], got) == [t for t, k in zip(planted[1], ref.keep[1]) if k]


def test_a_node_that_crashes_or_lies_is_left_out_and_the_plan_redone(planted, tmp_path, key_file):
    config = _config(key_file=key_file)
    grid = InProcessGrid(_node_files(tmp_path, planted))
    grid.crash[100] = "confirm"  # client 0 crashes while confirming: it held the kept copy of cross-client clusters

    def inflate(message, reply, phase):  # client 2 claims 10x its records
        from trustfl.federation.flower.data_step import payload_from_records, payload_to_records

        if phase != "encode":
            return reply
        p, rec = payload_from_records(reply.content, "step.reply", what="t")
        forged = Payload(arrays=p.arrays, meta={**p.meta, "n": p.meta["n"] * 10})
        return flwr.app.Message(flwr.app.RecordDict(payload_to_records(forged, "step.reply", client_id=2,
                                                                       phase="encode")), reply_to=message)

    grid.tamper[102] = inflate
    engine, step = _drive(config, grid)
    left = step.summary["nodes"]["left_out"]
    assert sorted(left) == ["0", "2"]
    assert left["0"].startswith("confirm: crashed") and "fell over" in left["0"]
    assert left["2"].startswith("encode: invalid reply") and "records claimed" in left["2"]
    ref = _reference({1: planted[1]}, config)  # the survivor's records alone decide
    assert step.result.clusters == ref.clusters and sorted(engine.decisions) == [1]
    assert engine.left_out[0].startswith("data step 'dedup': confirm: crashed")
    # the Flower round then drops clients without a decision, with the reason
    import torch

    from trustfl.federation.flower.engine import EngineError

    with pytest.raises(EngineError, match="0 of 2 sampled clients replied"):  # neither has a decision: not sent
        engine.fit(1, [0, 2], torch.zeros(4))
    assert set(engine.dropped) == {0, 2} and "data step 'dedup'" in engine.dropped[2]


def test_too_few_nodes_is_one_clear_error(planted, tmp_path, key_file):
    from trustfl.federation.flower.engine import EngineError

    config = RunConfig.from_dict({**_config(key_file=key_file).to_dict(), "federation": {
        "engine": "flower", "flower": {"min_clients": 3, "round_timeout": 30.0, "connect_timeout": 1.0}}})
    grid = InProcessGrid(_node_files(tmp_path, planted))
    grid.crash[101] = "silent-encode"  # client 1 never answers
    with pytest.raises(EngineError, match=r"2 of 3 clients left, fewer than federation.flower.min_clients = 3"):
        _drive(config, grid)


def test_garbage_records_are_refused_by_the_codec():
    import flwr.app as app

    from trustfl.federation.flower.data_step import payload_from_records, payload_to_records

    good = payload_to_records(Payload(arrays={"x": np.arange(3, dtype=np.int64)}, meta={"n": 3}), "p", client_id=0)
    back, rec = payload_from_records(app.RecordDict(good), "p", what="t")
    assert back.arrays["x"].tolist() == [0, 1, 2] and rec["client_id"] == 0
    cases = {
        "no record": app.RecordDict(),
        "meta not JSON": app.RecordDict({**good, "p": app.ConfigRecord({"meta": "{oops"})}),
        "meta NaN": app.RecordDict({**good, "p": app.ConfigRecord({"meta": '{"n": NaN}'})}),
        "meta a list": app.RecordDict({**good, "p": app.ConfigRecord({"meta": "[1]"})}),
        "meta not str": app.RecordDict({**good, "p": app.ConfigRecord({"meta": 3})}),
        "no arrays": app.RecordDict({"p": good["p"]}),
        "3-d array": app.RecordDict({**good, "p.arrays": app.ArrayRecord({"x": app.Array(np.zeros((1, 1, 1)))})}),
    }
    bad_bytes = app.Array(dtype="int64", shape=(3,), stype="numpy.ndarray", data=b"\x00garbage")
    cases["corrupt bytes"] = app.RecordDict({**good, "p.arrays": app.ArrayRecord({"x": bad_bytes})})
    for why, content in cases.items():
        with pytest.raises(PayloadError):
            payload_from_records(content, "p", what="t")
            pytest.fail(why)


def test_resumed_server_sends_stored_decisions_without_asking(planted, tmp_path, key_file):
    config = _config(key_file=key_file)
    grid = InProcessGrid(_node_files(tmp_path, planted))
    _, first = _drive(config, grid)
    state = json.loads(json.dumps(first.state_dict()))
    from trustfl.federation.flower.data_step import run_data_steps
    from trustfl.federation.flower.engine import FlowerEngine

    fresh = InProcessGrid(_node_files(tmp_path, planted))
    step = DedupComponent(config)
    step.defer_to_nodes()
    step.load_state_dict(state)
    engine = FlowerEngine(fresh, config=config)
    run_data_steps(engine, [step], range(3))
    assert fresh.sent == []  # nothing re-run on the nodes
    for c in planted:
        assert engine.decisions[c]["dedup"].arrays["drop"].tolist() == \
            first.decisions[c].arrays["drop"].tolist()
    assert step.manifest_update() == {"dedup": first.summary}


def test_node_refuses_steps_it_cannot_run(planted, tmp_path, key_file):
    import flwr.app as app

    from trustfl.federation.flower.data_step import handle_step, payload_to_records

    nodes = _node_files(tmp_path, planted)
    cfg = json.dumps(_config(key_file=key_file).to_dict())
    ask = lambda **f: app.RecordDict(payload_to_records(Payload(meta={}), "step", **f))  # noqa: E731
    with pytest.raises(PayloadError, match="phase"):
        handle_step(ask(phase="train", component="dedup", client_id=0, config=cfg), nodes[0])
    with pytest.raises(Exception, match="not client 1"):
        handle_step(ask(phase="encode", component="dedup", client_id=1, config=cfg), nodes[0])
    with pytest.raises(Exception, match="no distributed data step named 'dp'"):
        handle_step(ask(phase="encode", component="dp", client_id=0, config=cfg), nodes[0])
    reply = handle_step(ask(phase="encode", component="dedup", client_id=0, config=cfg), nodes[0])
    arrays = reply.array_records["step.reply.arrays"]
    assert sorted(arrays.keys()) == ["exact", "minhash"]  # codes only
    assert all(arrays[k].dtype in ("uint8", "uint32") for k in arrays.keys())


def test_a_deployment_refuses_dedup_without_a_shared_key_file(planted, tmp_path, key_file):
    """Without dedup.key_file the key derives from the run seed the server holds: refused on the server and
    on each node; a node whose key file is missing refuses instead of making its own key."""
    import flwr.app as app

    from trustfl.errors import ConfigError
    from trustfl.federation.flower.data_step import handle_step, payload_to_records
    from trustfl.text import TextError

    with pytest.raises(ConfigError, match=r"^dedup.key_file: a deployment .* the server knows") as err:
        DedupComponent(_config()).defer_to_nodes()  # what the ServerApp calls before round 1
    assert "\n" not in str(err.value)
    nodes = _node_files(tmp_path, planted)
    ask = lambda cfg: app.RecordDict(payload_to_records(Payload(meta={}), "step", phase="encode",  # noqa: E731
                                                        component="dedup", client_id=0,
                                                        config=json.dumps(cfg.to_dict())))
    with pytest.raises(ConfigError, match="dedup.key_file"):  # a server that sends no key file: the node refuses
        handle_step(ask(_config()), nodes[0])
    missing = tmp_path / "no-such.key"
    with pytest.raises(TextError, match="does not exist"):
        handle_step(ask(_config(key_file=str(missing))), nodes[0])
    assert not missing.exists()  # no key of its own, which would match no other node's codes
    local = DedupComponent(_config())  # the local engine (and a simulation) keep the seed-derived key
    assert local.key == key_for_run(None, 7)


def test_a_node_under_another_key_is_left_out(planted, tmp_path, key_file):
    config = _config(key_file=key_file)
    grid = InProcessGrid(_node_files(tmp_path, planted))
    stranger = DedupComponent(_config())
    stranger._key = DedupKey.from_passphrase("a key of its own")

    def own_key(message, reply, phase):  # client 2's node made its codes under another key
        from trustfl.federation.flower.data_step import payload_to_records

        if phase != "encode":
            return reply
        return flwr.app.Message(flwr.app.RecordDict(payload_to_records(stranger.encode(2, planted[2]), "step.reply",
                                                                       client_id=2, phase="encode")),
                                reply_to=message)

    grid.tamper[102] = own_key
    engine, step = _drive(config, grid)  # no DedupError: the step goes on without that node
    left = step.summary["nodes"]["left_out"]
    assert list(left) == ["2"] and left["2"].startswith("encode: codes made under dedup key id")
    assert "clients [0, 1]" in left["2"]  # the majority's key, whatever order the replies came in
    ref = _reference({0: planted[0], 1: planted[1]}, config)
    assert step.result.clusters == ref.clusters and sorted(engine.decisions) == [0, 1]
