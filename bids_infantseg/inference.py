"""Slices -> batches -> device -> class probabilities, averaged across the model's views.

Works on arrays, never files, so it is usable from Python and testable without BIDS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

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


@dataclass
class Prediction:
    """What the segment step hands on: probabilities plus what quality control needs.

    ``view_labels``: each view's own argmax (class numbers, uint8), so agreement between
    views can be measured. ``entropy`` and ``sample_counts`` exist only with MC dropout:
    voxel-wise predictive entropy of the mean of the samples (normalised to 0..1), and the
    voxels per class in each sample's argmax (Bayesian QuickNAT's structure-wise measures).
    """

    probs: np.ndarray
    view_labels: dict[str, np.ndarray]
    entropy: np.ndarray | None = None
    sample_counts: np.ndarray | None = None


def predict(model: Model, volume: np.ndarray, *, device: torch.device | str = "cpu",
            batch_size: int = 8) -> np.ndarray:
    """Softmax probabilities ``(C, X, Y, Z)`` for a conformed volume ``(X, Y, Z)``.

    Each view's network sees its slices in batches; its softmax, scaled by the card's view
    weight, is added in place into one class-first accumulator (no per-view copies). Slices
    that are entirely zero (outside the head) are not run through the network: they are
    assigned to the class of label 0, which is what a trained network predicts there.
    """
    _check_shape(model, volume)
    device = torch.device(device)
    image = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).to(device)
    with torch.inference_mode():
        probs, _ = _aggregate(model, image, batch_size, view_labels=False)
    return probs.cpu().numpy()


def predict_with_qc(model: Model, volume: np.ndarray, *, device: torch.device | str = "cpu",
                    batch_size: int = 8, mc_samples: int = 0, seed: int = 0) -> Prediction:
    """:func:`predict` plus each view's argmax and, with ``mc_samples``, MC-dropout uncertainty.

    The segmentation always comes from the deterministic pass (dropout off), so asking for
    uncertainty never changes the label map. The MC passes (Gal and Ghahramani 2016, as in
    Bayesian QuickNAT, Roy et al. 2019) switch only the dropout layers on; batch norm keeps
    its running statistics. The generator is seeded, so a rerun gives the same numbers.
    """
    _check_shape(model, volume)
    device = torch.device(device)
    image = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).to(device)
    with torch.inference_mode():
        probs, views = _aggregate(model, image, batch_size, view_labels=True)
        result = Prediction(probs.cpu().numpy(), {v: t.cpu().numpy() for v, t in views.items()})
        if mc_samples > 0:
            del probs
            result.entropy, result.sample_counts = _mc_dropout(model, image, batch_size,
                                                               mc_samples, seed)
    return result


def _check_shape(model: Model, volume: np.ndarray) -> None:
    if volume.shape != tuple(model.card.grid_shape):
        raise ValueError(f"volume shape {volume.shape} is not the model grid "
                         f"{model.card.grid_shape}")


def _aggregate(model: Model, image: torch.Tensor, batch_size: int, *,
               view_labels: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """View-weighted softmax ``(C, X, Y, Z)``; with ``view_labels`` also each view's argmax."""
    card = model.card
    weights = {v: w / sum(card.views.values()) for v, w in card.views.items()}
    outside = np.flatnonzero(card.labels.indices == 0)
    probs = torch.zeros((len(card.labels), *image.shape), dtype=torch.float32,
                        device=image.device)
    labels: dict[str, torch.Tensor] = {}
    for view, net in model.nets.items():
        slices = to_slices(image, view)  # (N, H, W)
        acc = to_slices(probs, view)  # (N, C, H, W), a view into probs
        if view_labels:
            labels[view] = torch.zeros(image.shape, dtype=torch.uint8, device=image.device)
        occupied = slices.flatten(1).abs().amax(dim=1) > 0
        if outside.size:
            acc[~occupied, int(outside[0])] += weights[view]
            if view_labels:
                to_slices(labels[view], view)[~occupied] = int(outside[0])
        else:
            occupied[:] = True
        index = torch.nonzero(occupied).flatten()
        for start in range(0, index.numel(), batch_size):
            batch_index = index[start:start + batch_size]
            soft = torch.softmax(net(slices[batch_index].unsqueeze(1)).float(), dim=1)
            acc[batch_index] += weights[view] * soft
            if view_labels:
                to_slices(labels[view], view)[batch_index] = soft.argmax(dim=1).to(torch.uint8)
    return probs, labels


def _mc_dropout(model: Model, image: torch.Tensor, batch_size: int, samples: int,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised predictive entropy ``(X, Y, Z)`` and per-sample class counts ``(S, C)``."""
    dropouts = [m for net in model.nets.values() for m in net.modules()
                if isinstance(m, nn.Dropout | nn.Dropout2d)]
    if not dropouts:
        LOGGER.warning("model %s has no dropout layers: MC samples are all alike",
                       model.card.name)
    classes = len(model.card.labels)
    mean = torch.zeros((classes, *image.shape), dtype=torch.float32, device=image.device)
    counts = np.zeros((samples, classes), dtype=np.int64)
    torch.manual_seed(seed)
    for module in dropouts:
        module.train()
    try:
        for s in range(samples):
            probs, _ = _aggregate(model, image, batch_size, view_labels=False)
            counts[s] = torch.bincount(probs.argmax(dim=0).flatten(),
                                       minlength=classes).cpu().numpy()
            mean += probs / samples
    finally:
        for module in dropouts:
            module.eval()
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum(dim=0) / float(np.log(classes))
    return entropy.clamp(0, 1).cpu().numpy().astype(np.float32), counts
