"""The validation protocol (``docs/validation.md``): one score that selects models and checkpoints.

Why: the fetal-atlas Dice used until 0.5.0 ranked the bundled models the wrong way round
against real newborns. This scorer measures, per age band (0-3, 4-8, 9-12 months) and per
DrawEM9 tissue, synthetic heads drawn from the held-out aseg maps, the held-out real fetal
atlases at newborn size and the MIT templates' volumes against the nearest aseg map, and
combines them into one number, higher is better (:func:`selection_score`).

A :class:`Protocol` is a plain callable: ``protocol(model) -> (score, table)``, where
``model`` is a loaded :class:`~bids_infantseg.model.card.Model` or a ``(network, card)``
pair (a trainer's shared network). Its volumes are drawn or conformed once per card grid and
cached under ``cache``, so every checkpoint of a run is scored on the very same volumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from torch import nn

from bids_infantseg.core import refine
from bids_infantseg.core.conform import conform, intensity_center, model_grid
from bids_infantseg.core.inference import predict
from bids_infantseg.core.metrics import confusion_matrix, scores
from bids_infantseg.model.card import Model, ModelCard
from bids_infantseg.model.labelmap import LabelMapping
from bids_infantseg.model.labels import BUILTIN, DRAWEM9
from bids_infantseg.synth import ATLAS_TO_GEN, GEN_TO_DRAWEM9, FetalAtlas, LabelMap
from bids_infantseg.synth.sources import SourceMix
from bids_infantseg.train.data import SynthSource, draw_labelled
from bids_infantseg.utils.errors import InfantsegError

BANDS = (("0-3", 3.5), ("4-8", 8.5), ("9-12", np.inf))
"""Age bands: name and the age (months) below which an age belongs to it."""
BAND_AGES = (0.0, 6.0, 12.0)
"""The ages synthetic heads are drawn at, one per band."""
TISSUES = ("CSF", "cGM", "WM", "Ven", "Cbm", "dGM", "BS", "Hip")
"""DrawEM9 brain tissues scored for every model."""
ATLAS_DICE = ("CSF", "cGM", "WM", "Ven")
ATLAS_VOLUMES = ("cGM", "WM")
TEMPLATE_CHECKS = ("cGM", "WM", "Ven", "dGM", "Hip")
"""Template volumes checked against the nearest aseg map; the cerebellum is checked too."""
CEREBELLUM_CEILING_ML = 5.0
"""The MIT templates hold the cerebrum only: more 'cerebellum' than this is a mistake."""
ATLAS_ML = 400.0
"""The held-out atlases are scaled to a term newborn's brain and CSF volume."""
TEMPLATE_MONTHS = (0, 6, 9, 12)
WEIGHTS = {"syn_dice": 0.35, "syn_hip": 0.15, "template": 0.25, "atlas": 0.25}
"""Component weights within a band (renormalised over the components a band has)."""
TISSUE_INDICES = np.array([next(lab.index for lab in DRAWEM9.labels if lab.abbreviation == t)
                           for t in TISSUES], dtype=np.int64)
"""DrawEM9 index of each of :data:`TISSUES`."""
DEEP_NUCLEI = ("Tha", "Cau", "Put", "Pal", "Hip", "Amy", "Acc", "VDC")
"""aseg structures with the issue's Dice target (0.6): reported, not scored."""
SEED_STREAM = 2
"""First seed word of the protocol's synthetic heads (training uses 0, the card's
evaluation 1), so they never coincide with a training or card-evaluation volume."""
FLUID = ("CSF", "Ven")
MAX_ATTEMPTS = 50
"""Draws tried for a synthetic head with T2 contrast (each has a chance of 0.85 or so)."""
COLUMNS = ["source", "case", "band", "age", "label_set", "structure", "dice", "pred_ml",
           "ref_ml", "ratio"]


class ProtocolError(InfantsegError, ValueError):
    """Protocol data that cannot be used; the message names the file."""


def band_of(age_months: float) -> str:
    """The age band of an age in months."""
    return next(name for name, below in BANDS if age_months < below)


