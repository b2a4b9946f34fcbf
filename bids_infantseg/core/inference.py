"""Slices -> batches -> device -> class probabilities, averaged across the model's views.

Works on arrays, never files, so it is usable from Python and testable without BIDS.

How the network runs is chosen per device, from measurements (``benchmarks/inference.py``):
on a CPU, eager PyTorch or a ``torch.compile``-d network with frozen weights (compiled once
per process, and only when the slices to run pay for the compile); on a GPU, bf16/fp16
autocast, channels-last, pinned host memory, softmax, accumulation and argmax on the device,
and on out-of-memory a halved batch, then probabilities on the host, then the CPU.
"""

from __future__ import annotations

import copy
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import nn

from bids_infantseg.core import refine
from bids_infantseg.model.card import Model, load_model, model_sha256, resolve_model_path
from bids_infantseg.model.views import VIEW_AXIS, to_slices
from bids_infantseg.utils.errors import InfantsegError

LOGGER = logging.getLogger("bids_infantseg")

CompileMode = Literal["auto", "always", "never"]

COMPILE_COST_S = 90.0
"""Seconds a cold ``torch.compile`` (inductor, frozen weights) of QuickNAT took on this
project's shared 2-core CPU (64-102 s for the bundled 16-filter and the published 64-filter
networks; about 20 s with a warm on-disk inductor cache); used by ``auto``."""

COMPILE_SAVING = 0.3
"""Share of eager CPU network time the compiled network saves (1.4-1.46x at batch 8-16,
``benchmarks/inference.py``); ``auto`` compiles only where this saving covers the cost."""

Runner = Callable[[torch.Tensor], torch.Tensor]
T = TypeVar("T")


class DeviceError(InfantsegError, ValueError):
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


@dataclass(frozen=True)
class Placement:
    """Where the network runs and where the class-probability accumulator lives."""

    net: torch.device
    accumulator: torch.device


def fallback_placements(device: torch.device) -> list[Placement]:
    """Placements tried in turn on out-of-memory: all on the GPU, then probabilities on
    the host (the largest tensor leaves the GPU), then everything on the CPU."""
    cpu = torch.device("cpu")
    if device.type == "cpu":
        return [Placement(cpu, cpu)]
    return [Placement(device, device), Placement(device, cpu), Placement(cpu, cpu)]


class _Process:
    """Per-process state, so several scans in one process load and compile the model once."""

    models: dict[tuple[str, str, str], Model] = {}
    compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    eager_seconds = 0.0
    compile_broken = False


def shared_model(spec: str | Path, device: torch.device | str = "cpu") -> Model:
    """:func:`load_model`, once per process for each model (by checksum) and device.

    Why: the segment step of every scan in a process then reuses one set of networks, and
    with them the compiled code, instead of paying the load and the compile per scan.
    """
    folder = resolve_model_path(spec)
    key = (str(folder), model_sha256(folder), str(torch.device(device)))
    if key not in _Process.models:
        _Process.models[key] = load_model(folder, device=device)
    return _Process.models[key]


