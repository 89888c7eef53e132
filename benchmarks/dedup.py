"""Near-duplicate detection at scale: trustfl's keyed MinHash + FAISS vs datasketch's MinHashLSH.

Usage::

    python benchmarks/dedup.py                      # 1M records (corpus cached after the first run)
    python benchmarks/dedup.py --records 100000     # quick iteration
    python benchmarks/dedup.py --records 20000 --semantic   # + the semantic method (MiniLM), small n

Corpus: :func:`trustfl.defenses.dedup.planted.benchmark_corpus` from the real corpora sms_spam + trec +
health_tweets (74,281 texts): every real text once, distinct records made by joining two whole
real texts of similar length, and 10 % planted duplicates (exact, typo, word_swap, paraphrase,
cross_client, equal shares) over 8 clients, shuffled. Cached under ``--cache-dir``.

Methods, each end to end (texts in memory -> duplicate clusters) in its own child process,
one after the other in this run, so each peak RSS (``ru_maxrss``) is its own:

* ``trustfl``: ``deduplicate(client_texts, key, methods=("lexical",))``: keyed MinHash signatures
  on every client, server-side LSH banding with ``faiss.IndexBinaryMultiHash`` over b-bit codes,
  verification on the full signatures, client-side confirmation of within-client pairs, connected
  components;
* ``datasketch``: the configuration of text-dedup's ``text_dedup/minhash.py``: datasketch
  ``MinHash`` per record (``MinHash.generator``, default affine32 scheme, SHA-1 of each shingle),
  ``MinHashLSH`` with bands/rows from datasketch's optimal parameters at weights (0.5, 0.5) (what
  text-dedup's ``optimal_param`` uses), every band collision is a duplicate edge (text-dedup does
  not verify candidates), connected components. Same shingles (``KeyedMinHash.shingles``: the
  normalised text's character 5-grams), same ``num_perm``, same Jaccard threshold. Records are
  queried then inserted one by one (streaming), which yields every colliding pair once.
  ``datasketch+verify`` additionally keeps only candidates whose MinHash Jaccard estimate reaches
  the threshold (timed on top of ``datasketch``).

Accuracy: pairwise precision / recall / F1 over all record pairs (a pair is positive when both
records are in one cluster); ground truth = planted links + exact duplicates already in the corpus
+ every pair predicted by *either* method whose true shingle Jaccard (Python sets of
``KeyedMinHash.shingles``) reaches the threshold (genuine near-duplicates of the real data).
Per planted type: recall = the copy lands in its source's cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY_PASSPHRASE = "benchmark dedup key"


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        return float("nan")


def corpus_path(args: argparse.Namespace) -> Path:
    name = f"corpus-n{args.records}-dup{args.dup_rate:g}-c{args.clients}-s{args.seed}-v2"
    return Path(args.cache_dir).expanduser() / name


def build_corpus(args: argparse.Namespace) -> tuple[Path, float]:
    """Generate (or reuse) the cached corpus; returns its path and the generation time (0 if cached)."""
    from trustfl.defenses.dedup.planted import PlantedCorpus, benchmark_corpus

    path = corpus_path(args)
    if (path / "planted_meta.json").exists():
        return path, 0.0
    t0 = time.perf_counter()
    corpus = benchmark_corpus(args.records, dup_rate=args.dup_rate, n_clients=args.clients, seed=args.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    corpus.save(tmp)
    tmp.rename(path)
    del corpus
    assert isinstance(PlantedCorpus.load(path), PlantedCorpus)
    return path, time.perf_counter() - t0


# ---------------------------------------------------------------------- workers (child processes)
def run_trustfl(texts: list[str], client_id: np.ndarray, args: argparse.Namespace,
                methods: tuple[str, ...] = ("lexical",)) -> dict[str, Any]:
    """trustfl's federated dedup end to end; returns accepted edges as global ids and timings."""
    from trustfl.defenses.dedup import DedupKey, deduplicate

    key = DedupKey.from_passphrase(KEY_PASSPHRASE)
    ids = {int(c): np.flatnonzero(client_id == c) for c in np.unique(client_id)}
    t0 = time.perf_counter()
    client_texts = {c: [texts[i] for i in g] for c, g in ids.items()}
    result = deduplicate(client_texts, key, methods=methods, jaccard_threshold=args.threshold,
                         semantic_threshold=args.semantic_threshold, num_perm=args.num_perm, ngram=args.ngram,
                         keep_server_view=False)
    seconds = time.perf_counter() - t0
    p = result.pairs
    ga = np.empty(len(p), dtype=np.int64)
    gb = np.empty(len(p), dtype=np.int64)
    for c, g in ids.items():
        sa, sb = p.client_a == c, p.client_b == c
        ga[sa], gb[sb] = g[p.index_a[sa]], g[p.index_b[sb]]
    return {"seconds": seconds, "a": ga, "b": gb, "method_of_pair": np.asarray(p.method, dtype=str),
            "timings": {k: round(float(v), 3) for k, v in result.timings.items()},
            "candidates": result.candidates, "params": result.params.get("lexical", {}),
            "clusters": len(result.clusters), "dropped": result.num_dropped}