def agreement(ratio: float | np.ndarray) -> float | np.ndarray:
    """Volume agreement on a log scale: 1 at the right volume, 0.5 at 2x or 0.5x, 0 at 4x or
    0.25x (NaN stays NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(1.0 - np.abs(np.log2(ratio)) / 2.0, 0.0, 1.0)


def ceiling_agreement(volume_ml: float | np.ndarray,
                      ceiling_ml: float = CEREBELLUM_CEILING_ML) -> float | np.ndarray:
    """1 up to ``ceiling_ml``, then :func:`agreement` of the excess ratio (0.5 at twice it)."""
    return agreement(np.maximum(volume_ml, ceiling_ml) / ceiling_ml)


@dataclass(frozen=True)
class ProtocolData:
    """The protocol's inputs: the held-out aseg maps (as the configuration's anatomies, so
    they are drawn through its scheme), held-out atlas folders, the template files by month
    and every configured aseg map with its age (for the nearest-age volumes)."""

    heldout_asegs: tuple[LabelMap, ...]
    atlases: tuple[Path, ...]
    templates: dict[int, Path]
    reference_asegs: tuple[tuple[Path, float], ...]
    age_window: float

    @classmethod
    def from_config(cls, config: Path, templates: Path | None = None) -> ProtocolData:
        """From a training configuration (its ``held_out`` lists and aseg files); templates
        from ``templates`` or the ``infant-t2w-templates-mit`` folder beside the asegs."""
        held, trained = (SourceMix.load(config, held_out=h) for h in (True, False))

        def maps(mix: SourceMix) -> list[LabelMap]:
            return [a for s in mix.sources for a in s.anatomies if isinstance(a, LabelMap)]

        heldout = tuple(sorted(maps(held), key=lambda m: m.age_months))
        atlases = tuple(sorted(Path(a.folder) for s in held.sources for a in s.anatomies
                               if isinstance(a, FetalAtlas)))
        if not heldout:
            raise ProtocolError(f"{config}: no held-out aseg map (a label_map source's held_out)")
        folder = templates or Path(heldout[0].path).parent.parent / "infant-t2w-templates-mit"
        files = {m: Path(folder) / f"Template-Month{m}-T2w.nii.gz" for m in TEMPLATE_MONTHS}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise ProtocolError(f"MIT template(s) not found: {', '.join(missing)} "
                                "(give the templates folder)")
        every = sorted((Path(m.path), float(m.age_months)) for m in (*heldout, *maps(trained)))
        return cls(heldout, atlases, files, tuple(every), held.age_window)

    def synthetic_cases(self, heads: int) -> list[tuple[str, LabelMap, float, int]]:
        """(case name, map, drawn age, head) for each held-out map at each band age within
        the age window of the map's own age, ``heads`` heads each."""
        return [(f"{Path(m.path).name.split('_')[0]}@{age:g}m#{head}", m, age, head)
                for m in self.heldout_asegs for age in BAND_AGES
                if abs(age - m.age_months) <= self.age_window for head in range(heads)]

    def nearest_aseg(self, month: float) -> Path:
        """The configured aseg map nearest in age (ties: the older)."""
        return min(self.reference_asegs, key=lambda m: (abs(m[1] - month), -m[1]))[0]


def as_model(model: Model | tuple[nn.Module, ModelCard]) -> Model:
    """A loaded model as it is; a trainer's ``(network, card)`` as a model whose views all
    use that network."""
    if isinstance(model, Model):
        return model
    net, card = model
    return Model(card, {view: net for view in card.views}, Path("<training>"), "")


def _cache_key(card: ModelCard) -> str:
    settings = json.dumps([list(card.grid_shape), card.voxel_size_mm, card.intensity],
                          sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:12]


