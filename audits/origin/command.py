"""``trustfl origin``: synthetic-data origin checks on files, or end to end from a run config.

File mode compares synthetic records with reference (training) files, optionally runs the
DCR test against holdout files and model attribution against a run directory's model;
config mode (``--config``) trains, samples and checks (:mod:`.experiment`). Reports hold
ids and scores only; a few flagged examples (with text) are printed to the terminal.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from trustfl.audits.origin.errors import OriginError
from trustfl.config import parse_override

__all__ = ["add_parser", "run_cli"]


def add_parser(sub: Any, handler: Any) -> None:
    """Register the ``origin`` sub-command on an argparse sub-parser collection."""
    p = sub.add_parser("origin", help="synthetic-data origin checks: copies, DCR test, model attribution",
                       description="Flag synthetic records that copy reference records (exact, LCS >= N chars, "
                                   "MinHash, embedding cosine), run the distance-to-closest-record test against a "
                                   "holdout, and attribute texts to a fine-tuned model (docs/origin.md).")
    p.add_argument("--config", default=None, help="run config with an [origin] table (end to end: train, sample, "
                                                   "check; see examples/synthetic_origin.toml)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", type=parse_override,
                   help="with --config: override a value, e.g. --set origin.num_samples=50 (repeatable)")
    p.add_argument("--synthetic", nargs="+", default=None, help="synthetic records (.csv/.json/.jsonl/.txt)")
    p.add_argument("--reference", nargs="+", default=None,
                   help="reference (training) records: one file per client, or one file with --client-column")
    p.add_argument("--holdout", nargs="+", default=None, help="holdout records (never trained on) for the DCR test")
    from trustfl.audits.origin.settings import file_mode_default as d

    p.add_argument("--text-column", default="text", help="text column of .csv/.json/.jsonl files (default: text)")
    p.add_argument("--client-column", default=None,
                   help="column of the --reference file holding each record's client (the DCR test pools all "
                        "holdout records) (default: none: each reference file is one client)")
    p.add_argument("--methods", default=d("methods"),
                   help=f"copy criteria, comma list of exact,lcs,minhash,embedding (default: {d('methods')})")
    p.add_argument("--lcs-chars", type=int, default=d("lcs_chars"),
                   help=f"LCS length (characters) that is a copy (default: {d('lcs_chars')})")
    p.add_argument("--jaccard-threshold", type=float, default=d("jaccard_threshold"),
                   help=f"MinHash Jaccard that is a copy (default: {d('jaccard_threshold')})")
    p.add_argument("--cosine-threshold", type=float, default=d("cosine_threshold"),
                   help=f"embedding cosine that is a copy (default: {d('cosine_threshold')})")
    p.add_argument("--num-perm", type=int, default=d("num_perm"),
                   help=f"MinHash signature length (default: {d('num_perm')})")
    p.add_argument("--ngram", type=int, default=d("ngram"),
                   help=f"MinHash character shingle size (default: {d('ngram')})")
    p.add_argument("--embed-model", default=d("embed_model"),
                   help=f"encoder for embeddings (default: {d('embed_model')}, offline)")
    p.add_argument("--dcr-space", default=d("dcr_spaces"),
                   help=f"DCR distances (with --holdout): comma list of embedding,minhash "
                        f"(default: {d('dcr_spaces')})")
    p.add_argument("--model-run", default=None, metavar="RUN_DIR",
                   help="attribution: the run whose final model is G (reference: its base FM); default: no "
                        "attribution")
    p.add_argument("--human", nargs="+", default=None, help="attribution: human-written texts (negatives); the "
                                                             "synthetic records are the known generated texts")
    p.add_argument("--attribution-scores", default=d("attribution_scores"),
                   help="attribution scores, comma list of curvature (Fast-DetectGPT under G), likelihood_ratio "
                        f"(G vs its base FM) (default: {d('attribution_scores')})")
    p.add_argument("--skip-first", type=int, default=0,
                   help="attribution: leave each text's first N tokens unscored (1 if samples were started from "
                        "given first tokens) (default: 0)")
    p.add_argument("--key-file", default=None, help="key of the keyed codes (hex, 0600; created if missing) "
                                                     "(default: a fresh random key per invocation)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attribution calibration split (default: 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder (report.json, report.md)")
    p.add_argument("--all-records", action="store_true", help="list every synthetic record's nearest references "
                                                              "and distances in the report, not only flagged ones")
    p.add_argument("--examples", type=int, default=3, help="flagged examples to print (with text) (default: 3)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=handler)


def _key(path: str | None) -> Any:
    from trustfl.text import TextKey

    return TextKey.generate() if path is None else TextKey.load_or_create(path)[0]


def _file_mode(args: argparse.Namespace, console: Any) -> int:
    from trustfl.audits.origin.copies import CopyThresholds, detect_copies, validate_copy_methods
    from trustfl.audits.origin.corpus import load_corpus, load_corpus_info
    from trustfl.audits.origin.dcr import dcr_test
    from trustfl.audits.origin.report import OriginReport, excerpt

    if not args.synthetic or not args.reference:
        raise OriginError("give --synthetic and --reference files (or --config FILE for the end-to-end mode)")
    if bool(args.model_run) != bool(args.human):
        raise OriginError("attribution needs both --model-run RUN_DIR and --human FILE (got only one)")
    methods = validate_copy_methods(args.methods)  # validate everything before reading files
    thresholds = CopyThresholds(lcs_chars=args.lcs_chars, jaccard=args.jaccard_threshold, cosine=args.cosine_threshold)
    spaces = [s.strip() for s in args.dcr_space.split(",") if s.strip()]
    bad = [s for s in spaces if s not in ("embedding", "minhash")]
    if bad or not spaces or len(set(spaces)) != len(spaces):
        raise OriginError(f"--dcr-space {args.dcr_space!r}: must be a comma list of embedding,minhash without repeats")
    score_names = [x.strip() for x in args.attribution_scores.split(",") if x.strip()]
    from trustfl.audits.origin.attribution import ATTRIBUTION_SCORES

    if not score_names or any(x not in ATTRIBUTION_SCORES for x in score_names) or len(set(score_names)) != len(score_names):
        raise OriginError(f"--attribution-scores {args.attribution_scores!r}: must be a comma list of "
                          f"{','.join(ATTRIBUTION_SCORES)} without repeats")
    if args.skip_first < 0:
        raise OriginError(f"--skip-first must be >= 0, got {args.skip_first}")
    if args.num_perm < 8 or args.ngram < 1:
        raise OriginError(f"--num-perm must be >= 8 and --ngram >= 1, got {args.num_perm}, {args.ngram}")
    t_all = time.perf_counter()
    syn = load_corpus(args.synthetic, text_column=args.text_column, name="synthetic")
    ref, ref_info = load_corpus_info(args.reference, text_column=args.text_column,
                                     client_column=args.client_column, name="reference")
    hold = load_corpus(args.holdout, text_column=args.text_column, name="holdout") if args.holdout else None
    human = load_corpus(args.human, text_column=args.text_column, name="human") if args.human else None
    key = _key(args.key_file)
    report = OriginReport(inputs={"synthetic": {"files": args.synthetic, "records": len(syn)},
                                  "reference": {"files": args.reference, "records": len(ref),
                                                "clients": len(set(ref.clients)), "per_client": ref_info.clients}},
                          settings={"methods": list(methods), "thresholds": vars(thresholds).copy(),
                                    "num_perm": args.num_perm, "ngram": args.ngram, "embed_model": args.embed_model,
                                    "dcr_spaces": spaces if hold else [], "key_id": key.key_id},
                          status="partial: copies", notes=ref_info.notes("reference"))
    emb: dict[str, Any] = {}
    if "embedding" in methods or (hold is not None and "embedding" in spaces):
        from trustfl.text import embed_texts

        for name, c in (("synthetic", syn), ("reference", ref), ("holdout", hold)):
            if c is not None:
                emb[name] = embed_texts(list(c.texts), args.embed_model, progress=not args.quiet)
    t0 = time.perf_counter()
    report.copies = detect_copies(syn, ref, methods=methods, thresholds=thresholds, key=key, num_perm=args.num_perm,
                                  ngram=args.ngram, embed_model=args.embed_model,
                                  synthetic_embeddings=emb.get("synthetic"), reference_embeddings=emb.get("reference"))
    report.seconds["copies_s"] = time.perf_counter() - t0
    report.write(args.out, per_record=args.all_records)
    if hold is not None:
        report.inputs["holdout"] = {"files": args.holdout, "records": len(hold)}
        report.status = "partial: dcr"
        t0 = time.perf_counter()
        for space in spaces:
            if space == "embedding":
                report.dcr.append(dcr_test(emb["synthetic"], emb["reference"], emb["holdout"]))
            else:
                from trustfl.text import KeyedMinHash

                mh = KeyedMinHash(key, num_perm=args.num_perm, shingle="char", ngram=args.ngram)
                report.dcr.append(dcr_test(mh.signatures(syn.texts), mh.signatures(ref.texts),
                                           mh.signatures(hold.texts), space="minhash"))
        from trustfl.audits.origin.plot import plot_dcr

        plot_dcr(report.dcr, Path(args.out) / "dcr.png")
        report.figures["dcr"] = "dcr.png"
        report.seconds["dcr_s"] = time.perf_counter() - t0
        report.write(args.out, per_record=args.all_records)
    if human is not None:
        from trustfl.audits.origin.attribution import attribute, attribution_scores
        from trustfl.audits.origin.likelihood import load_run_model

        report.status = "partial: attribution"
        t0 = time.perf_counter()
        model, tok, _ = load_run_model(args.model_run)
        scores = attribution_scores(model, tok, list(syn.texts) + list(human.texts), scores=score_names,
                                    skip_first=args.skip_first, progress=not args.quiet)
        report.attribution = [attribute(v[:len(syn)], v[len(syn):], score=name, seed=args.seed)
                              for name, v in scores.items()]
        report.inputs["human"] = {"files": args.human, "records": len(human)}
        report.inputs["model_run"] = args.model_run
        report.seconds["attribution_s"] = time.perf_counter() - t0
    report.status = "complete"
    report.seconds["total_s"] = time.perf_counter() - t_all
    paths = report.write(args.out, per_record=args.all_records)
    console.print(report.markdown(), highlight=False, markup=False, soft_wrap=True)
    flagged = report.copies.flagged
    if flagged and args.examples > 0:
        console.print(f"Flagged examples ({min(args.examples, len(flagged))} of {len(flagged)}; texts are shown here "
                      "only, never written to the report):", highlight=False, markup=False, soft_wrap=True)
    for f in flagged[:args.examples]:
        r = f.reference
        other = excerpt(ref.texts[r["index"]]) if r else ""
        where = ""
        if r:
            files = ref_info.clients.get(r["client"], {}).get("files", [])
            client = r["client"] if files == [r["client"]] else f"client {r['client']} in {', '.join(files)}"
            where = f"{client}, record {r['record']}"
        console.print(f"- {','.join(f.criteria)}: synthetic #{f.index} \"{excerpt(syn.texts[f.index])}\"\n"
                      f"    ~ reference {where}: \"{other}\"", highlight=False, markup=False, soft_wrap=True)
    console.print(f"report: {paths['json']} and {paths['md']}", highlight=False, markup=False, soft_wrap=True)
    return 0


def run_cli(args: argparse.Namespace) -> int:
    """Handler of ``trustfl origin`` (see ``trustfl origin --help``)."""
    from rich.console import Console

    console = Console()
    if args.quiet:
        import datasets

        datasets.disable_progress_bars()
    if args.config is None:
        if args.set:
            raise OriginError("--set applies to --config only")
        return _file_mode(args, console)
    file_args = [n for n in ("synthetic", "reference", "holdout", "human", "model_run") if getattr(args, n)]
    if file_args:
        flags = ["--" + a.replace("_", "-") for a in file_args]
        raise OriginError(f"--config runs end to end and reads its own data; drop {flags}")
    from trustfl.audits.origin.experiment import run_origin_experiment
    from trustfl.audits.origin.settings import load_origin_config

    run_config, settings = load_origin_config(args.config, dict(args.set or []))
    report = run_origin_experiment(run_config, settings, args.out, progress=not args.quiet,
                                   log=lambda m: console.print(m, highlight=False))
    console.print(report.markdown(), highlight=False, markup=False, soft_wrap=True)
    console.print(f"report: {Path(args.out) / 'report.json'} and {Path(args.out) / 'report.md'}", soft_wrap=True)
    return 0