def predict(model: Model, volume: np.ndarray, *, device: torch.device | str = "cpu",
            batch_size: int = 8, compile: CompileMode = "never",
            dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Softmax probabilities ``(C, X, Y, Z)`` for a conformed volume ``(X, Y, Z)``.

    Each view's network sees its slices in batches; its softmax, scaled by the card's view
    weight, is added in place into one class-first accumulator (no per-view copies; class-first
    because restoring samples it channel-first). Slices that are entirely zero (outside the
    head) are not run through the network: they are assigned to the class of label 0, which is
    what a trained network predicts there. ``dtype`` is the returned array's (the accumulator
    is float32). ``compile`` (CPU only): ``auto`` compiles when it pays, see
    :func:`_worth_compiling`; the library default is ``never`` because training changes
    weights in place, which a compiled network with frozen weights would not see.
    """
    _check_shape(model, volume)
    return _with_fallback(lambda place: _aggregate(
        model, volume, place, batch_size, view_labels=False, compile=compile, dtype=dtype,
    )[0], fallback_placements(torch.device(device)))


def predict_with_qc(model: Model, volume: np.ndarray, *, device: torch.device | str = "cpu",
                    batch_size: int = 8, mc_samples: int = 0, seed: int = 0,
                    compile: CompileMode = "never", dtype: torch.dtype = torch.float32,
                    flip: bool = False, refine_em: bool = False,
                    refine_ventricles: bool = False) -> Prediction:
    """:func:`predict` plus each view's argmax and, with ``mc_samples``, MC-dropout uncertainty.

    The segmentation always comes from the deterministic pass (dropout off), so asking for
    uncertainty never changes the label map. The MC passes (Gal and Ghahramani 2016, as in
    Bayesian QuickNAT, Roy et al. 2019) switch only the dropout layers on (always eager: a
    compiled network has dropout frozen off); batch norm keeps its running statistics. The
    generator is seeded, so a rerun gives the same numbers.

    Options (``docs/accuracy.md``, "Inference-side options"): ``flip`` averages each view's
    softmax with that of the left-right mirror image (see :func:`_aggregate`);
    ``refine_em`` then refits the brain classes to this scan's intensities
    (:func:`~bids_infantseg.core.refine.refine_em`) and ``refine_ventricles`` relabels fluid by
    connectivity (:func:`~bids_infantseg.core.refine.refine_ventricles`), in that order. View
    labels and MC uncertainty come from the network alone, without these options.
    """
    _check_shape(model, volume)
    placements = fallback_placements(torch.device(device))
    refined = refine_em or refine_ventricles
    probs, views = _with_fallback(lambda place: _aggregate(
        model, volume, place, batch_size, view_labels=True, compile=compile,
        dtype=torch.float32 if refined else dtype, flip=flip,
    ), placements)
    if refined:
        probs = _refine(model, volume, probs, em=refine_em, ventricles=refine_ventricles)
        probs = torch.from_numpy(probs).to(dtype).numpy()
    result = Prediction(probs, views)
    if mc_samples > 0:
        del probs
        result.entropy, result.sample_counts = _with_fallback(
            lambda place: _mc_dropout(model, volume, place, batch_size, mc_samples, seed),
            placements)
    return result


def _refine(model: Model, volume: np.ndarray, probs: np.ndarray, *, em: bool,
            ventricles: bool) -> np.ndarray:
    """The refinements asked for, timed and logged; ``probs`` (the network's float32
    accumulator, no one else's) is changed in place, so no class-first copy is made."""
    labels = model.card.labels
    if em:
        began = time.perf_counter()
        probs, fit = refine.refine_em(volume, probs, refine.brain_classes(labels), inplace=True)
        LOGGER.debug("EM refinement in %.1f s: class means %s, SDs %s", time.perf_counter()
                     - began, np.round(fit.mean, 3).tolist(), np.round(fit.sd, 3).tolist())
    if ventricles:
        began = time.perf_counter()
        probs, moved = refine.refine_ventricles(probs, refine.fluid_classes(labels),
                                                inplace=True)
        LOGGER.debug("ventricles by connectivity in %.1f s: voxels moved %s",
                     time.perf_counter() - began, moved)
    return probs


def _check_shape(model: Model, volume: np.ndarray) -> None:
    if volume.shape != tuple(model.card.grid_shape):
        raise ValueError(f"volume shape {volume.shape} is not the model grid "
                         f"{model.card.grid_shape}")


def _with_fallback(work: Callable[[Placement], T], placements: list[Placement]) -> T:
    """``work`` at the first placement that does not run out of memory (at batch size 1)."""
    for i, place in enumerate(placements):
        try:
            return work(place)
        except torch.OutOfMemoryError:
            if i + 1 == len(placements):
                raise
            following = placements[i + 1]
            LOGGER.warning("out of memory at batch size 1 (network on %s, probabilities on %s):"
                           " retrying with the network on %s, probabilities on %s", place.net,
                           place.accumulator, following.net, following.accumulator)
            if place.net.type == "cuda":
                torch.cuda.empty_cache()
    raise ValueError("no placement to run on")


def _image(volume: np.ndarray, place: Placement) -> torch.Tensor:
    """The volume where its slices are cut: pinned host memory copied without blocking when
    the network runs on a GPU (one transfer, not one per slice)."""
    image = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    if place.accumulator.type == "cuda":
        return image.pin_memory().to(place.accumulator, non_blocking=True)
    if place.net.type == "cuda":
        return image.pin_memory()
    return image


def _to_host(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """Converted on its device first, so a float16 result crosses the bus at half size."""
    return tensor.to(dtype).cpu().numpy()


@torch.inference_mode()
def _aggregate(model: Model, volume: np.ndarray, place: Placement, batch_size: int, *,
               view_labels: bool, compile: CompileMode, dtype: torch.dtype,
               flip: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """View-weighted softmax ``(C, X, Y, Z)``; with ``view_labels`` also each view's argmax.

    With ``flip`` (left-right flip averaging), each view's softmax is the mean of that of
    its slices and of their mirror images (axis 0 of the RAS grid, left-right, reversed),
    mirrored back, with lateralised classes swapped (:func:`refine.mirror_classes`). Only
    the views whose slices contain the left-right axis are run twice: a sagittal slice's
    mirror image is another sagittal slice of the same content, so its prediction would be
    the same. ``view_labels`` stay those of the unmirrored slices.

    Sides: a sagittal slice cannot tell left from right (``train.sides``), so with a
    lateralised label set and another view the sagittal view runs last and its mass of each
    left/right pair is split by the ratio the other views already gave the pair there.
    """
    card = model.card
    image = _image(volume, place)
    weights = {v: w / sum(card.views.values()) for v, w in card.views.items()}
    outside = np.flatnonzero(card.labels.indices == 0)
    probs = torch.zeros((len(card.labels), *image.shape), dtype=torch.float32,
                        device=place.accumulator)
    labels: dict[str, torch.Tensor] = {}
    todo = {view: _occupied(image, view, bool(outside.size)) for view in model.nets}
    mirrored = {view for view in model.nets if flip and VIEW_AXIS[view] != 0}
    perm = torch.from_numpy(refine.mirror_classes([lab.name for lab in card.labels.labels])
                            ) if mirrored else None
    policy = _CompilePolicy(compile, place, sum(i.numel() * (2 if v in mirrored else 1)
                                                for v, i in todo.items()))
    pairs = _side_pairs(card) if len(model.nets) > 1 else None
    for view, net in sorted(model.nets.items(), key=lambda item: item[0] == "sagittal"):
        slices = to_slices(image, view)  # (N, H, W); H is the left-right axis unless sagittal
        acc = to_slices(probs, view)  # (N, C, H, W), a view into probs
        index = todo[view]
        share = weights[view] / (2 if view in mirrored else 1)
        if view_labels:
            labels[view] = torch.zeros(image.shape, dtype=torch.uint8, device=place.accumulator)
        if outside.size:
            empty = torch.ones(slices.shape[0], dtype=torch.bool, device=image.device)
            empty[index] = False
            acc[empty, int(outside[0])] += weights[view]
            if view_labels:
                to_slices(labels[view], view)[empty] = int(outside[0])
        for batch_index, soft in _batches(net, slices, index, batch_size, place, policy):
            if view == "sagittal" and pairs is not None:
                soft = _split_sides(soft, acc[batch_index], pairs)
            acc[batch_index] += share * soft
            if view_labels:
                to_slices(labels[view], view)[batch_index] = soft.argmax(dim=1).to(torch.uint8)
        if view in mirrored:
            for batch_index, soft in _batches(net, slices.flip(1), index, batch_size, place,
                                              policy):
                acc[batch_index] += share * soft.flip(2)[:, perm.to(soft.device)]
    return _to_host(probs, dtype), {v: t.cpu().numpy() for v, t in labels.items()}


def _side_pairs(card) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Class numbers (left ones, their partners) of the card's lateralised labels, or
    ``None`` if it has none."""
    perm = refine.mirror_classes([lab.name for lab in card.labels.labels])
    first = np.flatnonzero(perm > np.arange(len(perm)))
    return (torch.from_numpy(first), torch.from_numpy(perm[first])) if first.size else None


def _split_sides(soft: torch.Tensor, before: torch.Tensor,
                 pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``soft`` (sagittal, ``(N, C, H, W)``) with each pair's summed probability split by the
    pair's ratio in ``before`` (the other views' sum at those pixels; evenly where they gave
    the pair nothing)."""
    left, right = (p.to(soft.device) for p in pairs)
    mass = soft[:, left] + soft[:, right]
    a, b = before[:, left].to(soft.dtype), before[:, right].to(soft.dtype)
    share = (a + 1e-6) / (a + b + 2e-6)
    out = soft.clone()
    out[:, left] = mass * share
    out[:, right] = mass * (1 - share)
    return out


def _occupied(image: torch.Tensor, view: str, skip_empty: bool) -> torch.Tensor:
    """Indices of the view's slices that hold signal (all of them without a label 0)."""
    slices = to_slices(image, view)
    if not skip_empty:
        return torch.arange(slices.shape[0], device=image.device)
    return torch.nonzero(slices.flatten(1).abs().amax(dim=1) > 0).flatten()


def _batches(net: nn.Module, slices: torch.Tensor, index: torch.Tensor, batch_size: int,
             place: Placement, policy: _CompilePolicy,
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(slice indices, float32 softmax on the accumulator's device)`` per batch.

    On out-of-memory the batch size is halved and the batch retried; at batch size 1 the
    error goes up to :func:`_with_fallback`.
    """
    start = 0
    while start < index.numel():
        batch_index = index[start:start + batch_size]
        run = policy.runner(net, place, batch_size, tuple(slices.shape[1:]))
        began = time.perf_counter()
        try:
            x = slices[batch_index].unsqueeze(1).to(place.net, non_blocking=True)
            soft = torch.softmax(run(x).float(), dim=1).to(place.accumulator)
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2
            LOGGER.warning("out of memory on %s: batch size halved to %d", place.net,
                           batch_size)
            if place.net.type == "cuda":
                torch.cuda.empty_cache()
            continue
        policy.ran(batch_index.numel(), time.perf_counter() - began)
        yield batch_index, soft
        start += batch_index.numel()


class _CompilePolicy:
    """Runs eager or compiled networks, choosing as ``mode`` says.

    ``auto`` (CPU only) times the eager network on the call's batches and compiles when
    the call's remaining slices alone repay :data:`COMPILE_COST_S`, or when the saving this
    process has already forgone by staying eager reaches that cost (ski rental: whatever the
    number of scans still to come, at most twice the cost of the best choice made in
    hindsight). Once compiled, a network stays compiled for the process.
    """

    def __init__(self, mode: CompileMode, place: Placement, slices: int) -> None:
        self.mode = mode if place.net.type == "cpu" else ("always" if mode == "always"
                                                          else "never")
        self.remaining = slices
        self.timed: list[float] = []  # eager seconds per slice of each batch so far
        self.compiling = self.mode == "always"
        self.eager: dict[nn.Module, Runner] = {}

    def runner(self, net: nn.Module, place: Placement, batch_size: int,
               shape: tuple[int, int]) -> Runner:
        # two batches at least: a process's first batch carries one-time set-up costs
        if self.mode == "auto" and not self.compiling and len(self.timed) >= 2:
            ahead = min(self.timed) * self.remaining
            self.compiling = _worth_compiling(ahead, _Process.eager_seconds)
            if self.compiling:
                LOGGER.info("compiling the network: %.0f s of eager work ahead, %.0f s "
                            "spent in this process", ahead, _Process.eager_seconds)
        if self.mode != "never":
            cached = _Process.compiled.get(net, {}).get((place.net, batch_size, shape))
            if cached is not None:
                return cached
            if self.compiling and not _Process.compile_broken:
                return _compiled(net, place, batch_size, shape)
        if net not in self.eager:
            self.eager[net] = _eager(net, place)
        return self.eager[net]

    def ran(self, slices: int, seconds: float) -> None:
        self.remaining -= slices
        if self.mode == "auto" and not self.compiling:
            self.timed.append(seconds / slices)
            _Process.eager_seconds += seconds


def _worth_compiling(eager_ahead_s: float, eager_spent_s: float) -> bool:
    """Compile when the work ahead repays it, or when staying eager has already cost as much
    as compiling would (the process is then likely to keep running scans)."""
    return max(eager_ahead_s, eager_spent_s) * COMPILE_SAVING >= COMPILE_COST_S


def _eager(net: nn.Module, place: Placement) -> Runner:
    """The network as it is, or on a GPU in channels-last under bf16 (or fp16) autocast."""
    net = _on(net, place.net)
    if place.net.type != "cuda":
        return net
    net.to(memory_format=torch.channels_last)
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=half):
            return net(x.contiguous(memory_format=torch.channels_last))
    return run


def _on(net: nn.Module, device: torch.device) -> nn.Module:
    """The network on ``device``; a copy when that is not where it lives (the CPU fallback of
    a GPU model), so the process's shared model stays on its GPU for the next scan."""
    if next(net.parameters()).device == device:
        return net
    return copy.deepcopy(net).to(device)


def _compiled(net: nn.Module, place: Placement, batch_size: int,
              shape: tuple[int, int]) -> Runner:
    """``torch.compile`` with frozen weights (batch norm folded into the convolutions) for one
    batch shape: short batches are zero-padded, so the process compiles once per shape. If
    compiling fails (no C++ compiler), the process stays eager."""
    eager = _eager(net, place)
    compiled = torch.compile(eager, dynamic=False, options={"freezing": True})

    def run(x: torch.Tensor) -> torch.Tensor:
        short = batch_size - x.shape[0]
        padded = torch.cat((x, x.new_zeros((short, *x.shape[1:])))) if short else x
        # one memory layout too: the compiled code is specialised on strides
        return compiled(padded.contiguous())[:x.shape[0]]

    began = time.perf_counter()
    try:
        with torch.no_grad():
            run(torch.zeros((batch_size, 1, *shape), device=place.net))
    except Exception as exc:  # inductor raises many kinds; any of them means "stay eager"
        LOGGER.warning("torch.compile failed, running eager: %s", str(exc).splitlines()[0])
        _Process.compile_broken = True
        return eager
    LOGGER.info("network compiled in %.1f s", time.perf_counter() - began)
    _Process.compiled.setdefault(net, {})[(place.net, batch_size, shape)] = run
    return run


def _mc_dropout(model: Model, volume: np.ndarray, place: Placement, batch_size: int,
                samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised predictive entropy ``(X, Y, Z)`` and per-sample class counts ``(S, C)``."""
    dropouts = [m for net in model.nets.values() for m in net.modules()
                if isinstance(m, nn.Dropout | nn.Dropout2d)]
    if not dropouts:
        LOGGER.warning("model %s has no dropout layers: MC samples are all alike",
                       model.card.name)
    classes = len(model.card.labels)
    mean = torch.zeros((classes, *volume.shape), dtype=torch.float32)
    counts = np.zeros((samples, classes), dtype=np.int64)
    torch.manual_seed(seed)
    for module in dropouts:
        module.train()
    try:
        for s in range(samples):
            probs = torch.from_numpy(_aggregate(model, volume, place, batch_size,
                                                view_labels=False, compile="never",
                                                dtype=torch.float32)[0])
            counts[s] = np.bincount(probs.argmax(dim=0).flatten().numpy(), minlength=classes)
            mean += probs / samples
    finally:
        for module in dropouts:
            module.eval()
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum(dim=0) / float(np.log(classes))
    return entropy.clamp(0, 1).numpy().astype(np.float32), counts