def _cached(path: Path, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays saved at ``path``, made and written atomically the first time."""
    if path.is_file():
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    os.replace(partial, path)
    return arrays


def _to_drawem9(labels: np.ndarray, label_set_name: str) -> np.ndarray:
    """Label indices of a model's set as DrawEM9 indices (shipped ``<set>-to-drawem9``)."""
    if label_set_name == DRAWEM9.name:
        return labels
    mapping = LabelMapping.load(f"{label_set_name}-to-{DRAWEM9.name}")
    return mapping.apply(labels, Path("prediction"))


def _aseg_reference(path: Path) -> np.ndarray:
    raw = np.asarray(nib.load(path).dataobj).astype(np.int64)
    return LabelMapping.load("aseg-to-drawem9").apply(raw, path)


def _voxel_ml(card: ModelCard) -> float:
    return card.voxel_size_mm ** 3 / 1000.0


def _rows(source: str, case: str, age: float, label_set: str, names: list[str],
          indices: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None,
          voxel_ml: float, reference_ml: dict[str, float] | None = None) -> list[dict]:
    """One row per structure: Dice against ``truth`` (voxels whose truth is outside
    ``indices``, e.g. partial labels, left out), volumes and their ratio."""
    pred_ml = _counts(predicted, indices) * voxel_ml
    if truth is not None:
        known = np.isin(truth, indices)
        # other predicted labels (outside, non-brain) join one extra class: they count
        # against the structures' Dice, not as a structure
        lookup = np.full(max(int(predicted.max()), int(indices.max())) + 1, len(indices))
        lookup[indices] = np.arange(len(indices))
        classes = np.arange(len(indices) + 1)
        dice = scores(confusion_matrix(lookup[predicted[known]], lookup[truth[known]],
                                       classes))["dice"][:-1]
        ref_ml = _counts(truth, indices) * voxel_ml
    else:
        dice = np.full(len(indices), np.nan)
        ref_ml = np.array([(reference_ml or {}).get(n, np.nan) for n in names])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ref_ml > 0, pred_ml / ref_ml, np.nan)
    return [dict(source=source, case=case, band=band_of(age), age=age, label_set=label_set,
                 structure=n, dice=float(d), pred_ml=float(p), ref_ml=float(r), ratio=float(q))
            for n, d, p, r, q in zip(names, dice, pred_ml, ref_ml, ratio, strict=True)]


