"""Tiny untrained model folders for tests: real QuickNAT code, seconds to run on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bids_infantseg.model.card import CARD_FILE, CARD_FORMAT, DERIVED_KEY, ModelCard, save_model
from bids_infantseg.model.labels import DRAWEM9, LabelSet
from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig


def tiny_card(views: dict[str, float] | None = None, grid: int = 32,
              voxel_size: float = 6.0, labels: LabelSet = DRAWEM9) -> ModelCard:
    return ModelCard(
        name="tiny-test",
        version="0.0.1",
        architecture=QuickNATConfig(num_classes=len(labels), num_filters=4, dropout=0.0),
        labels=labels,
        voxel_size_mm=voxel_size,
        grid_shape=(grid, grid, grid),
        views=views or {"axial": 1.0, "coronal": 1.0, "sagittal": 1.0},
        description="untrained test model",
        weights_dtype="float32",
    )


def make_tiny_model(folder: Path, seed: int = 0, **kwargs) -> Path:
    """Write an untrained tiny model folder and return its path.

    Its classifier is sharpened (weights x100, no bias), so that the argmax follows the
    image's features rather than one class's bias: label maps then vary with the input.
    """
    card = tiny_card(**kwargs)
    torch.manual_seed(seed)
    nets = {view: QuickNAT(card.architecture).eval() for view in card.views}
    with torch.no_grad():
        for net in nets.values():
            net.classifier.weight.mul_(100.0)
            net.classifier.bias.zero_()
    return save_model(Path(folder), card, nets)


def make_derived_model(folder: Path, network: str | Path, mapping: str | Path,
                       name: str = "tiny-derived") -> Path:
    """Write a derived model folder (a card only): ``network``'s probabilities summed
    through ``mapping``; both as the card names them (relative to the folder, or not)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card = {"format": CARD_FORMAT, "name": name, "version": "0.0.1",
            "description": "test model derived from a tiny network",
            DERIVED_KEY: {"network": str(network), "mapping": str(mapping)}}
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder
