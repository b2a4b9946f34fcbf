"""Inference-side refinements of the network's class probabilities on the model grid.

Pure functions on arrays (a conformed volume ``(X, Y, Z)`` and class-first probabilities
``(C, X, Y, Z)``; class ``k`` is position ``k`` of the model's label set), no files:

- :func:`mirror_classes`: the class permutation that a left-right mirror of the head implies,
  for left-right flip test-time averaging (run by :mod:`bids_infantseg.core.inference`, which owns
  the network). Labels are lateralised when a word of their name is left/right or lh/rh.
- :func:`refine_ventricles`: ventricles vs extra-axial CSF by connectivity on the argmax.
- :func:`refine_em`: a per-scan Gaussian intensity model of each brain class, fitted by EM
  with the network's probabilities as priors (as SAMSEG-style methods do with an atlas).

Each is an option of the participant level, off unless it improved the held-out atlases
(``docs/accuracy.md``, "Inference-side options").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_infantseg.model.labels import LabelSet
from bids_infantseg.utils.errors import InfantsegError

_SIDES = {"left": "right", "right": "left", "lh": "rh", "rh": "lh"}
_WORD = re.compile(r"[A-Za-z]+|[^A-Za-z]+")


DEFAULTS = {"tta_flip": False, "refine_em": True, "refine_ventricles": False}
"""Which options the participant level applies unless told otherwise, from the held-out
atlases (``docs/accuracy.md``, "Inference-side options")."""


class RefineError(InfantsegError, ValueError):
    """A refinement that the model's label set cannot support."""


def resolve_options(labels: LabelSet, **asked: bool | None) -> dict[str, bool]:
    """Each option of :data:`DEFAULTS` as it will run: ``True``/``False`` where asked, else
    the default where the label set supports it. An option asked for that the label set
    cannot support is refused (:class:`RefineError`); a default one is left out."""
    unknown = set(asked) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    checks = {
        "tta_flip": lambda: mirror_classes([lab.name for lab in labels.labels]),
        "refine_em": lambda: brain_classes(labels),
        "refine_ventricles": lambda: fluid_classes(labels),
    }
    chosen = {}
    for name, default in DEFAULTS.items():
        want = asked.get(name)
        on = default if want is None else want
        if on:
            try:
                checks[name]()
            except RefineError:
                if want:
                    raise
                on = False
        chosen[name] = bool(on)
    return chosen


def brain_classes(labels: LabelSet) -> list[int]:
    """Class numbers of the brain labels (all but the set's non-brain ones)."""
    brain = [k for k, lab in enumerate(labels.labels) if lab.index not in labels.non_brain]
    if len(brain) < 2:
        raise RefineError(f"label set {labels.name!r} has fewer than two brain labels: "
                          "nothing for the EM refinement to tell apart")
    return brain


def mirror_classes(names: Sequence[str]) -> np.ndarray:
    """Class permutation ``perm`` such that ``probs[perm]`` of a mirrored head are the right
    classes: lateralised labels (a word of the name is left, right, lh or rh, any case;
    ``Left-Hippocampus``, ``ctx-lh-insula``) swap with the label named with the other side;
    all others (all of DrawEM9's) stay. A lateralised label without its partner is refused,
    because mirroring would then label one side's structure as the other's."""
    lookup = {name.lower(): k for k, name in enumerate(names)}
    perm = np.arange(len(names))
    for k, name in enumerate(names):
        words = _WORD.findall(name)
        if not any(w.lower() in _SIDES for w in words):
            continue
        partner = "".join(_SIDES.get(w.lower(), w) for w in words).lower()
        if partner not in lookup:
            raise RefineError(f"label {name!r} is lateralised but no label is its mirror "
                              "image: left-right flip averaging cannot be used")
        perm[k] = lookup[partner]
    return perm


# --- ventricles vs CSF by connectivity --------------------------------------------------

_FACES = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class FluidClasses:
    """Class numbers that :func:`refine_ventricles` reasons about."""

    csf: int
    ventricles: int
    cortex: int
    deep: tuple[int, ...]
    """Tissues that enclose the ventricles (white matter, deep grey matter, hippocampus)."""
    outside: tuple[int, ...]
    """Classes outside the brain (outside the head, non-brain tissue)."""


def fluid_classes(labels: LabelSet) -> FluidClasses:
    """The label set's CSF, ventricle, cortex and deep classes, found by abbreviation
    (DrawEM9: CSF, Ven, cGM; deep: WM, Ven, dGM, Hip); refused when one of the first three
    is missing."""
    position = {lab.abbreviation: k for k, lab in enumerate(labels.labels)}
    missing = [a for a in ("CSF", "Ven", "cGM") if a not in position]
    if missing:
        raise RefineError(f"label set {labels.name!r} has no {', '.join(missing)} label: "
                          "ventricles cannot be told from CSF by connectivity")
    return FluidClasses(
        csf=position["CSF"], ventricles=position["Ven"], cortex=position["cGM"],
        deep=tuple(position[a] for a in ("WM", "Ven", "dGM", "Hip") if a in position),
        outside=tuple(k for k, lab in enumerate(labels.labels) if lab.index in labels.non_brain))


def _border_counts(components: np.ndarray, count: int, classes: np.ndarray,
                   n_classes: int) -> np.ndarray:
    """``(count + 1, n_classes + 1)``: for each component, its voxel faces shared with a voxel
    of each class outside the component; the last column counts faces on the array's edge."""
    counts = np.zeros((count + 1, n_classes + 1), np.int64)
    width = n_classes + 1
    for axis in range(3):
        for step in (1, -1):
            here = [slice(None)] * 3
            there = [slice(None)] * 3
            here[axis] = slice(0, -1) if step == 1 else slice(1, None)
            there[axis] = slice(1, None) if step == 1 else slice(0, -1)
            comp, other = components[tuple(here)], components[tuple(there)]
            face = (comp > 0) & (comp != other)
            pairs = comp[face].astype(np.int64) * width + classes[tuple(there)][face]
            counts += np.bincount(pairs, minlength=counts.size).reshape(counts.shape)
            edge = [slice(None)] * 3
            edge[axis] = -1 if step == 1 else 0
            rim = components[tuple(edge)]
            counts[:, n_classes] += np.bincount(rim[rim > 0], minlength=count + 1)
    return counts