def run_datasketch(texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """datasketch MinHash + MinHashLSH as text-dedup configures it; candidates are the edges."""
    from datasketch import MinHash, MinHashLSH

    from trustfl.defenses.dedup import DedupKey, KeyedMinHash, component_labels

    shingler = KeyedMinHash(DedupKey.from_passphrase(KEY_PASSPHRASE), num_perm=args.num_perm, ngram=args.ngram)
    n = len(texts)
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm, weights=(0.5, 0.5))
    sig = np.empty((n, args.num_perm), dtype=np.uint32)  # kept only for the +verify variant
    edges_a: list[int] = []
    edges_b: list[int] = []
    shingle_sets = ([s.encode("utf-8") for s in shingler.shingles(t)] for t in texts)
    for i, m in enumerate(MinHash.generator(shingle_sets, num_perm=args.num_perm)):
        for j in lsh.query(m):
            edges_a.append(j)
            edges_b.append(i)
        lsh.insert(i, m, check_duplication=False)
        sig[i] = m.hashvalues
    a, b = np.asarray(edges_a, dtype=np.int64), np.asarray(edges_b, dtype=np.int64)
    component_labels(n, a, b)
    seconds = time.perf_counter() - t0
    # +verify: keep candidates whose estimated Jaccard reaches the threshold
    t1 = time.perf_counter()
    est = np.empty(len(a))
    for lo in range(0, len(a), 200_000):
        est[lo:lo + 200_000] = (sig[a[lo:lo + 200_000]] == sig[b[lo:lo + 200_000]]).mean(axis=1)
    ok = est >= args.threshold - 1e-12
    component_labels(n, a[ok], b[ok])
    verify_seconds = time.perf_counter() - t1
    return {"seconds": seconds, "a": a, "b": b, "verified": ok, "verify_seconds": verify_seconds,
            "params": {"bands": lsh.b, "rows": lsh.r, "weights": [0.5, 0.5], "scheme": "affine32",
                       "hashfunc": "sha1_hash32"}}


def worker(args: argparse.Namespace) -> None:
    """Child process: load the corpus, run one method, write its edges and numbers to ``--out``."""
    from trustfl.defenses.dedup.planted import PlantedCorpus

    corpus = PlantedCorpus.load(args.corpus)
    texts, client_id = corpus.texts, corpus.client_id
    del corpus
    import gc

    gc.collect()
    base_peak, base_now = _rss_mb(), _current_rss_mb()
    if args.worker == "trustfl":
        out = run_trustfl(texts, client_id, args)
    elif args.worker == "trustfl-semantic":
        out = run_trustfl(texts, client_id, args, methods=("exact", "lexical", "semantic"))
    else:
        out = run_datasketch(texts, args)
    out["peak_rss_mb"] = _rss_mb()
    out["rss_after_load_mb"] = base_now
    out["peak_rss_before_run_mb"] = base_peak
    arrays = {k: out.pop(k) for k in list(out) if isinstance(out[k], np.ndarray)}
    np.savez(args.out + ".npz", **arrays)
    Path(args.out + ".json").write_text(json.dumps(out, default=str))