def _counts(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Voxels of each of ``indices`` in ``labels``."""
    values, counts = np.unique(labels, return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return np.array([found.get(int(i), 0) for i in indices], dtype=float)


def _aseg_rows(source: str, case: str, age: float, predicted: np.ndarray, truth: np.ndarray,
               voxel_ml: float) -> list[dict]:
    """aseg structures with the side dropped: Dice the mean of the sides, volumes summed."""
    aseg = BUILTIN["aseg"]
    rows = pd.DataFrame(_rows(source, case, age, "aseg", [lab.abbreviation for lab in aseg.labels
                                                          ], aseg.indices.astype(np.int64),
                              predicted, truth, voxel_ml))
    rows = rows[rows.structure != aseg.labels[0].abbreviation]
    rows["structure"] = rows.structure.str.replace(r"^[LR]-", "", regex=True)
    merged = rows.groupby("structure", sort=False).agg(
        dice=("dice", "mean"), pred_ml=("pred_ml", "sum"), ref_ml=("ref_ml", "sum")).reset_index()
    merged["ratio"] = merged.pred_ml / merged.ref_ml.where(merged.ref_ml > 0)
    for key, value in dict(source=source, case=case, band=band_of(age), age=age,
                           label_set="aseg").items():
        merged[key] = value
    return merged[COLUMNS].to_dict("records")


@dataclass
class Protocol:
    """``protocol(model) -> (score, table)`` on the protocol's cases (``docs/validation.md``).

    ``heads``: synthetic heads per case (1 at a checkpoint; more for a report: the score is
    comparable only between runs with the same ``heads``). ``em``: EM intensity refinement,
    on as in the participant level's default. ``cache``: folder for the drawn and conformed
    volumes (one subfolder per card grid, voxel size and intensity normalisation).
    """

    data: ProtocolData
    cache: Path
    heads: int = 1
    em: bool = True
    batch_size: int = 8

    @classmethod
    def from_config(cls, config: Path, cache: Path, templates: Path | None = None,
                    **options) -> Protocol:
        return cls(ProtocolData.from_config(config, templates), Path(cache), **options)

    def __call__(self, model: Model | tuple[nn.Module, ModelCard]) -> tuple[float, pd.DataFrame]:
        table = self.table(model)
        return selection_score(table), table

    def table(self, model: Model | tuple[nn.Module, ModelCard]) -> pd.DataFrame:
        """One row per case, label set and structure (``COLUMNS``)."""
        model = as_model(model)
        nets = set(model.nets.values())
        modes = {net: net.training for net in nets}
        for net in nets:
            net.eval()
        try:
            rows = self._synthetic(model) + self._atlases(model) + self._templates(model)
        finally:
            for net, training in modes.items():
                net.train(training)
        return pd.DataFrame(rows, columns=COLUMNS)

    def _folder(self, card: ModelCard) -> Path:
        return self.cache / f"protocol-{_cache_key(card)}"

    def _labels(self, model: Model, volume: np.ndarray) -> np.ndarray:
        """The model's label indices on the model grid, as the participant level makes them
        (three views, then EM refinement when on)."""
        device = next(next(iter(model.nets.values())).parameters()).device
        probs = predict(model, volume, device=device, batch_size=self.batch_size)
        if self.em:
            probs, _ = refine.refine_em(volume, probs, refine.brain_classes(model.card.labels),
                                        inplace=True)
        return model.card.labels.indices.astype(np.int64)[probs.argmax(axis=0)]

    def _synthetic(self, model: Model) -> list[dict]:
        card, rows = model.card, []
        for case, anatomy, age, head in self.data.synthetic_cases(self.heads):
            saved = _cached(self._folder(card) / f"synthetic-t2-{case}.npz",
                            lambda anatomy=anatomy, age=age, head=head: _draw_t2_head(
                                card, anatomy, age, head))
            own_labels = self._labels(model, saved["image"])
            predicted = _to_drawem9(own_labels, card.labels.name)
            rows += _rows("synthetic", case, age, DRAWEM9.name, list(TISSUES), TISSUE_INDICES,
                          predicted,
                          saved["drawem9"].astype(np.int64), _voxel_ml(card))
            if card.labels.name == "aseg":
                rows += _aseg_rows("synthetic", case, age, own_labels,
                                   saved["aseg"].astype(np.int64), _voxel_ml(card))
        return rows

    def _atlases(self, model: Model) -> list[dict]:
        card, rows = model.card, []
        for folder in self.data.atlases:
            name = _atlas_name(folder)
            saved = _cached(self._folder(card) / f"atlas-{name}.npz",
                            lambda folder=folder: _conform_atlas(folder, card))
            predicted = _to_drawem9(self._labels(model, saved["image"]), card.labels.name)
            rows += _rows("atlas", name, 0.0, DRAWEM9.name, list(TISSUES), TISSUE_INDICES,
                          predicted,
                          saved["drawem9"].astype(np.int64), _voxel_ml(card))
        return rows

    def _templates(self, model: Model) -> list[dict]:
        card, rows = model.card, []
        for month, path in self.data.templates.items():
            saved = _cached(self._folder(card) / f"template-month{month:02d}.npz",
                            lambda path=path: {"image": _conform_image(path, card)})
            nearest = _reference_ml(self.data.nearest_aseg(month))
            reference = {k: nearest[k] for k in TEMPLATE_CHECKS}  # the asegs have no
            # extra-axial CSF, and the templates no cerebellum or brainstem
            predicted = _to_drawem9(self._labels(model, saved["image"]), card.labels.name)
            rows += _rows("template", f"month{month:02d}", float(month), DRAWEM9.name,
                          list(TISSUES), TISSUE_INDICES, predicted, None, _voxel_ml(card),
                          reference)
        return rows


def t2_contrast(image: np.ndarray, drawem9: np.ndarray) -> bool:
    """Whether fluid (CSF and ventricles) is brighter on average than every other brain
    tissue, as on any T2w at any age: the generator's uniformly random contrasts (a share of
    its draws, for robustness) are not what the protocol asks about."""
    fluid = np.isin(drawem9, TISSUE_INDICES[[TISSUES.index(t) for t in FLUID]])
    tissues = [image[drawem9 == i].mean() for t, i in zip(TISSUES, TISSUE_INDICES, strict=True)
               if t not in FLUID and (drawem9 == i).any()]
    return bool(fluid.any()) and float(image[fluid].mean()) > max(tissues, default=0.0)


def _draw_t2_head(card: ModelCard, anatomy: LabelMap, age: float,
                  head: int) -> dict[str, np.ndarray]:
    """A synthetic head of ``anatomy`` at ``age`` with T2 contrast (:func:`t2_contrast`):
    the first such draw of the seeds ``[2, map age, age, head, attempt]``."""
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([SEED_STREAM, int(round(anatomy.age_months * 10)),
                                     int(round(age * 10)), head, attempt])
        image, labels = draw_labelled(card, SynthSource(), rng, ("drawem9", "aseg"), age,
                                      anatomy)
        if t2_contrast(image, labels["drawem9"]):
            return {"image": image, "drawem9": labels["drawem9"].astype(np.int16),
                    "aseg": labels["aseg"].astype(np.int16)}
    raise ProtocolError(f"{anatomy.path}: no draw with T2 contrast at {age:g} months in "
                        f"{MAX_ATTEMPTS} attempts")


def _atlas_name(folder: Path) -> str:
    match = re.search(r"GA(\d+)_(not)?operated", folder.name)
    return f"GA{match.group(1)}{'notop' if match.group(2) else 'op'}" if match else folder.name


def _conform_image(path: Path, card: ModelCard, scale: float = 1.0) -> np.ndarray:
    """A real T2w on the card's grid as the participant level conforms it (voxels ``scale``
    times larger in the header)."""
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        raise ProtocolError(f"{path}: unreadable image ({exc})") from exc
    affine = image.affine.copy()
    affine[:3, :3] *= scale
    volume, _ = conform(data, affine, card.voxel_size_mm, card.grid_shape,
                        intensity=card.intensity, center_world=intensity_center(data, affine))
    return volume


def _conform_atlas(folder: Path, card: ModelCard) -> dict[str, np.ndarray]:
    """An atlas scaled to :data:`ATLAS_ML` on the card's grid, with its labels in DrawEM9
    (nearest neighbour on the same grid)."""
    path = folder / "parcellation.nii.gz"
    labels_image = nib.load(path)
    raw = np.asarray(labels_image.dataobj).astype(np.int64)
    if raw.min() < 0 or raw.max() >= len(ATLAS_TO_GEN):
        raise ProtocolError(f"{path}: labels outside the atlas labels 0-{len(ATLAS_TO_GEN) - 1}")
    zooms = np.asarray(labels_image.header.get_zooms()[:3], float)
    scale = (ATLAS_ML / ((raw > 0).sum() * zooms.prod() / 1000.0)) ** (1.0 / 3.0)
    image = _conform_image(folder / "srr.nii.gz", card, scale)
    data = np.asarray(nib.load(folder / "srr.nii.gz").dataobj, dtype=np.float32)
    affine = labels_image.affine.copy()
    affine[:3, :3] *= scale
    grid = model_grid(raw.shape, affine, card.voxel_size_mm, card.grid_shape,
                      intensity_center(data, affine))
    coordinates = np.indices(grid.shape, dtype=np.float32).reshape(3, -1)
    matrix = np.linalg.inv(affine) @ grid.affine
    source = matrix[:3, :3] @ coordinates + matrix[:3, 3:]
    drawem = GEN_TO_DRAWEM9[ATLAS_TO_GEN[raw]]
    labels = ndimage.map_coordinates(drawem, source, order=0, mode="constant", cval=0)
    return {"image": image, "drawem9": labels.reshape(grid.shape).astype(np.int16)}


def _reference_ml(path: Path) -> dict[str, float]:
    """DrawEM9 volumes (mL) of an aseg map (``aseg-to-drawem9``)."""
    try:
        labels = _aseg_reference(path)
        zooms = nib.load(path).header.get_zooms()[:3]
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        raise ProtocolError(f"{path}: unreadable aseg map ({exc})") from exc
    counts = np.bincount(labels.ravel(), minlength=int(DRAWEM9.indices.max()) + 1)
    voxel_ml = float(np.prod(zooms)) / 1000.0
    return {lab.abbreviation: float(counts[lab.index]) * voxel_ml for lab in DRAWEM9.labels}


def components(table: pd.DataFrame) -> pd.DataFrame:
    """Per band: each score component (NaN where the band has none) and the band's score."""
    drawem = table[table.label_set == DRAWEM9.name]
    out = []
    for band, _ in BANDS:
        rows = drawem[drawem.band == band]
        syn = rows[rows.source == "synthetic"]
        atlas = rows[rows.source == "atlas"]
        template = rows[rows.source == "template"]
        values = {
            "syn_dice": _mean_over_cases(syn[syn.structure.isin(TISSUES)], "dice"),
            "syn_hip": _mean_over_cases(_with_agreement(syn[syn.structure == "Hip"]),
                                        "agreement"),
            "template": _mean_over_cases(_template_agreement(template), "agreement"),
            "atlas": _atlas_component(atlas),
        }
        present = {k: v for k, v in values.items() if np.isfinite(v)}
        total = sum(WEIGHTS[k] for k in present)
        values["band_score"] = (sum(WEIGHTS[k] * v for k, v in present.items()) / total
                                if total else np.nan)
        out.append({"band": band, **values})
    return pd.DataFrame(out).set_index("band")