def refine_ventricles(probs: np.ndarray, classes: FluidClasses, *, min_deep: float = 0.5,
                      inplace: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """Fluid relabelled by where it lies, on the argmax of ``probs`` (6-connected pieces).

    1. A ventricle piece that touches the outside of the brain (a face shared with an
       outside class or the grid's edge) and whose border is mostly (more than half of its
       faces) outside or CSF lies in the extra-axial space: it becomes CSF. Cortex does not
       count as surface here: the network often calls the ventricles' walls cortex (the
       germinal matrix of fetal brains, and on synthetic infant heads), and counting it once
       turned a whole ventricular system into CSF.
    2. A CSF piece that touches no outside voxel and no grid edge, that touches a ventricle
       piece, and whose border is at least ``min_deep`` deep tissue (white matter,
       ventricles, deep grey matter, hippocampus) is ventricle: the posterior horns and
       atria that the network calls CSF, continuous with the ventricles it found. Enclosed
       pockets in sulci (bordered by cortex), fluid bordered by cerebellum and brainstem, and
       fluid-bright spots in white matter away from the ventricles (newborn white matter is
       as bright as CSF) stay CSF.

    The two classes' probabilities are swapped in the relabelled voxels, so the argmax
    follows and each voxel's probabilities still sum to one. Returns the new probabilities
    (a copy, or ``probs`` itself changed with ``inplace``) and the voxels moved each way.
    """
    labels = probs.argmax(axis=0)
    n = probs.shape[0]
    out = probs if inplace else np.array(probs, copy=True)
    outside = np.zeros(n + 1, bool)
    outside[list(classes.outside)] = True
    outside[n] = True  # the grid's edge
    moved = {"ventricles_to_csf": 0, "csf_to_ventricles": 0}

    pieces, count = ndimage.label(labels == classes.ventricles, structure=_FACES)
    if count:
        border = _border_counts(pieces, count, labels, n)
        touching = border[:, outside].sum(axis=1)
        flip = (touching > 0) & (2 * (touching + border[:, classes.csf]) > border.sum(axis=1))
        flip[0] = False
        where = flip[pieces]
        _swap(out, where, classes.csf, classes.ventricles)
        labels[where] = classes.csf
        moved["ventricles_to_csf"] = int(where.sum())

    pieces, count = ndimage.label(labels == classes.csf, structure=_FACES)
    if count:
        border = _border_counts(pieces, count, labels, n)
        deep = border[:, list(classes.deep)].sum(axis=1)
        flip = ((border[:, outside].sum(axis=1) == 0) & (border[:, classes.ventricles] > 0)
                & (deep >= min_deep * border.sum(axis=1)))
        flip[0] = False
        where = flip[pieces]
        _swap(out, where, classes.csf, classes.ventricles)
        moved["csf_to_ventricles"] = int(where.sum())
    return out, moved


def _swap(probs: np.ndarray, where: np.ndarray, a: int, b: int) -> None:
    first = probs[a][where]
    probs[a][where] = probs[b][where]
    probs[b][where] = first


# --- per-scan intensity refinement (EM) ---------------------------------------------------

@dataclass(frozen=True)
class EMFit:
    """What :func:`refine_em` fitted: per class, whether it was refined, mean and SD."""

    refined: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    iterations: int


def refine_em(image: np.ndarray, probs: np.ndarray, brain: Sequence[int], *,
              prior_weight: float = 3.0, iterations: int = 5, min_voxels: float = 200.0,
              min_sd: float = 0.01, eps: float = 1e-4,
              inplace: bool = False) -> tuple[np.ndarray, EMFit]:
    """Brain-class probabilities refined by a Gaussian intensity model fitted to this scan.

    Each brain class ``k`` (``brain``: class numbers) gets one Gaussian of ``image``'s
    intensity, first fitted with the network's probabilities as voxel weights; then each EM
    iteration computes the posterior ``prior_k ** prior_weight * N(I; mean_k, sd_k)``,
    normalised over the refined classes, and refits the Gaussians to it. Only voxels of
    nonzero intensity whose brain probability (the brain classes' sum) exceeds ``eps`` are
    refined, and there the brain probability is kept: the refinement redistributes it among
    brain classes, never moves the brain's outline. Classes with less than ``min_voxels`` of
    probability mass in the scan keep their prior (no Gaussian is fitted to a handful of
    voxels). Returns the new probabilities (a float32 copy; ``probs`` itself, changed, with
    ``inplace`` when it is a contiguous float32 array) and the fit.

    ``prior_weight`` 3 (the likelihood tempered to its cube root) because one Gaussian per
    label is a poor model of real intensities (bias fields, partial volume, labels of mixed
    tissue such as the brainstem): at 1 (plain Bayes) the held-out atlases gained most but
    held-out synthetic full heads lost up to 0.04 Dice; 3 is the weight of 1, 2 and 3 with the
    largest atlas gain that costs no synthetic age group more than 0.005
    (``docs/accuracy.md``, "Inference-side options").
    """
    brain = np.asarray(brain, dtype=int)
    flat = probs.reshape(probs.shape[0], -1)
    own = inplace and probs.dtype == np.float32 and probs.flags.c_contiguous
    out = flat if own else np.array(flat, dtype=np.float32, copy=True)
    intensity = np.asarray(image, dtype=np.float32).reshape(-1)
    mass = flat[brain].sum(axis=0, dtype=np.float32)
    voxels = np.flatnonzero((mass > eps) & (intensity != 0))
    mean = np.full(len(brain), np.nan, np.float32)
    sd = np.full(len(brain), np.nan, np.float32)
    prior = flat[brain][:, voxels].astype(np.float32)
    refined = prior.sum(axis=1) >= min_voxels
    if voxels.size == 0 or refined.sum() < 2:
        return out.reshape(probs.shape), EMFit(refined, mean, sd, 0)
    x = intensity[voxels]
    strong = prior[refined]
    # the mass the refined classes share in each voxel (the others keep theirs)
    share = strong.sum(axis=0)
    log_prior = prior_weight * np.log(np.maximum(strong / np.maximum(share, 1e-12), 1e-6))
    post = strong
    for _ in range(iterations):
        weight = post.sum(axis=1)
        mu = (post @ x) / weight
        var = np.maximum((post @ (x * x)) / weight - mu * mu, min_sd * min_sd)
        log_post = (log_prior - 0.5 * np.log(var)[:, None]
                    - (x[None] - mu[:, None]) ** 2 / (2 * var[:, None]))
        log_post -= log_post.max(axis=0)
        post = np.exp(log_post)
        post *= share / post.sum(axis=0)
    if iterations == 0:
        return out.reshape(probs.shape), EMFit(refined, mean, sd, 0)
    mean[refined], sd[refined] = mu, np.sqrt(var)
    rows = brain[refined]
    out[np.ix_(rows, voxels)] = post
    return out.reshape(probs.shape), EMFit(refined, mean, sd, iterations)
