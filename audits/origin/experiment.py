"""End to end from a run config: federated fine-tuning -> synthetic samples -> every origin check.

``run_origin_experiment`` (``trustfl origin --config FILE --out DIR``):

1. trains the run of the config's run tables into ``DIR/run`` (a complete run there is reused,
   an interrupted one resumed);
2. rebuilds the final global model from that run directory alone (:func:`load_run_model`)
   and samples ``num_samples`` synthetic texts (``DIR/synthetic.jsonl``);
3. reads the clients' train and holdout records and the test records back by the row ids in
   the run manifest, and runs copy detection (synthetic vs train), the DCR tests (synthetic
   vs train, holdout as control) and model attribution (G = the run's model, reference = the
   base FM, human = real test records);
4. writes ``DIR/report.json`` and ``DIR/report.md`` after every stage (``status`` says which
   stages are done), so an error late in the pipeline keeps what earlier stages found.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from trustfl.audits.origin.attribution import attribute, attribution_scores
from trustfl.audits.origin.copies import CopyThresholds, detect_copies
from trustfl.audits.origin.corpus import TextCorpus
from trustfl.audits.origin.dcr import dcr_test
from trustfl.audits.origin.errors import OriginError
from trustfl.audits.origin.likelihood import load_run_model
from trustfl.audits.origin.report import OriginReport, write_text_atomic
from trustfl.audits.origin.sampling import sample_texts
from trustfl.audits.origin.settings import OriginSettings

__all__ = ["client_records", "origin_key", "run_origin_experiment"]


def origin_key(settings: OriginSettings, seed: int) -> Any:
    """Key of the keyed codes: ``settings.key_file`` (created if missing), else derived from the seed."""
    from trustfl.text import key_for_run

    return key_for_run(settings.key_file, seed, purpose="origin")


def client_records(run_dir: str | Path) -> tuple[TextCorpus, TextCorpus, list[str]]:
    """``(train, holdout, test_texts)`` of a trustfl run, read back from its data source by manifest row ids."""
    from trustfl.config import RunConfig
    from trustfl.data import load_dataset_source
    from trustfl.rundir import RunDir

    run = RunDir(run_dir)
    cfg = RunConfig.from_dict(run.config)
    extra = run.manifest.get("extra", {})
    if "clients" not in extra or "test_rows" not in extra:
        raise OriginError(f"run {str(run_dir)!r}: the manifest has no client row ids (not written by "
                          "trustfl's Federation); pass --reference/--holdout files instead")
    ds = load_dataset_source(cfg.data.name, text_column=cfg.data.text_column, label_column=cfg.data.label_column)
    texts = ds["text"][:]
    train = {c: [texts[r] for r in v["train_rows"]] for c, v in extra["clients"].items()}
    hold = {c: [texts[r] for r in v["holdout_rows"]] for c, v in extra["clients"].items()}
    return (TextCorpus.from_clients(train, name="train"), TextCorpus.from_clients(hold, name="holdout"),
            [texts[r] for r in extra["test_rows"]])


def _run_finished(run_dir: Path, rounds: int) -> bool:
    if not (run_dir / "manifest.json").is_file():
        return False
    from trustfl.rundir import RunDir

    return RunDir(run_dir).completed_rounds >= rounds


def _check_same_config(run_dir: Path, run_config: Any) -> None:
    if not (run_dir / "manifest.json").is_file():
        return
    from trustfl.rundir import RunDir

    recorded = RunDir(run_dir).config
    if recorded != json.loads(json.dumps(run_config.to_dict())):
        diff = sorted(k for k in set(recorded) | set(run_config.to_dict())
                      if recorded.get(k) != json.loads(json.dumps(run_config.to_dict().get(k))))
        raise OriginError(f"{run_dir} holds a run with a different config (sections {diff}); use another --out "
                          "or delete that folder")


def run_origin_experiment(run_config: Any, settings: OriginSettings, out_dir: str | Path, *,
                          progress: bool = True, log: Any = print) -> OriginReport:
    """Train (or reuse) the run, sample synthetic texts, run all checks; write the report after every stage.

    Raises:
        OriginError / ConfigError / RunDirError: bad inputs; earlier report files stay in place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if settings.threads is not None:
        import torch

        torch.set_num_threads(settings.threads)
    seed = run_config.seed if settings.seed is None else settings.seed
    report = OriginReport(settings=settings.to_dict(), status="partial: training")
    t_all = time.perf_counter()

    def stage_done(name: str, t0: float, status: str) -> None:
        report.seconds[name] = time.perf_counter() - t0
        report.seconds["total_s"] = time.perf_counter() - t_all
        report.status = status
        report.write(out)

    # 1. the federated run
    t0 = time.perf_counter()
    run_dir = out / "run"
    _check_same_config(run_dir, run_config)
    if _run_finished(run_dir, run_config.federation.rounds):
        log(f"reusing the finished run in {run_dir}")
        history: list[dict[str, Any]] = []
    else:
        from trustfl.federation import Federation

        resume = (run_dir / "manifest.json").is_file()
        summary = Federation(run_config, out_dir=run_dir, resume=resume, progress=progress).run()
        history = summary.history
    from trustfl.rundir import RunDir

    metrics = RunDir(run_dir).metrics() if not history else history
    report.run = {"run_dir": str(run_dir), "rounds": len(metrics),
                  "eval": [m.get("eval", {}) for m in metrics],
                  "train_loss": [round(float(m["train_loss"]), 4) for m in metrics]}
    stage_done("train_s", t0, "partial: sampling")

    # 2. sample from the final global model
    t0 = time.perf_counter()
    model, tokenizer, _ = load_run_model(run_dir)
    train, holdout, test_texts = client_records(run_dir)
    first = None
    if settings.first_token == "test":
        first = [ids[0] for ids in tokenizer(test_texts, add_special_tokens=False)["input_ids"] if ids]
    synthetic = sample_texts(model, tokenizer, num_samples=settings.num_samples,
                             max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                             top_k=settings.top_k, top_p=settings.top_p, seed=seed,
                             batch_size=settings.sample_batch_size, first_tokens=first, progress=progress)
    write_text_atomic(out / "synthetic.jsonl",
                      "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in synthetic))
    report.run["sampling"] = {"num_samples": len(synthetic), "max_new_tokens": settings.max_new_tokens,
                              "first_token": settings.first_token,
                              "temperature": settings.temperature, "top_k": settings.top_k, "top_p": settings.top_p,
                              "file": str(out / "synthetic.jsonl")}
    stage_done("sample_s", t0, "partial: copies")

    # 3. copies and DCR against the clients' records
    t0 = time.perf_counter()
    syn = TextCorpus.from_texts(synthetic, clients=["synthetic"] * len(synthetic), name="synthetic")
    report.inputs = {"synthetic": len(syn), "train": len(train), "holdout": len(holdout),
                     "clients": len(set(train.clients)), "test": len(test_texts), "data": run_config.data.name}
    key = origin_key(settings, seed)
    need_emb = "embedding" in settings.methods or "embedding" in settings.dcr_spaces
    emb: dict[str, np.ndarray] = {}
    if need_emb:
        from trustfl.text import embed_texts

        for name, corpus in (("synthetic", syn), ("train", train), ("holdout", holdout)):
            emb[name] = embed_texts(list(corpus.texts), settings.embed_model, progress=progress)
    report.copies = detect_copies(syn, train, methods=settings.methods, key=key, num_perm=settings.num_perm,
                                  ngram=settings.ngram, embed_model=settings.embed_model,
                                  thresholds=CopyThresholds(lcs_chars=settings.lcs_chars,
                                                            jaccard=settings.jaccard_threshold,
                                                            cosine=settings.cosine_threshold),
                                  synthetic_embeddings=emb.get("synthetic"), reference_embeddings=emb.get("train"))
    stage_done("copies_s", t0, "partial: dcr")
    t0 = time.perf_counter()
    for space in settings.dcr_spaces:
        if space == "embedding":
            report.dcr.append(dcr_test(emb["synthetic"], emb["train"], emb["holdout"], space="embedding"))
        else:
            from trustfl.text import KeyedMinHash

            mh = KeyedMinHash(key, num_perm=settings.num_perm, shingle="char", ngram=settings.ngram)
            report.dcr.append(dcr_test(mh.signatures(syn.texts), mh.signatures(train.texts),
                                       mh.signatures(holdout.texts), space="minhash"))
    if report.dcr:
        from trustfl.audits.origin.plot import plot_dcr

        plot_dcr(report.dcr, out / "dcr.png")
        report.figures["dcr"] = "dcr.png"
    stage_done("dcr_s", t0, "partial: attribution")

    # 4. attribution: G (the run's model) vs the base FM, on generated vs real held-out texts
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    human = [test_texts[i] for i in np.sort(rng.permutation(len(test_texts))[:settings.num_human])]
    if settings.attribution_scores:
        # with first_token = "test" the first token was not G's choice: it conditions but is not scored
        scores = attribution_scores(model, tokenizer, synthetic + human, scores=settings.attribution_scores,
                                    max_length=settings.score_max_length,
                                    skip_first=1 if settings.first_token == "test" else 0, progress=progress)
        report.attribution = [attribute(v[:len(synthetic)], v[len(synthetic):], score=name,
                                        calibration_fraction=settings.calibration_fraction, seed=seed)
                              for name, v in scores.items()]
    report.inputs["human"] = len(human)
    stage_done("attribution_s", t0, "complete")
    return report