def run_child(method: str, path: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{method}-{time.monotonic_ns()}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--corpus", str(path), "--out", str(out),
           "--threshold", str(args.threshold), "--semantic-threshold", str(args.semantic_threshold),
           "--num-perm", str(args.num_perm), "--ngram", str(args.ngram)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    res = json.loads(Path(str(out) + ".json").read_text())
    res["wall_s_including_load"] = round(time.perf_counter() - t0, 2)
    with np.load(str(out) + ".npz") as z:
        res.update({k: z[k] for k in z.files})
    return res


# ---------------------------------------------------------------------- scoring
def score_methods(corpus: Any, results: dict[str, dict[str, Any]], threshold: float, ngram: int = 5,
                  semantic_threshold: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Adjudicate every predicted edge outside the planted ground truth, then score each method."""
    from trustfl.defenses.dedup import DedupKey, KeyedMinHash, component_labels
    from trustfl.defenses.dedup.planted import adjudicate_pairs, score_dedup

    shingler = KeyedMinHash(DedupKey.from_passphrase(KEY_PASSPHRASE), ngram=ngram)
    n = len(corpus)
    edge_sets = {name: (r["a"], r["b"]) for name, r in results.items()}
    if "datasketch" in results:
        r = results["datasketch"]
        edge_sets["datasketch+verify"] = (r["a"][r["verified"]], r["b"][r["verified"]])
    all_a = np.concatenate([e[0] for e in edge_sets.values()])
    all_b = np.concatenate([e[1] for e in edge_sets.values()])
    lo, hi = np.minimum(all_a, all_b), np.maximum(all_a, all_b)
    keys = np.unique(lo * n + hi)
    ua, ub = keys // n, keys % n
    gt_links = component_labels(n, *corpus.true_pairs())
    outside = gt_links[ua] != gt_links[ub]
    t0 = time.perf_counter()
    jac, genuine = adjudicate_pairs(corpus.texts, ua[outside], ub[outside], shingler.shingles, threshold)
    sem_genuine = np.zeros(len(jac), dtype=bool)
    if semantic_threshold is not None:
        from trustfl.defenses.dedup import embed_texts

        rows = np.unique(np.concatenate([ua[outside], ub[outside]]))
        if len(rows):
            emb = embed_texts([corpus.texts[i] for i in rows])
            pos = {int(r): k for k, r in enumerate(rows)}
            ia = np.array([pos[int(i)] for i in ua[outside]])
            ib = np.array([pos[int(i)] for i in ub[outside]])
            sem_genuine = np.einsum("ij,ij->i", emb[ia], emb[ib]) >= semantic_threshold - 1e-6
    ok = genuine | sem_genuine
    extra = (ua[outside][ok], ub[outside][ok])
    adjud = {"predicted_edges_union": int(len(keys)), "outside_planted_truth": int(outside.sum()),
             "genuine_by_jaccard": int(genuine.sum()), "genuine_by_cosine_only": int((sem_genuine & ~genuine).sum()),
             "seconds": round(time.perf_counter() - t0, 2)}
    scores = {}
    for name, (a, b) in edge_sets.items():
        s = score_dedup(corpus, component_labels(n, a, b), extra_true_edges=extra)
        scores[name] = {"pairwise": s["pairwise"],
                        "recall_per_type": {k: round(v["recall"], 4) for k, v in s["per_type"].items() if "recall" in v},
                        "precision_per_type": {k: round(v["precision"], 4) for k, v in s["per_type"].items()},
                        "predicted": s["predicted"], "ground_truth": s["ground_truth"]}
    return scores, adjud


def machine() -> dict[str, Any]:
    import datasketch
    import faiss

    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        mem = None
    return {"cpus": os.cpu_count(), "memory_gib": mem, "gpu": False, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "faiss": faiss.__version__,
            "datasketch": datasketch.__version__, "date": time.strftime("%Y-%m-%d"),
            "load_average_at_start": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dup-rate", type=float, default=0.1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    from trustfl.defenses.dedup import DedupSettings

    d = DedupSettings()  # the benchmark runs dedup at its defaults unless told otherwise
    parser.add_argument("--threshold", type=float, default=d.jaccard_threshold,
                        help="Jaccard threshold (both methods)")
    parser.add_argument("--num-perm", type=int, default=d.num_perm)
    parser.add_argument("--ngram", type=int, default=d.ngram, help="character shingle length (both methods)")
    parser.add_argument("--methods", default="trustfl,datasketch")
    parser.add_argument("--semantic", action="store_true",
                        help="also run trustfl with exact+lexical+semantic (MiniLM) on --semantic-records records")
    parser.add_argument("--semantic-records", type=int, default=20_000)
    parser.add_argument("--semantic-threshold", type=float, default=d.semantic_threshold)
    parser.add_argument("--cache-dir", default="~/.cache/trustfl/bench-dedup")
    parser.add_argument("--out-json", default=str(ROOT / "benchmarks" / "results" / "dedup.json"))
    parser.add_argument("--no-save", action="store_true", help="print only, do not write --out-json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}

    from trustfl.defenses.dedup.planted import PlantedCorpus

    t_all = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "dedup", "machine": machine(),
                              "config": {k: v for k, v in vars(args).items() if k not in ("worker", "corpus", "out")}}
    path, gen_s = build_corpus(args)
    corpus = PlantedCorpus.load(path)
    report["corpus"] = {"path": str(path), "records": len(corpus), "generation_s": round(gen_s, 1),
                        "types": corpus.type_counts(), "meta": corpus.meta,
                        "cross_client_copies": int(corpus.cross_client.sum())}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            print(f"[dedup bench] running {m} on {len(corpus):,} records ...", file=sys.stderr, flush=True)
            results[m] = run_child(m, path, args, Path(tmp))
            print(f"[dedup bench] {m}: {results[m]['seconds']:.1f} s", file=sys.stderr, flush=True)
    scores, adjud = score_methods(corpus, results, args.threshold, args.ngram)
    n = len(corpus)
    out_methods: dict[str, Any] = {}
    for m, r in results.items():
        out_methods[m] = {"seconds": round(r["seconds"], 2), "records_per_s": round(n / r["seconds"], 1),
                          "peak_rss_mb": round(r["peak_rss_mb"], 1), "rss_after_load_mb": round(r["rss_after_load_mb"], 1),
                          "peak_rss_minus_load_mb": round(r["peak_rss_mb"] - r["rss_after_load_mb"], 1),
                          "wall_s_including_load": r["wall_s_including_load"], "params": r["params"],
                          "edges": int(len(r["a"])), **scores[m]}
        if m == "trustfl":
            out_methods[m].update(timings=r["timings"], candidates=r["candidates"])
        if m == "datasketch":
            v = r["seconds"] + r["verify_seconds"]
            out_methods["datasketch+verify"] = {"seconds": round(v, 2), "records_per_s": round(n / v, 1),
                                                "verify_s": round(r["verify_seconds"], 2),
                                                "peak_rss_mb": out_methods[m]["peak_rss_mb"],
                                                "edges": int(r["verified"].sum()), **scores["datasketch+verify"]}
    report["methods"] = out_methods
    report["adjudication"] = adjud
    if "trustfl" in out_methods and "datasketch" in out_methods:
        t, d = out_methods["trustfl"], out_methods["datasketch"]
        dv = out_methods["datasketch+verify"]
        report["ratio"] = {
            "throughput_trustfl_over_datasketch": round(t["records_per_s"] / d["records_per_s"], 2),
            "throughput_trustfl_over_datasketch_verify": round(t["records_per_s"] / dv["records_per_s"], 2),
            "f1_trustfl": round(t["pairwise"]["f1"], 4), "f1_datasketch": round(d["pairwise"]["f1"], 4),
            "f1_datasketch_verify": round(dv["pairwise"]["f1"], 4),
            "peak_rss_trustfl_over_datasketch": round(t["peak_rss_mb"] / d["peak_rss_mb"], 2),
            "goal": ">= 3x datasketch throughput at equal or better F1",
            "goal_met": bool(t["records_per_s"] >= 3 * d["records_per_s"]
                             and t["pairwise"]["f1"] >= d["pairwise"]["f1"] - 1e-9),
        }
    if args.semantic:
        report["semantic"] = semantic_run(args)
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if not args.no_save:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(text + "\n")
    return report


def semantic_run(args: argparse.Namespace) -> dict[str, Any]:
    """trustfl with exact + lexical + semantic on a smaller corpus of the same recipe.

    MiniLM on 2 CPU cores embeds a few hundred short texts per second, so embedding 1M texts
    would take about an hour: the semantic method is measured at ``--semantic-records``.
    """
    from trustfl.defenses.dedup.planted import PlantedCorpus

    small = argparse.Namespace(**{**vars(args), "records": args.semantic_records})
    path, gen_s = build_corpus(small)
    corpus = PlantedCorpus.load(path)
    with tempfile.TemporaryDirectory() as tmp:
        r = run_child("trustfl-semantic", path, small, Path(tmp))
    scores, adjud = score_methods(corpus, {"trustfl-semantic": r}, args.threshold, args.ngram,
                                  args.semantic_threshold)
    n = len(corpus)
    return {"records": n, "seconds": round(r["seconds"], 2), "records_per_s": round(n / r["seconds"], 1),
            "peak_rss_mb": round(r["peak_rss_mb"], 1), "timings": r["timings"], "candidates": r["candidates"],
            "pairs_by_method": {str(k): int(v) for k, v in zip(*np.unique(r["method_of_pair"], return_counts=True))},
            **scores["trustfl-semantic"], "adjudication": adjud}


if __name__ == "__main__":
    main()
