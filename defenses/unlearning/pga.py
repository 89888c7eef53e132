"""Projected gradient ascent on the forgotten clients' records (Halimi, Kadhe, Rawat, Baracaldo 2022,
"Federated Unlearning: How to Efficiently Erase a Client in FL?", arXiv:2207.05521, Algorithm 1).

The forgotten client maximises its own empirical loss, starting from a reference model that no longer
holds its last contribution (Halimi et al.: the average of the other clients' models of the last
round), and every step is projected back onto an L2 ball around that reference, so the ascent erases
what the client taught the model without wandering into an arbitrary bad model. The ascent stops
early once accuracy on the client's records falls below a threshold (chance level by default); a few
federated rounds without the client then recover the utility (done by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from trustfl.defenses.unlearning.vectors import project_l2_ball
from trustfl.seeding import derive_seed, generator

__all__ = ["AscentResult", "projected_gradient_ascent"]


@dataclass
class AscentResult:
    vector: torch.Tensor
    steps: int
    samples: int
    accuracy_before: float
    accuracy_after: float
    stopped_early: bool


def _accuracy(trainer: Any, examples: list[dict[str, Any]]) -> float:
    from trustfl.federation.evaluate import predict

    labels = torch.tensor([int(ex["labels"]) for ex in examples])
    return float((predict(trainer, examples) == labels).float().mean())


def projected_gradient_ascent(trainer: Any, examples: list[dict[str, Any]], *, reference: torch.Tensor,
                              radius: float, lr: float, epochs: int, batch_size: int, stop_accuracy: float,
                              seed: int, progress: bool = False) -> AscentResult:
    """Maximise the loss on ``examples`` from ``reference``, projecting onto ``|w - reference| <= radius``.

    Args:
        trainer: the run's :class:`~trustfl.federation.client.LocalTrainer` (model, layout, batcher,
            frozen-prefix replay; classification).
        examples: the forgotten clients' tokenized records (with their cached prefix when present).
        reference: the centre of the ball and the starting point, flat ``(d,)``.
        stop_accuracy: stop when the accuracy on ``examples`` falls below it (checked after each epoch).

    Returns:
        the final adapter vector and what the ascent cost (steps, samples processed).
    """
    if not examples:
        raise ValueError("projected_gradient_ascent: no records of the forgotten client(s)")
    if "labels" not in examples[0]:
        raise ValueError("projected_gradient_ascent: needs labelled (classification) records")
    # dropout draws from torch's global RNG (no generator argument): seed it inside a fork, so the
    # caller's global RNG state is the same after the ascent as before it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "unlearning_pga"))
        return _ascend(trainer, examples, reference=reference, radius=radius, lr=lr, epochs=epochs,
                       batch_size=batch_size, stop_accuracy=stop_accuracy, seed=seed, progress=progress)


def _ascend(trainer: Any, examples: list[dict[str, Any]], *, reference: torch.Tensor, radius: float, lr: float,
            epochs: int, batch_size: int, stop_accuracy: float, seed: int, progress: bool) -> AscentResult:
    layout, model = trainer.layout, trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    layout.load_into(model, reference)
    before = _accuracy(trainer, examples)
    optimizer = torch.optim.SGD(params, lr=lr)
    loader = DataLoader(examples, batch_size=batch_size, shuffle=True, collate_fn=trainer.batcher,
                        generator=generator(seed, "unlearning_pga_shuffle"))
    steps = samples = 0
    acc, stopped = before, False
    bar = tqdm(range(epochs), desc="pga: ascent epochs", unit="epoch", disable=not progress, leave=False)
    for _ in bar:
        if acc < stop_accuracy:
            stopped = True
            break
        model.train()
        for batch in loader:
            loss = trainer.forward(batch).loss
            optimizer.zero_grad(set_to_none=True)
            (-loss).backward()  # ascent: step along +grad of the loss
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            with torch.no_grad():
                layout.load_into(model, project_l2_ball(layout.flatten(model), reference, radius))
            steps += 1
            samples += int(batch["input_ids"].shape[0])
        acc = _accuracy(trainer, examples)
        bar.set_postfix(accuracy=f"{acc:.3f}")
    bar.close()
    return AscentResult(vector=layout.flatten(model).detach().clone(), steps=steps, samples=samples,
                        accuracy_before=before, accuracy_after=acc, stopped_early=stopped or acc < stop_accuracy)
