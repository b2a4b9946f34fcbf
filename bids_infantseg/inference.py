"""Slices -> batches -> device -> class probabilities, averaged across the model's views.

Works on arrays, never files, so it is usable from Python and testable without BIDS.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from bids_infantseg.model.card import Model
from bids_infantseg.model.views import to_slices

LOGGER = logging.getLogger("bids_infantseg")


class DeviceError(ValueError):
    """A ``--device`` that this machine does not have."""


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks the first GPU when there is one; ``cuda[:N]`` must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"--device {spec}: not a device (use auto, cpu or cuda[:N])") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: no CUDA GPU is visible to PyTorch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise DeviceError(f"--device {spec}: only cpu and cuda are supported")
    return device


def predict(model: Model, volume: np.ndarray, *, device: torch.device | str = "cpu",
            batch_size: int = 8) -> np.ndarray:
    """Softmax probabilities ``(C, X, Y, Z)`` for a conformed volume ``(X, Y, Z)``.

    Each view's network sees its slices in batches; its softmax, scaled by the card's view
    weight, is added in place into one class-first accumulator (no per-view copies). Slices
    that are entirely zero (outside the head) are not run through the network: they are
    assigned to the class of label 0, which is what a trained network predicts there.
    """
    card = model.card
    if volume.shape != tuple(card.grid_shape):
        raise ValueError(f"volume shape {volume.shape} is not the model grid {card.grid_shape}")
    device = torch.device(device)
    weights = {v: w / sum(card.views.values()) for v, w in card.views.items()}
    outside = np.flatnonzero(card.labels.indices == 0)
    image = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).to(device)
    probs = torch.zeros((len(card.labels), *volume.shape), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for view, net in model.nets.items():
            slices = to_slices(image, view)  # (N, H, W)
            acc = to_slices(probs, view)  # (N, C, H, W), a view into probs
            occupied = slices.flatten(1).abs().amax(dim=1) > 0
            if outside.size:
                acc[~occupied, int(outside[0])] += weights[view]
            else:
                occupied[:] = True
            index = torch.nonzero(occupied).flatten()
            for start in range(0, index.numel(), batch_size):
                batch_index = index[start:start + batch_size]
                logits = net(slices[batch_index].unsqueeze(1))
                acc[batch_index] += weights[view] * torch.softmax(logits.float(), dim=1)
    return probs.cpu().numpy()