def selection_score(table: pd.DataFrame) -> float:
    """S: the mean of the band scores (bands without any case left out)."""
    bands = components(table)["band_score"]
    return float(bands.mean()) if bands.notna().any() else float("nan")


def _mean_over_cases(rows: pd.DataFrame, column: str) -> float:
    """Mean over cases of each case's NaN-free mean of ``column``."""
    if rows.empty:
        return float("nan")
    per_case = rows.groupby("case")[column].mean()
    return float(per_case.mean()) if per_case.notna().any() else float("nan")


def _with_agreement(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(agreement=agreement(rows.ratio.to_numpy(dtype=float)))


def _template_agreement(rows: pd.DataFrame) -> pd.DataFrame:
    """The six template checks: five volume ratios and the cerebellum ceiling."""
    checked = _with_agreement(rows[rows.structure.isin(TEMPLATE_CHECKS)])
    cerebellum = rows[rows.structure == "Cbm"]
    cerebellum = cerebellum.assign(agreement=ceiling_agreement(
        cerebellum.pred_ml.to_numpy(dtype=float)))
    return pd.concat([checked, cerebellum])


def _atlas_component(rows: pd.DataFrame) -> float:
    if rows.empty:
        return float("nan")
    per_case = []
    for _, case in rows.groupby("case"):
        dice = case[case.structure.isin(ATLAS_DICE)].dice.mean()
        volumes = agreement(case[case.structure.isin(ATLAS_VOLUMES)].ratio.to_numpy(float))
        per_case.append(0.5 * dice + 0.5 * float(np.nanmean(volumes)))
    return float(np.mean(per_case))


def template_checks(table: pd.DataFrame) -> pd.DataFrame:
    """Each template check: the volume, the reference, the ratio and whether it passes
    (0.5-2x; cerebellum under :data:`CEREBELLUM_CEILING_ML`)."""
    rows = table[(table.source == "template") & (table.label_set == DRAWEM9.name)]
    checked = rows[rows.structure.isin((*TEMPLATE_CHECKS, "Cbm"))].copy()
    volume = checked.structure.isin(TEMPLATE_CHECKS)
    checked["passes"] = np.where(volume, checked.ratio.between(0.5, 2.0),
                                 checked.pred_ml < CEREBELLUM_CEILING_ML)
    return checked[["case", "structure", "pred_ml", "ref_ml", "ratio", "passes"]]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per band, source and label set: mean Dice per structure (rows) and the mean volume
    ratio, the table ``benchmarks/protocol.py`` prints."""
    grouped = table.groupby(["label_set", "source", "band", "structure"], sort=False)
    return grouped.agg(dice=("dice", "mean"), ratio=("ratio", "mean"),
                       pred_ml=("pred_ml", "mean"), ref_ml=("ref_ml", "mean")).reset_index()
