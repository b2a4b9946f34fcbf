"""The training loop: one QuickNAT per view, Adam, QuickNAT's loss, checkpoints and resume.

Data is an endless stream of batches (``SliceSampler``), so an "epoch" is a fixed number of
steps; each step trains every view's network on its own batch. With ``shared_views`` one
network learns from all views' slices (three times the updates on a small compute budget).
At each epoch's end the loop writes a checkpoint (``checkpoint.py``: weights and Adam moments
in safetensors, counters in JSON; never pickle) and can stop early on a wall-clock budget,
always leaving a usable model behind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bids_infantseg.model.card import ModelCard, save_model
from bids_infantseg.model.quicknat import QuickNAT
from bids_infantseg.train.checkpoint import (
    CHECKPOINT_STATE,
    load_checkpoint,
    net_weights,
    read_checkpoint,
    save_checkpoint,
)
from bids_infantseg.train.data import SliceSampler
from bids_infantseg.train.losses import median_frequency_weights, quicknat_loss

LOGGER = logging.getLogger("bids_infantseg.train")


@dataclass
class TrainConfig:
    """Recipe of one training run (stored in the model card)."""

    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 8
    learning_rate: float = 1e-3
    lr_decay: float = 1.0  # multiplies the learning rate after each epoch
    boundary_weight: float = 2.0  # times the median class weight
    shared_views: bool = False  # one network trained on, and used for, every view
    seed: int = 0
    time_budget_s: float | None = None  # stop (and save) before this much wall time

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    nets: dict[str, QuickNAT]
    epochs_done: int
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0
    slices_per_second: float = 0.0


def nets_from_checkpoint(work_dir: Path, card: ModelCard) -> tuple[dict[str, QuickNAT], dict]:
    """The networks and state of the last checkpoint in ``work_dir`` (to ship a running or
    interrupted run)."""
    tensors, state = read_checkpoint(work_dir)
    nets: dict[str, QuickNAT] = {}
    for view in card.views:
        weights = net_weights(tensors, view)
        if not weights and state["config"].get("shared_views"):
            nets[view] = next(iter(nets.values()))
            continue
        nets[view] = QuickNAT(card.architecture)
        nets[view].load_state_dict(weights)
        nets[view].eval()
    return nets, state


def adam_per_network(nets: dict[str, QuickNAT], lr: float) -> dict[str, torch.optim.Adam]:
    """One Adam optimiser per distinct network, shared by the views that network serves."""
    by_net: dict[int, torch.optim.Adam] = {}
    for net in nets.values():
        if id(net) not in by_net:
            by_net[id(net)] = torch.optim.Adam(net.parameters(), lr=lr)
    return {view: by_net[id(net)] for view, net in nets.items()}


def _build(card: ModelCard, config: TrainConfig) -> tuple[dict[str, QuickNAT], dict]:
    """Seeded networks and their Adam optimisers, per view (one of each when shared)."""
    torch.manual_seed(config.seed)
    if config.shared_views:
        nets = dict.fromkeys(card.views, QuickNAT(card.architecture))
    else:
        nets = {view: QuickNAT(card.architecture) for view in card.views}
    return nets, adam_per_network(nets, config.learning_rate)


def train(card: ModelCard, data: SliceSampler, config: TrainConfig, work_dir: Path,
          out_dir: Path | None = None, *, progress: bool = True) -> TrainResult:
    """Train one network per view of ``card``; resume from ``work_dir``'s checkpoint if any.

    Writes a checkpoint to ``work_dir`` after every epoch, and the model folder to ``out_dir``
    (via ``save_model``) at the end, also when the time budget stops the run early.
    """
    start = time.monotonic()
    work_dir = Path(work_dir)
    nets, optimizers = _build(card, config)
    history: list[dict] = []
    first_epoch, counts = 0, None
    if (work_dir / CHECKPOINT_STATE).is_file():
        state = load_checkpoint(work_dir, nets, optimizers)
        first_epoch, history = state["epochs_done"], state["history"]
        counts = np.asarray(state["class_counts"])
        LOGGER.info("resuming from %s after epoch %d", work_dir, first_epoch)
    if counts is None:
        counts = data.class_counts()
    class_weights = torch.from_numpy(median_frequency_weights(counts))
    boundary = config.boundary_weight * float(class_weights.median())

    budget = config.time_budget_s
    slices_done, train_seconds, stopped = 0, 0.0, False
    for epoch in range(first_epoch, config.epochs):
        data.reseed(config.seed, epoch)
        torch.manual_seed(config.seed * 100_003 + epoch)
        for net in nets.values():
            net.train()
        losses = {view: [] for view in nets}
        epoch_start, waited = time.monotonic(), data.wait_seconds
        bar = tqdm(range(config.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, mininterval=10.0)
        for step in bar:
            elapsed = time.monotonic() - start
            per_step = (time.monotonic() - epoch_start) / step if step else 0.0
            if budget is not None and elapsed + 1.5 * per_step > budget:
                stopped = True
                break
            for view, net in nets.items():
                images, targets = data.batch(view, config.batch_size)
                loss = quicknat_loss(net(images), targets, class_weights, boundary)
                optimizers[view].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[view].step()
                losses[view].append(loss.item())
                slices_done += config.batch_size
            bar.set_postfix(loss=f"{np.mean([v[-1] for v in losses.values()]):.3f}")
        train_seconds += time.monotonic() - epoch_start
        if stopped and not losses[next(iter(nets))]:
            break
        record = {"epoch": epoch + 1, "steps": len(losses[next(iter(nets))]),
                  "loss": {v: float(np.mean(x)) for v, x in losses.items()},
                  "lr": optimizers[next(iter(nets))].param_groups[0]["lr"],
                  "seconds": round(time.monotonic() - epoch_start, 1),
                  "data_wait_seconds": round(data.wait_seconds - waited, 1)}
        history.append(record)
        eta = record["seconds"] * (config.epochs - epoch - 1)
        LOGGER.info("epoch %d/%d loss %s (%.0f s, %.0f s waiting for data, ETA %.0f s)",
                    epoch + 1, config.epochs, {v: round(x, 4) for v, x in record["loss"].items()},
                    record["seconds"], record["data_wait_seconds"], eta)
        for opt in {id(o): o for o in optimizers.values()}.values():
            for group in opt.param_groups:
                group["lr"] *= config.lr_decay
        save_checkpoint(work_dir, nets, optimizers, {
            "epochs_done": epoch + 1, "history": history, "class_counts": counts.tolist(),
            "config": config.to_dict(),
        })
        if stopped:
            LOGGER.info("time budget reached during epoch %d; stopping", epoch + 1)
            break
    for net in nets.values():
        net.eval()
    result = TrainResult(nets, len(history), history, stopped, time.monotonic() - start,
                         slices_done / train_seconds if train_seconds else 0.0)
    if out_dir is not None:
        save_model(Path(out_dir), card, nets)
    return result
