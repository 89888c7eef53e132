"""Write each client's own data file for a Flower deployment demo: ``client_<id>.jsonl`` per client.

In a real deployment every organisation already has its file; this script stands in for them by
writing, for each client, the same records the local engine would give it (its partition of the
config's ``data``, with a ``holdout`` column marking the rows held out for privacy audits), so
the deployment and ``federation.engine = "local"`` train on the same data.

    python examples/flower_app/make_node_data.py examples/flower_app/federation.toml /tmp/nodes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_node_files(config_path: str | Path, out_dir: str | Path) -> list[Path]:
    """One JSONL file per client (columns text, label, holdout); returns their paths."""
    from datasets import concatenate_datasets

    from trustfl.config import load_config
    from trustfl.federation.clients import split_data

    config = load_config(config_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for cid, (train, holdout) in sorted(split_data(config).splits.items()):
        train = train.add_column("holdout", [False] * len(train))
        holdout = holdout.add_column("holdout", [True] * len(holdout))
        both = concatenate_datasets([train, holdout.cast(train.features)])
        path = out / f"client_{cid}.jsonl"
        both.select_columns(["text", "label", "holdout"]).to_json(str(path), lines=True)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the trustfl config the federation runs")
    parser.add_argument("out_dir", help="folder for client_<id>.jsonl")
    args = parser.parse_args(argv)
    for path in write_node_files(args.config, args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
