"""Training pairs: each T2w scan with its manual (or auxiliary) label map, and the label set.

Labels are ``_dseg`` images in a BIDS-Derivatives folder (or beside the scans, as Baby Open
Brains ships them), matched to the T2w scans found by :func:`bids_infantseg.io.discovery.discover`
through their source entities (sub, ses, acq, rec, run, ...; derived entities such as
``desc`` and ``space`` are dropped). A scan that names a ``space`` (resampled, e.g. BOBs'
``space-INFANTMNIacpc_T2w``) takes only labels in that space or naming none. A label file
may name fewer entities than the scan (the dHCP release labels ``sub-X_ses-Y_desc-drawem9_dseg``
while its raw T2w may carry ``run-``/``rec-``): the most specific label file whose entities
the scan has is used, and only a scan on the label map's own voxel grid is paired with it.

The label set comes from the lookup table the BIDS inheritance principle finds for the label
file: ``<label file stem>.tsv`` beside it, else ``desc-<D>_dseg.tsv`` (or ``dseg.tsv``) in its
folder or any folder above it up to the derivatives root. Without one, a built-in table with
the same ``desc`` (``drawem9``) is used. With a label mapping (``--labels-map``, see
``model/labelmap.py``) the tables are not read: the label set is the mapping's target.

Problems with one scan (no labels, another grid) are logged and that scan left out; problems
that make every scan unusable (no labels at all, no table, tables that disagree) are a
:class:`TrainDataError` before any work starts.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_infantseg.io.discovery import Scan, discover
from bids_infantseg.io.naming import parse_entities, source_entities, source_key
from bids_infantseg.model.labelmap import LabelMapError, LabelMapping, shipped_mappings
from bids_infantseg.model.labels import (
    BUILTIN,
    BrainColumnError,
    LabelSet,
    builtin_twin,
    read_dseg_tsv,
)
from bids_infantseg.utils.errors import InfantsegError

LOGGER = logging.getLogger("bids_infantseg.train")

GRID_TOLERANCE_MM = 1e-3
"""Affines that differ by less than this (any element) describe the same grid."""


class TrainDataError(InfantsegError, ValueError):
    """Training inputs that cannot be used at all; one line naming the file and the problem."""


@dataclass(frozen=True)
class Pair:
    """One training example: a T2w scan, the label map drawn on its grid, and the mapping
    its values go through (None: they are the label set's indices)."""

    scan: Scan
    labels: Path
    mapping: LabelMapping | None = None

    @property
    def key(self) -> str:
        return self.scan.source_stem

    @property
    def subject(self) -> str:
        return self.scan.subject


@dataclass(frozen=True)
class Skipped:
    """A scan or label file left out, and why (written to the model card and cv/)."""

    item: str
    reason: str


@dataclass
class TrainingData:
    pairs: list[Pair]
    label_set: LabelSet
    table: Path | None
    skipped: list[Skipped]


def _inside_any(path: Path, folders: Iterable[Path]) -> bool:
    resolved = path.resolve()
    return any(folder.resolve() in resolved.parents for folder in folders)


def label_files(labels_dir: Path, desc: str | None,
                skip: Iterable[Path] = ()) -> dict[str, Path]:
    """Every ``sub-*_dseg.nii[.gz]`` (with ``desc-<desc>`` when given) outside the ``skip``
    folders (this run's output and work folders, which may lie in a dataset given as
    ``--labels``), keyed by its source entities. Two files for one key are an error that
    names both (choose with ``desc``)."""
    found: dict[str, Path] = {}
    skip = list(skip)
    for path in sorted(Path(labels_dir).rglob("sub-*_dseg.nii*")):
        if not path.name.endswith((".nii", ".nii.gz")) or _inside_any(path, skip):
            continue
        try:
            entities = parse_entities(path.name)
        except ValueError as exc:
            LOGGER.warning("%s: not a BIDS file name (%s); ignored", path, exc)
            continue
        if desc is not None and entities.get("desc") != desc:
            continue
        key = source_key(path.name)
        if key in found:
            descs = sorted({parse_entities(p.name).get("desc") or "none"
                            for p in (found[key], path)})
            raise TrainDataError(
                f"{path}: a second label map for {key} ({found[key].name}); choose one with "
                f"--labels-desc (desc values here: {', '.join(descs)})")
        found[key] = path
    return found


def _table_candidates(label_path: Path, root: Path) -> Iterable[Path]:
    """Lookup tables for ``label_path`` in BIDS inheritance order (most specific first)."""
    stem = label_path.name.split(".", 1)[0]
    yield label_path.with_name(f"{stem}.tsv")
    desc = parse_entities(label_path.name).get("desc")
    folder = label_path.parent
    root = root.resolve()
    while True:
        if desc:
            yield folder / f"desc-{desc}_dseg.tsv"
        yield folder / "dseg.tsv"
        if folder.resolve() == root or folder.parent == folder:
            break
        folder = folder.parent


_INDEX_ALIASES = ("index", "label", "value", "id")
_NAME_ALIASES = ("name", "label_name", "roi", "structure")


def read_label_table(path: Path, name: str | None = None) -> LabelSet:
    """A BIDS ``dseg.tsv`` as a label set; a few common column spellings are accepted."""
    try:
        return read_dseg_tsv(path, name)
    except BrainColumnError as exc:
        raise TrainDataError(str(exc)) from exc
    except (ValueError, KeyError):
        pass
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise TrainDataError(f"{path}: empty lookup table")
    columns = {c.strip().lower(): c for c in rows[0]}
    index = next((columns[c] for c in _INDEX_ALIASES if c in columns), None)
    label = next((columns[c] for c in _NAME_ALIASES if c in columns and columns[c] != index),
                 None)
    if index is None or label is None:
        raise TrainDataError(f"{path}: a dseg.tsv needs 'index' and 'name' columns, "
                             f"found {list(rows[0])}")
    records = []
    for row in rows:
        try:
            records.append({"index": int(row[index]), "name": row[label].strip(),
                            "abbreviation": row.get("abbreviation"), "color": row.get("color")})
        except (TypeError, ValueError) as exc:
            raise TrainDataError(f"{path}: index {row[index]!r} is not an integer") from exc
    records.sort(key=lambda r: r["index"])
    if name is None:
        name = path.name.split("desc-")[-1].split("_")[0] if "desc-" in path.name else "labels"
    return LabelSet.from_records(name, records)


def _with_background(labels: LabelSet, table: Path | None) -> LabelSet:
    """Every label map has 0 outside the labelled region: add it when a table omits it."""
    if 0 in labels.indices.tolist():
        return labels
    LOGGER.info("%s has no index 0; adding 'Background' (0), the value outside the labels",
                table or labels.name)
    records = [{"index": 0, "name": "Background", "abbreviation": "BG0", "color": "#000000"},
               *labels.to_records()]
    return LabelSet.from_records(labels.name, records, labels.non_brain)


def _known_non_brain(labels: LabelSet) -> LabelSet:
    """A table equal to a built-in set (same indices and names) keeps its non-brain indices."""
    twin = builtin_twin(labels)
    return labels if twin is None else LabelSet(labels.name, labels.labels, twin.non_brain)


def label_set_for(label_path: Path, root: Path, desc: str | None) -> tuple[LabelSet, Path | None]:
    """The label set of one label file and the table it was read from (None: built in)."""
    for table in _table_candidates(label_path, root):
        if table.is_file():
            name = desc or parse_entities(label_path.name).get("desc") or None
            try:
                labels = read_label_table(table, name)
            except ValueError as exc:
                raise TrainDataError(f"{table}: unusable lookup table ({exc})") from exc
            return _known_non_brain(_with_background(labels, table)), table
    desc = desc or parse_entities(label_path.name).get("desc")
    if desc in BUILTIN:
        LOGGER.info("no dseg.tsv for %s: using the built-in %s table", label_path.name, desc)
        return BUILTIN[desc], None
    raise TrainDataError(
        f"{label_path}: no lookup table; expected {label_path.name.split('.')[0]}.tsv beside it "
        f"or desc-{desc or '<desc>'}_dseg.tsv in {root} (columns index, name), or map its "
        f"values with --labels-map (shipped: {', '.join(shipped_mappings())})")


def same_grid(a: nib.spatialimages.SpatialImage, b: nib.spatialimages.SpatialImage) -> bool:
    return (tuple(a.shape[:3]) == tuple(b.shape[:3])
            and np.allclose(a.affine, b.affine, atol=GRID_TOLERANCE_MM))


def _header(path: Path) -> nib.spatialimages.SpatialImage | None:
    try:
        return nib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one logged skip
        LOGGER.warning("%s: cannot be read (%s)", path, exc)
        return None


def _subset(small: Mapping[str, str], big: Mapping[str, str]) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def _same_space(label: Path, scan: Scan) -> bool:
    """A scan naming its space takes labels in that space or naming none; other scans ignore
    a label's space (derivatives name their source's grid ``space-T2w``, ``space-orig``)."""
    space = scan.entities.get("space")
    return space is None or parse_entities(label.name).get("space") in (None, space)


def match_pairs(scans: list[Scan], labels: dict[str, Path]) -> tuple[list[Pair], list[Skipped]]:
    """Pair each scan with the most specific label file whose entities it has, on its grid."""
    by_label: dict[Path, list[Scan]] = {}
    skipped: list[Skipped] = []
    entities = {path: source_entities(path.name) for path in labels.values()}
    for scan in scans:
        matches = [p for p in labels.values()
                   if _subset(entities[p], scan.entities) and _same_space(p, scan)]
        if not matches:
            skipped.append(Skipped(scan.rel_path, "no label map"))
            continue
        best = max(len(entities[p]) for p in matches)
        chosen = [p for p in matches if len(entities[p]) == best]
        if len(chosen) > 1:
            skipped.append(Skipped(scan.rel_path, "several label maps fit equally: "
                                   + ", ".join(p.name for p in chosen)))
            continue
        by_label.setdefault(chosen[0], []).append(scan)

    pairs: list[Pair] = []
    for label_path, candidates in by_label.items():
        label_img = _header(label_path)
        if label_img is None:
            skipped.append(Skipped(str(label_path), "label map cannot be read"))
            continue
        for scan in candidates:
            scan_img = _header(scan.path)
            if scan_img is None:
                skipped.append(Skipped(scan.rel_path, "image cannot be read"))
            elif same_grid(scan_img, label_img):
                pairs.append(Pair(scan, label_path))
            else:
                skipped.append(Skipped(
                    scan.rel_path,
                    f"not on the grid of {label_path.name} (shape {tuple(scan_img.shape[:3])} "
                    f"vs {tuple(label_img.shape[:3])}, or another affine)"))
    pairs.sort(key=lambda p: p.key)
    return pairs, skipped


def shared_label_set(pairs: list[Pair], labels_dir: Path,
                     desc: str | None) -> tuple[LabelSet, Path | None]:
    """The one label set of every pair's lookup table, and that table (None: built in)."""
    sets: dict[tuple, tuple[LabelSet, Path | None]] = {}
    for pair in pairs:
        labels, table = label_set_for(pair.labels, labels_dir, desc)
        sets.setdefault(tuple((lab.index, lab.name) for lab in labels.labels), (labels, table))
    if len(sets) > 1:
        tables = ", ".join(str(t) for _, t in sets.values())
        raise TrainDataError(f"the label maps use {len(sets)} different lookup tables "
                             f"({tables}); train on one label set (--labels-desc)")
    return next(iter(sets.values()))


def load_mapping(labels_map: str | Path | None) -> LabelMapping | None:
    """The ``--labels-map`` mapping (None without one); its problems are TrainDataError."""
    try:
        return LabelMapping.load(labels_map) if labels_map else None
    except LabelMapError as exc:
        raise TrainDataError(str(exc)) from exc


def find_training_data(bids_dir: Path, labels_dir: Path, *, desc: str | None = None,
                       labels_map: str | Path | None = None,
                       output_dir: Path | None = None, work_dir: Path | None = None,
                       participant_labels: Iterable[str] | None = None,
                       session_labels: Iterable[str] | None = None,
                       bids_filters: Mapping[str, Any] | None = None) -> TrainingData:
    """Scans, their label maps and the one label set they share (a ``labels_map``'s target,
    or the lookup tables'); logs every skip."""
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise TrainDataError(f"--labels {labels_dir}: no such folder")
    mapping = load_mapping(labels_map)
    files = label_files(labels_dir, desc, [d for d in (output_dir, work_dir) if d])
    if not files:
        raise TrainDataError(f"{labels_dir}: no sub-*_dseg.nii[.gz] files"
                             + (f" with desc-{desc}" if desc else ""))
    scans = discover(bids_dir, output_dir=output_dir, work_dir=work_dir,
                     participant_labels=participant_labels, session_labels=session_labels,
                     bids_filters=bids_filters, with_space=True)
    pairs, skipped = match_pairs(scans, files)
    used = {p.labels for p in pairs}
    subjects = {s.subject for s in scans}
    for path in files.values():
        if (path not in used and source_entities(path.name).get("subject") in subjects
                and not any(s.item == str(path) for s in skipped)):
            skipped.append(Skipped(str(path), "no T2w scan on its grid"))
    for item in skipped:
        level = logging.INFO if item.reason == "no label map" else logging.WARNING
        LOGGER.log(level, "left out %s: %s", item.item, item.reason)
    if not pairs:
        raise TrainDataError(f"no T2w scan in {bids_dir} has a label map in {labels_dir} on its "
                             f"grid ({len(scans)} scan(s), {len(files)} label file(s); see the "
                             "log for why each was left out)")

    if mapping is None:
        label_set, table = shared_label_set(pairs, labels_dir, desc)
    else:
        pairs = [replace(pair, mapping=mapping) for pair in pairs]
        label_set, table = mapping.target, mapping.path
    if len(label_set) < 2:
        raise TrainDataError(f"{table}: a label set needs at least two labels")
    LOGGER.info("%d training scan(s) of %d subject(s); labels %s (%d classes) from %s",
                len(pairs), len({p.subject for p in pairs}), label_set.name, len(label_set),
                table or "the built-in table")
    return TrainingData(pairs, label_set, table, skipped)
