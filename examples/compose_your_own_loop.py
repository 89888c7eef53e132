"""Your own federated loop, in plain PyTorch + PEFT, with trustfl's pieces composed into it.

What it shows: the offline MiniLM (``trustfl.models.load_fm``), LoRA (``apply_lora``), the flat
update vector (``ParamLayout``), sms_spam records split over clients (``trustfl.data``), DP-SGD
per client with ONE Opacus accountant per client kept across rounds (``make_private(...,
engine=...)``), a norm-clip + Multi-Krum server pipeline, every round recorded in a run
directory (``RunWriter``) and checked at the end (``RunDir.verify``, as ``trustfl verify`` does).

    .venv/bin/python examples/compose_your_own_loop.py                  # MiniLM, a few minutes on 2 cores
    .venv/bin/python examples/compose_your_own_loop.py --tiny --rounds 2  # random tiny BERT, seconds
    TRUSTFL_EXAMPLE_TINY=1 .venv/bin/python examples/compose_your_own_loop.py   # same as --tiny
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

import torch
from torch.utils.data import DataLoader

from trustfl.data import DynamicPaddingCollator, iid_partition, sms_spam
from trustfl.defenses import MultiKrum, NormClip, Pipeline, make_private
from trustfl.models import LoraSettings, ParamLayout, apply_lora, load_fm, resolve_model_path
from trustfl.rundir import RunDir, RunWriter


def tiny_model_dir() -> str:
    """A random 2-block, 32-wide BERT with MiniLM's tokenizer, saved as a model folder (smoke runs only)."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = tempfile.mkdtemp(prefix="tiny-bert-")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))  # "minilm" -> its local folder
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--records", type=int, default=1000, help="sms_spam records used (80%% train, 20%% test)")
    ap.add_argument("--epsilon", type=float, default=8.0, help="per client, over all rounds (delta = 1e-5)")
    ap.add_argument("--out", default="runs/compose_your_own_loop")
    ap.add_argument("--tiny", action="store_true", default=os.environ.get("TRUSTFL_EXAMPLE_TINY") == "1")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # 1. Model: offline MiniLM (or a tiny random BERT) + LoRA on the top block; mean pooling suits DP.
    fm = load_fm(tiny_model_dir() if args.tiny else "minilm", task="classification", num_labels=2, pooling="mean")
    torch.manual_seed(0)
    model = apply_lora(fm.model, LoraSettings(r=4, alpha=8, top_layers=1), task="classification")
    layout = ParamLayout.from_model(model)  # trainable tensors <-> one flat float32 vector (what travels)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # 2. Data: sms_spam records (ham = 0, spam = 1), tokenized once, split iid over the clients.
    records = sms_spam().shuffle(seed=0).select(range(args.records))
    examples = [{"input_ids": fm.tokenizer(text, truncation=True, max_length=64)["input_ids"], "labels": label}
                for text, label in zip(records["text"], records["label"])]
    n_test = len(examples) // 5
    test, train = examples[:n_test], examples[n_test:]
    collate = DynamicPaddingCollator(pad_token_id=fm.pad_token_id, task="classification")
    parts = iid_partition(len(train), args.clients, seed=0)
    client_data = {cid: [train[i] for i in part] for cid, part in enumerate(parts)}
    batch_size = max(8, len(train) // args.clients // 4)  # ~4 Poisson batches per local epoch

    # 3. Server: clip every update to the round's median norm, then Multi-Krum (tolerates f attackers).
    f = max(0, (args.clients - 3) // 2)  # Multi-Krum needs n > 2f + 2
    pipeline = Pipeline(pre=[NormClip(max_norm="median")], aggregator=MultiKrum(f=f))

    # 4. Run directory: config, layout, seeds, then one atomic commit per round.
    writer = RunWriter.create(args.out, config=vars(args), layout=layout.to_dict(), seeds={"torch": 0},
                              overwrite=True)
    global_vector = layout.flatten(model)
    writer.write_initial(global_vector)

    engines: dict[int, object] = {}  # one PrivacyEngine (accountant) per client, kept across rounds
    for rnd in range(1, args.rounds + 1):
        updates, epsilons = {}, {}
        for cid, data in client_data.items():
            layout.load_into(model, global_vector)  # start from the current global adapter
            head = [p for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" in n]
            others = [p for p in trainable if all(p is not h for h in head)]
            opt = torch.optim.SGD([{"params": others}, {"params": head, "lr": 2.0}], lr=0.05, momentum=0.9)
            # epochs = the accountant's total over the whole run (1 local epoch x rounds): σ is solved
            # once (memoized), and ε after the last round stays <= args.epsilon.
            private = make_private(model, opt, DataLoader(data, batch_size=batch_size, collate_fn=collate),
                                   target_epsilon=args.epsilon, epochs=args.rounds, engine=engines.get(cid))
            engines[cid] = private.engine  # pass it back next round, or ε restarts at 0
            for batch in private.loader:  # Poisson batches (empty draws are noise-only steps inside)
                logits = private.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = private.loss(logits, batch["labels"])
                private.optimizer.zero_grad()
                loss.backward()
                private.optimizer.step()
            private.close()  # remove Opacus's hooks before the next client wraps the same model
            updates[cid] = (layout.flatten(model) - global_vector, len(data))
            epsilons[cid] = private.epsilon()

        ids = sorted(updates)
        agg = pipeline(torch.stack([updates[c][0] for c in ids]), client_ids=ids)
        global_vector = global_vector + agg.vector

        layout.load_into(model, global_vector)  # evaluate the new global model
        model.eval()
        with torch.no_grad():
            batch = collate(test)
            pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
        accuracy = float((pred == batch["labels"]).float().mean())
        metrics = {"accuracy": accuracy, "epsilon": epsilons,  # int client ids as keys, like client_updates
                   "accepted": dict(zip(ids, agg.info.accepted.tolist())), "reasons": dict(zip(ids, agg.info.reasons))}
        writer.write_round(rnd, global_vector=global_vector, client_updates=updates, metrics=metrics)
        print(f"round {rnd}: accuracy {accuracy:.3f}, max epsilon {max(epsilons.values()):.2f}, "
              f"Multi-Krum kept {sum(agg.info.accepted.tolist())}/{len(ids)}")

    report = RunDir(args.out).verify()  # sha256 of every file against the manifest (= `trustfl verify OUT`)
    print(f"run directory {args.out}: {writer.completed_rounds} rounds, verified {len(report.checked)} files")
    from trustfl.audits import run_audit  # the same audit as `trustfl audit OUT`: OUT/audit/report.html

    for name, status, verdict in run_audit(args.out, sections="integrity,privacy,robustness", progress=False).summary():
        print(f"audit {name}: {status}: {verdict}")
    return {"accuracy": accuracy, "epsilons": epsilons, "out": args.out}


if __name__ == "__main__":
    main()
